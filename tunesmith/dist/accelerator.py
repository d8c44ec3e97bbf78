"""The Accelerator for a run: precision, process-group timeout, and the DeepSpeed or FSDP plugin."""

from __future__ import annotations

from datetime import timedelta

from tunesmith.config.schema import RunConfig
from tunesmith.errors import TunesmithError


def mixed_precision(precision: str) -> str:
    """accelerate's name for the configured precision, as model/precision.py decides it for this machine."""
    import torch

    from tunesmith.model.precision import DeviceCaps, plan_precision

    device = DeviceCaps.detect("cuda" if torch.cuda.is_available() else "cpu")
    return plan_precision("auto", precision, "lora", device).accelerate_name  # autocast depends on neither


def make_accelerator(config: RunConfig):
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    import torch

    precision = mixed_precision(config.train.precision)
    on_cpu = not torch.cuda.is_available()
    # Long enough for rank 0 to tokenize a large dataset while the others wait at the barrier.
    group = {"timeout": timedelta(minutes=config.dist.timeout_minutes)}
    if on_cpu and config.dist.engine == "deepspeed":
        # accelerate ignores a DeepSpeed plugin in a cpu=True process (it would silently run DDP), so DeepSpeed
        # runs on its own CPU accelerator; gloo must be named, or accelerate sees one process per rank.
        on_cpu, group["backend"] = False, "gloo"
    kwargs = {
        "mixed_precision": precision,
        "cpu": on_cpu,  # lets several CPU processes train together over gloo
        # The loop's window: accelerate (and DeepSpeed, configured alike) then syncs gradients and steps only
        # at the window's last micro-batch, and divides each backward by it, which the loop's scale undoes.
        "gradient_accumulation_steps": config.train.grad_accum,
        "kwargs_handlers": [InitProcessGroupKwargs(**group)],
    }
    if config.dist.engine == "deepspeed":
        kwargs["deepspeed_plugin"] = _deepspeed_plugin(config, precision)
    elif config.dist.engine == "fsdp":
        if not torch.cuda.is_available():
            # torch's FSDP runs on CPU over gloo, but accelerate picks FSDP only for accelerator devices: with
            # CPU processes it ignores the FSDP plugin and wraps the model in DDP instead.
            raise TunesmithError("dist.engine=fsdp needs GPUs (accelerate runs FSDP on accelerators only and "
                                 "would fall back to DDP on CPU); use dist.engine=ddp or deepspeed on CPU")
        kwargs["fsdp_plugin"] = _fsdp_plugin(config)
    return Accelerator(**kwargs)


def _deepspeed_plugin(config: RunConfig, precision: str):
    from accelerate.utils import DeepSpeedPlugin

    from tunesmith.dist.deepspeed import deepspeed_config

    return DeepSpeedPlugin(hf_ds_config=deepspeed_config(config.dist.deepspeed, config.train, precision))


def _fsdp_plugin(config: RunConfig):
    from accelerate.utils import FullyShardedDataParallelPlugin

    settings = config.dist.fsdp
    return FullyShardedDataParallelPlugin(
        sharding_strategy=settings.sharding.upper(),
        auto_wrap_policy="transformer_based_wrap",  # one FSDP unit per decoder layer (model._no_split_modules)
        cpu_offload=settings.offload_params,
        state_dict_type="SHARDED_STATE_DICT",
        use_orig_params=True,  # lets frozen and trainable weights (LoRA) share a unit
        sync_module_states=True,
    )
