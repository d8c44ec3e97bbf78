"""DeepSpeed configs generated from our settings (or the user's own JSON)."""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.config.schema import DeepSpeedConfig, TrainConfig
from tunesmith.errors import TunesmithError


def deepspeed_config(settings: DeepSpeedConfig, train: TrainConfig, precision: str) -> dict:
    """A DeepSpeed config whose batch sizes and clipping agree with the train group.

    precision is accelerate's mixed-precision name (no | bf16 | fp16).
    """
    if settings.config_file:
        path = Path(settings.config_file)
        if not path.is_file():
            raise TunesmithError(f"dist.deepspeed.config_file {path} does not exist")
        try:
            own = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise TunesmithError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
        return _check_accumulation(own, train, path)
    zero: dict = {"stage": settings.stage, "overlap_comm": True, "contiguous_gradients": True}
    if settings.offload_optimizer and settings.stage > 0:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if settings.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if settings.stage == 3:
        # Save full weights at the end so the result loads without DeepSpeed.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_micro_batch_size_per_gpu": train.batch_size,
        # DeepSpeed divides each backward by this and steps at the window's end, like accelerate does without it.
        "gradient_accumulation_steps": train.grad_accum,
        "gradient_clipping": train.max_grad_norm or 0.0,
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        "zero_allow_untested_optimizer": True,
    }


def _check_accumulation(own: dict, train: TrainConfig, path: Path) -> dict:
    """The user's config, if its accumulation agrees with the loop's window (DeepSpeed would step mid-window)."""
    steps = own.get("gradient_accumulation_steps", "auto")
    if steps not in ("auto", train.grad_accum):
        raise TunesmithError(f"{path}: gradient_accumulation_steps is {steps} but train.grad_accum is "
                             f"{train.grad_accum}; make them equal, or set it to \"auto\"")
    return own


def uses_deepspeed(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def full_state_dict(accelerator, model) -> dict | None:
    """The full weights of a ZeRO-3 model, to write in place of its own (`save_weights`): each process holds only
    a shard of them. Gathered layer by layer onto rank 0's CPU (the other ranks get None), so every process must
    call this. None when the processes hold the weights whole (no ZeRO-3): the unwrapped model writes its own."""
    if not uses_deepspeed(accelerator) or not model.zero_optimization_partition_weights():
        return None
    # An adapter saves only its trainable weights, so the frozen base (most of the model) is not gathered.
    adapter_only = _saves_adapter(accelerator.unwrap_model(model))
    # The engine's own gathering (accelerate's get_state_dict calls it too, but without leaving frozen weights out).
    return model._zero3_consolidated_16bit_state_dict(exclude_frozen_parameters=adapter_only)


def _saves_adapter(model) -> bool:
    from peft import PeftModel

    from tunesmith.model.value_head import ValueHeadModel

    if isinstance(model, ValueHeadModel):
        model = model.backbone
    return isinstance(model, PeftModel)
