"""Log-probabilities of the trained tokens, with the output head applied a chunk of tokens at a time.

Every stage that trains on tokens takes its loss from here: sft and pt sum the negated log-probs (cross
entropy), dpo / kto sum them per reply, online stages (ppo, grpo) take them per token. The tokens x vocab
logits never exist whole: each chunk's logits are computed, reduced to one log-prob per token and dropped, and
recomputed chunk by chunk in the backward pass (activation checkpointing of the head alone). With a 49k vocab
and 2k target tokens that is 400 MB of float32 logits per copy (logits, softmax, their gradient) cut to a
chunk's 16 MB, for one more forward matmul of the head at backward time. The chunk's backward is where a
training step's memory peaks (every layer's activations are still held there, plus ~3 chunk-sized copies), so
the chunk is kept small: 64 MB chunks put ~150 MB more on the quickstart's peak (bench/quickstart_memory.py).
A plain float32 head (CPU training's) goes through train/fused_head.py instead: the same chunks, computed into
one reused buffer with a hand-written backward.

`LogpsModel` is the one module that computes them inside a forward call. A stage's model is wrapped in it
before DDP / DeepSpeed / FSDP wrap the model, so their forward hooks (gradient sync, ZeRO-3 gathering of the
head's shards, in the backward recomputation too) see the head's every use. `token_logps(model, batch)` (trained
tokens) and `tail_logps` (grpo's sampled completions) are the functions stages call, with that wrapped model or
with any causal LM (a frozen reference, a test's model). PPO's policy-with-critic calls `chunked_logps` in its
own forward, beside its value head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

from tunesmith.data.collator import TARGET_INDEX, TOKEN_INDEX
from tunesmith.train.forward import MEDIA_KEYS, decoder_hidden
from tunesmith.train.fused_head import fused_head_logps, fuses

LOGIT_ELEMENTS = 1 << 22  # logits alive at once: 4M float32 values (16 MB), e.g. 85 tokens of a 49k vocab
# The fused head (train/fused_head.py) keeps one buffer where the module path keeps three tensors a chunk: three
# times the tokens in the same bytes (fewer, larger products: each one repacks the whole weight).
FUSED_LOGIT_ELEMENTS = 3 * LOGIT_ELEMENTS


def chunked_logps(head, hidden: torch.Tensor, targets: torch.Tensor, softcap: float | None = None,
                  chunk_tokens: int | None = None, temperature: float = 1.0, with_entropy: bool = False,
                  summed: bool = False):
    """[n] log softmax(head(hidden_i) / temperature)[targets_i] in float32, for hidden [n, h], with logits capped
    to softcap * tanh(logits / softcap) when softcap is set (Gemma 2); equal to the unchunked formula. With
    `with_entropy`, (log-probs, [n] entropies of the same distributions, without gradient). `summed`: the caller
    sums the log-probs with one factor for all (cross entropy), which lets the fused head skip a product."""
    # The module's own size: under ZeRO-3 its weight is a partitioned, empty placeholder outside its forward.
    vocab = getattr(head, "out_features", None) or head.num_embeddings
    if not softcap and not with_entropy and fuses(head, hidden):
        fused_tokens = chunk_tokens or max(1, FUSED_LOGIT_ELEMENTS // vocab)
        return fused_head_logps(hidden, head.weight, targets, temperature, fused_tokens, summed)
    chunk_tokens = chunk_tokens or max(1, LOGIT_ELEMENTS // vocab)
    recompute = torch.is_grad_enabled() and (hidden.requires_grad or _trains(head))
    pieces = []
    for chunk in range(_chunk_count(head, hidden, chunk_tokens)):
        start = chunk * chunk_tokens  # past this rank's own tokens (see _chunk_count) a chunk is empty
        piece = (hidden[start:start + chunk_tokens], targets[start:start + chunk_tokens])
        if recompute:
            pieces.append(torch.utils.checkpoint.checkpoint(_logps, head, softcap, temperature, with_entropy, *piece,
                                                            use_reentrant=False))
        else:
            pieces.append(_logps(head, softcap, temperature, with_entropy, *piece))
    if not pieces:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return (empty, empty) if with_entropy else empty
    if with_entropy:
        return torch.cat([logps for logps, _ in pieces]), torch.cat([entropy for _, entropy in pieces])
    return torch.cat(pieces)


def _chunk_count(head, hidden: torch.Tensor, chunk_tokens: int) -> int:
    """How many chunks to run: enough for this rank's tokens, and under ZeRO-3 the most any rank needs.

    ZeRO-3 gathers the head's partitioned weight in every call of the head (and again in each chunk's recomputed
    backward), a collective that all ranks must make equally often: ranks with different token counts would
    otherwise wait on each other forever. The ranks with fewer chunks run empty ones.
    """
    import torch.distributed as dist

    count = -(-hidden.shape[0] // chunk_tokens)
    if dist.is_available() and dist.is_initialized() and any(hasattr(p, "ds_id") for p in head.parameters()):
        most = torch.tensor([count], device=hidden.device)
        dist.all_reduce(most, op=dist.ReduceOp.MAX)
        count = int(most)
    return count


def _logps(head, softcap: float | None, temperature: float, with_entropy: bool, hidden: torch.Tensor,
           targets: torch.Tensor):
    logits = head(hidden).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    if temperature != 1.0:
        logits = logits / temperature
    logps = -F.cross_entropy(logits, targets, reduction="none")
    if not with_entropy:
        return logps
    with torch.no_grad():  # a logged statistic: computed on this chunk's logits while they exist
        log_probs = logits.log_softmax(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
    return logps, entropy


def softcap_of(model) -> float | None:
    """The model's final logit softcapping (Gemma 2), None for models without it."""
    return getattr(model.config, "final_logit_softcapping", None)


