"""Which dtype every tensor of a run has: one decision, from the config and what the device can do.

  model.dtype    the dtype of the weights that do not train (auto: the compute dtype, float32 on a CPU);
  train.precision the compute dtype of the forward pass (auto: bf16 on a GPU that has it, fp16 on an older
                 GPU, fp32 on a CPU, where bf16 is emulated and runs several times slower).

Trainable parameters (full, freeze, LoRA adapters and peft's modules_to_save copies) are always float32
master weights: AdamW's updates are often smaller than a bf16 weight's resolution (8 bits of mantissa) and
would be rounded away, so training would stall without an error. 16-bit compute comes from autocast, which
casts the float32 weights per matmul. fp16 also needs a loss scaler (its range is too small for gradients);
the scaler unscales float32 gradients, which is why fp16 weights never train.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunesmith.errors import TunesmithError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
COMPUTE = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MASTER_DTYPE = torch.float32


@dataclass(frozen=True)
class DeviceCaps:
    """What the training device offers that changes the precision decision."""

    kind: str  # "cpu" or "cuda"
    bf16: bool  # native bfloat16 matmuls (Ampere and newer GPUs)

    @classmethod
    def detect(cls, device_type: str) -> "DeviceCaps":
        if device_type == "cuda":
            return cls("cuda", torch.cuda.is_bf16_supported(including_emulation=False))
        return cls(device_type, False)


@dataclass(frozen=True)
class PrecisionPlan:
    frozen_dtype: torch.dtype  # weights that do not train
    master_dtype: torch.dtype  # trainable parameters
    load_dtype: torch.dtype  # what from_pretrained loads (full trains everything: its master dtype)
    autocast: torch.dtype | None  # compute dtype under autocast; None: each op runs in its inputs' dtype
    loss_scaling: bool  # fp16: a dynamic loss scaler (GradScaler) guards the gradients' range
    tf32: bool  # float32 matmuls on tensor cores (CUDA; 10 mantissa bits, float32 range)

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.autocast or self.frozen_dtype

    @property
    def accelerate_name(self) -> str:
        """accelerate's mixed_precision name for this plan."""
        return {None: "no", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast]

    def describe(self) -> str:
        name = lambda dtype: str(dtype).removeprefix("torch.")  # noqa: E731
        autocast = f"{name(self.autocast)} autocast" if self.autocast else "no autocast"
        scaler = ", loss scaling" if self.loss_scaling else ""
        return (f"precision: frozen weights {name(self.frozen_dtype)}, trainable {name(self.master_dtype)}, "
                f"{autocast}{scaler}{', tf32 matmuls' if self.tf32 else ''}")


def plan_precision(dtype: str, precision: str, method_kind: str, device: DeviceCaps) -> PrecisionPlan:
    """The plan for model.dtype `dtype`, train.precision `precision` and method.kind `method_kind` on `device`."""
    compute = _compute_dtype(precision, device)
    frozen = DTYPES.get(dtype, compute)
    autocast = None if compute == torch.float32 else compute
    if autocast is None and frozen != torch.float32 and method_kind == "freeze":
        # Frozen 16-bit layers feed float32 trainable ones: without autocast their matmuls mismatch.
        raise TunesmithError(f"model.dtype {dtype} with train.precision fp32 mixes 16-bit frozen layers and "
                             "float32 trainable ones in one forward; use train.precision bf16/fp16 or "
                             "model.dtype float32")
    load = MASTER_DTYPE if method_kind == "full" else frozen
    return PrecisionPlan(frozen, MASTER_DTYPE, load, autocast, autocast == torch.float16, device.kind == "cuda")


def training_plan(config, device_type: str) -> PrecisionPlan:
    """The plan of a RunConfig on a device of `device_type`."""
    return plan_precision(config.model.dtype, config.train.precision, config.method.kind,
                          DeviceCaps.detect(device_type))


def _compute_dtype(precision: str, device: DeviceCaps) -> torch.dtype:
    if precision == "auto":
        if device.kind != "cuda":
            return torch.float32
        return torch.bfloat16 if device.bf16 else torch.float16
    if precision == "bf16" and device.kind == "cuda" and not device.bf16:
        raise TunesmithError("train.precision bf16 needs a GPU with bfloat16 (Ampere or newer); this one has "
                             "none: use train.precision fp16 (or auto)")
    if precision == "fp16" and device.kind != "cuda":
        raise TunesmithError("train.precision fp16 needs a CUDA GPU (its loss scaler and kernels are GPU-only "
                             "here); use fp32 or bf16 on a CPU")
    return COMPUTE[precision]


def inference_dtype(dtype: str, device: DeviceCaps) -> torch.dtype:
    """Weights dtype for generation and scoring: model.dtype, or the device's fastest (auto)."""
    return DTYPES.get(dtype) or _compute_dtype("auto", device)


def keep_trainable_in_master(model, plan: PrecisionPlan) -> None:
    """Cast every trainable parameter (LoRA, modules_to_save copies, trained layers) to the master dtype.
    ZeRO-3's partitioned parameters are left alone: DeepSpeed keeps its own float32 masters of them."""
    for param in model.parameters():
        partitioned = hasattr(param, "ds_id")
        if param.requires_grad and param.is_floating_point() and param.dtype != plan.master_dtype and not partitioned:
            param.data = param.data.to(plan.master_dtype)


def apply_device_settings(plan: PrecisionPlan) -> None:
    """TF32 for float32 matmuls on CUDA: torch's own switch, set for the process that trains."""
    if plan.tf32:
        torch.backends.cuda.matmul.fp32_precision = "tf32"  # cuDNN convolutions already default to tf32
