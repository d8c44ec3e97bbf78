"""Vision-language models (Qwen2-VL, Qwen2.5-VL, LLaVA): their loading class and which of their parts train.

Such a model has a vision tower, a projector that maps the tower's features into the language model, and the
language model. method.vision says whether the tower and the projector train (both frozen by default, as
LLaMA-Factory does); LoRA's 'all-linear' means the language model's linear layers (and the tower's when the
tower trains), never the tower's by accident.
"""

from __future__ import annotations

import re
from pathlib import Path

# model_type -> (the tower's module name, the projector's module name): Qwen's projector is inside its tower,
# LLaVA's beside it.
VISION_PARTS = {"qwen2_vl": ("visual", "merger"), "qwen2_5_vl": ("visual", "merger"),
                "llava": ("vision_tower", "multi_modal_projector")}


# A vision-language model's image side: its image processor's settings (and a combined processor's, if any).
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def save_processor_files(base_location, folder) -> None:
    """Copy the base model's processor files beside trained or exported weights, so the model reads images as
    it was trained to wherever it is loaded from."""
    import shutil

    for name in PROCESSOR_FILES:
        if (Path(base_location) / name).is_file():
            shutil.copy2(Path(base_location) / name, Path(folder) / name)


def vision_model_type(location) -> str | None:
    """The model_type of a vision-language model folder, None for a text-only model (or a hub id)."""
    from tunesmith.data.vision_processor import model_type_of

    model_type = model_type_of(location)
    return model_type if model_type in VISION_PARTS else None


def auto_class(location):
    """The transformers auto class that loads the model in `location` with its head."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    return AutoModelForImageTextToText if vision_model_type(location) else AutoModelForCausalLM


def is_vision_model(model) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) in VISION_PARTS


def lora_targets(model, train_tower: bool) -> str:
    """peft target_modules (a regex) for 'all-linear' on a vision-language model: the language model's linear
    layers, and the tower's too when it trains; never the output head or the projector (trained whole)."""
    import torch

    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and "lm_head" not in name:
            part = vision_part(model, name)
            if part is None or (part == "tower" and train_tower):
                names.add(name)
    return "|".join(re.escape(name) for name in sorted(names))


def set_vision_trainable(model, train_tower: bool, train_projector: bool) -> None:
    """For a method without adapters (full, freeze): the tower and the projector train only when asked."""
    for name, param in model.named_parameters():
        part = vision_part(model, name)
        if part is not None:
            param.requires_grad_(train_projector if part == "projector" else train_tower)


def vision_part(model, name: str) -> str | None:
    """'projector', 'tower' or None (the language model, the head) for a module or parameter name."""
    tower, projector = VISION_PARTS[model.config.model_type]
    dotted = f".{name}."
    if f".{projector}." in dotted:
        return "projector"
    return "tower" if f".{tower}." in dotted else None


def projector_name(model) -> str:
    """The projector's module name (LoRA trains it whole, as a module to save, when it trains)."""
    return VISION_PARTS[model.config.model_type][1]


def multimodal_body(model):
    """The part of a vision-language model that turns ids and pixels into the last hidden states (tower,
    projector and language model, without the output head), past a peft wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model


def packed_position_ids(body, batch):
    """M-RoPE position ids of a packed batch, as transformers takes them for packing: [4, rows, length], the
    text positions (restarting per sample, from which the block-diagonal mask is built) over the three rotary
    axes. Each sample's axes come from the model's own `get_rope_index`, run on that sample alone. A model
    without M-RoPE (LLaVA: no token types) takes the text positions as they are."""
    import torch

    if "mm_token_type_ids" not in batch:
        return batch["position_ids"]
    from tunesmith.data.vision_processor import IMAGE_TOKEN_TYPE, VIDEO_TOKEN_TYPE

    text_positions, types = batch["position_ids"], batch["mm_token_type_ids"]
    axes = text_positions[None].repeat(3, 1, 1)
    # images and videos are numbered across the batch in row order: (grid key, token type, [per-video key])
    kinds = (("image_grid_thw", IMAGE_TOKEN_TYPE, None), ("video_grid_thw", VIDEO_TOKEN_TYPE, "second_per_grid_ts"))
    used = {IMAGE_TOKEN_TYPE: 0, VIDEO_TOKEN_TYPE: 0}
    for row in range(text_positions.shape[0]):
        starts = (text_positions[row] == 0).nonzero().flatten().tolist() + [text_positions.shape[1]]
        for start, stop in zip(starts, starts[1:]):
            sample_types = types[row, start:stop]
            runs = torch.cat([sample_types[:1], sample_types[1:][sample_types[1:] != sample_types[:-1]]])
            if not runs.any():
                continue
            extra = {}
            for grid_key, kind, timing_key in kinds:
                opened = int((runs == kind).sum())
                if opened:
                    extra[grid_key] = batch[grid_key][used[kind]:used[kind] + opened]
                    if timing_key in batch:
                        extra[timing_key] = batch[timing_key][used[kind]:used[kind] + opened]
                    used[kind] += opened
            positions, _ = body.get_rope_index(batch["input_ids"][row:row + 1, start:stop], sample_types[None],
                                               **extra)
            axes[:, row, start:stop] = positions[:, 0]
    return torch.cat([text_positions[None], axes])


def image_prompt_inputs(model, input_ids, mask, pixels: dict):
    """(the image inputs, M-RoPE position ids [3, rows, length], each row's position offset for the tokens
    generated after the prompt) of a left-padded image prompt, from the model's own `get_rope_index`. A model
    without M-RoPE (LLaVA) takes the pixels and the plain positions of a left-padded prompt, with no offset."""
    from tunesmith.data.vision_processor import IMAGE_TOKEN_TYPE

    body = multimodal_body(model)
    device = input_ids.device
    if not hasattr(body, "get_rope_index"):
        pixel_values = pixels["pixel_values"].to(device, model.dtype)
        return {"pixel_values": pixel_values}, (mask.cumsum(-1) - 1).clamp(min=0), None
    types = (input_ids == model.config.image_token_id).long() * IMAGE_TOKEN_TYPE
    grid = pixels["image_grid_thw"].to(device)
    positions, deltas = body.get_rope_index(input_ids, types, image_grid_thw=grid, attention_mask=mask)
    inputs = {"pixel_values": pixels["pixel_values"].to(device, model.dtype), "image_grid_thw": grid,
              "mm_token_type_ids": types}
    return inputs, positions, deltas.to(device)
