"""A causal LM with a scalar value head: the reward model (rm) and the critic of PPO.

The head is a linear layer on the last hidden state; it is saved as value_head.safetensors beside the
weights or adapter that `save_pretrained` writes, so a reward-model run folder loads back as a scorer and a
checkpoint of an rm run resumes with its head.
"""

from __future__ import annotations

from pathlib import Path

import torch

VALUE_HEAD_FILE = "value_head.safetensors"


def new_head(hidden_size: int, zero: bool = False, bias: bool = True) -> torch.nn.Linear:
    """A fresh value head: small random weights (reward model), or zeros (a critic that starts by predicting 0,
    so PPO's first advantages are the rewards themselves rather than noise from an untrained critic)."""
    head = torch.nn.Linear(hidden_size, 1, bias=bias)
    torch.nn.init.normal_(head.weight, std=0.0 if zero else 1 / (hidden_size + 1) ** 0.5)
    if bias:
        torch.nn.init.zeros_(head.bias)
    return head


class ValueHeadModel(torch.nn.Module):
    def __init__(self, backbone, head: torch.nn.Linear | None = None):
        super().__init__()
        self.backbone = backbone
        head = head if head is not None else new_head(backbone.config.hidden_size)
        dtype = next(backbone.parameters()).dtype
        self.head = head.to(dtype=torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype)

    def __getattr__(self, name: str):
        """Everything else (config, input embeddings, activation checkpointing...) is the backbone's."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.backbone, name)

    def hidden_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids") if key in batch}
        return self.backbone.get_decoder()(**inputs, use_cache=False).last_hidden_state

    def values(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., hidden] -> [...] scalar values, computed in the head's dtype (float32 beside half weights)."""
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1)

    def forward(self, **batch) -> torch.Tensor:
        """[batch, length] values at every position."""
        return self.values(self.hidden_states(batch))

    def save_pretrained(self, folder, state_dict: dict | None = None, **kwargs) -> None:
        """The backbone's own files (named as in the backbone) and the head beside them. state_dict: weights
        keyed as in this wrapper's state_dict ("backbone." / "head."), written in place of the ones it holds."""
        from safetensors.torch import save_file

        backbone_state, head_state = None, self.head.state_dict()
        if state_dict is not None:
            backbone_state, head_state = _unprefixed(state_dict, "backbone."), _unprefixed(state_dict, "head.")
        self.backbone.save_pretrained(folder, state_dict=backbone_state, **kwargs)
        save_file({key: value.detach().contiguous().cpu() for key, value in head_state.items()},
                  str(Path(folder) / VALUE_HEAD_FILE))

    def load_head(self, folder) -> None:
        """The head saved in `folder`, copied into this head in place, so an optimizer built on it stays valid
        (resuming); its dtype stays this head's."""
        self.head.load_state_dict(read_head_state(folder))


def _unprefixed(state: dict, prefix: str) -> dict:
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def read_head_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from tunesmith.errors import TunesmithError

    path = Path(folder) / VALUE_HEAD_FILE
    if not path.is_file():
        raise TunesmithError(f"{folder} holds no {VALUE_HEAD_FILE}; point it at the folder of a finished rm run")
    return load_file(str(path))


def load_value_head(folder: Path, hidden_size: int) -> torch.nn.Linear:
    state = read_head_state(folder)
    head = torch.nn.Linear(hidden_size, 1, bias="bias" in state)
    head.load_state_dict(state)
    return head


def load_scorer(folder: Path, base, device: str = "cpu") -> ValueHeadModel:
    """The reward model saved in `folder` (adapter on top of `base`, a ModelConfig, or whole weights), frozen."""
    from tunesmith.model.load import load_model
    from tunesmith.run_folder import is_adapter

    folder = Path(folder)
    if is_adapter(folder):
        from peft import PeftModel

        from tunesmith.model.peft_warnings import quiet_peft

        with quiet_peft():
            backbone = PeftModel.from_pretrained(load_model(base, device), str(folder)).merge_and_unload()
    else:
        backbone = load_model(base.model_copy(update={"path": str(folder), "gguf_file": None}), device)
    # a vision-language model's hidden size is its language model's (its config nests it as text_config)
    scorer = ValueHeadModel(backbone, load_value_head(folder, backbone.config.get_text_config().hidden_size))
    scorer.requires_grad_(False)
    return scorer.eval()