def _trains(module) -> bool:
    return any(param.requires_grad for param in module.parameters())


class LogpsModel(torch.nn.Module):
    """A causal LM whose forward returns the log-probs of a batch's target tokens (see `token_logps`)."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def __getattr__(self, name: str):
        """Everything else (config, adapters, activation checkpointing...) is the backbone's."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.backbone, name)

    def forward(self, input_ids, target_index=None, target_ids=None, attention_mask=None, position_ids=None,
                token_index=None, temperature: float = 1.0, with_entropy: bool = False, summed: bool = False,
                **kwargs):
        if target_index is None:  # called as the causal LM it wraps (generation, comparing logits after training)
            return self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                 **kwargs)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
                 TOKEN_INDEX: token_index, **kwargs}
        hidden = decoder_hidden(self.backbone, {key: value for key, value in batch.items() if value is not None})
        # Position t predicts token t + 1; target_index holds the flat positions (row * width + t) that do.
        hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, target_index)
        return chunked_logps(self.backbone.get_output_embeddings(), hidden, target_ids, softcap_of(self.backbone),
                             temperature=temperature, with_entropy=with_entropy, summed=summed)

    def save_pretrained(self, folder, state_dict: dict | None = None, **kwargs) -> None:
        """The backbone's own files; state_dict (keyed as this wrapper's, as ZeRO-3 gathers it) written instead."""
        if state_dict is not None:
            state_dict = {key.removeprefix("backbone."): value for key, value in state_dict.items()}
        self.backbone.save_pretrained(folder, state_dict=state_dict, **kwargs)


def token_logps(model, batch: dict[str, torch.Tensor], summed: bool = False) -> torch.Tensor:
    """[targets] the log-prob of every trained token of the batch (labels != -100 after the first position), in
    the order of the collator's flat target index (row by row). `model` is a LogpsModel (as a stage prepares it,
    possibly inside a distributed wrapper) or any causal LM, wrapped here for the call. `summed`: the caller
    takes their plain sum (cross entropy; see chunked_logps)."""
    index = batch[TARGET_INDEX]
    target_ids = batch["labels"].reshape(-1).index_select(0, index + 1)
    return _logps_call(model, batch, index, target_ids, summed=summed)


def tail_logps(model, batch: dict[str, torch.Tensor], tokens: torch.Tensor, temperature: float = 1.0,
               with_entropy: bool = False):
    """[rows, width] log-probs at `temperature` of `tokens`, the batch's last `width` columns (sampled replies,
    completions; padding included, for the caller's mask), and with `with_entropy` their entropies too."""
    rows, length = batch["input_ids"].shape
    positions = torch.arange(length - tokens.shape[1] - 1, length - 1, device=tokens.device)
    index = (torch.arange(rows, device=tokens.device).unsqueeze(1) * length + positions).reshape(-1)
    out = _logps_call(model, batch, index, tokens.reshape(-1), temperature=temperature, with_entropy=with_entropy)
    return tuple(part.view(tokens.shape) for part in out) if with_entropy else out.view(tokens.shape)


def _logps_call(model, batch: dict[str, torch.Tensor], index: torch.Tensor, target_ids: torch.Tensor, **options):
    inner = getattr(model, "module", model)  # DDP, FSDP and DeepSpeed keep the wrapped module there
    if not isinstance(inner, LogpsModel):
        model = LogpsModel(model)
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids", TOKEN_INDEX, *MEDIA_KEYS)
              if key in batch}
    return model(target_index=index, target_ids=target_ids, **inputs, **options)
