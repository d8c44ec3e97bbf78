"""GPU fast paths for training: Liger's fused kernels (train.kernels) and compiled decoder layers (train.compile).

Liger's own `apply_liger_kernel_to_*` functions replace classes and functions inside transformers' modules for
the whole process. Here the model's own modules are swapped instead, one instance at a time: each RMSNorm for a
LigerRMSNorm sharing its weight, each gated MLP for Liger's fused one holding the same linear layers. Nothing
outside this model changes. Liger's RoPE is a module-level function in transformers, which this does not patch;
the output head's logits are kept small by the loss path's own target-position head instead of Liger's fused
linear cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.errors import TunesmithError

INSTALL_HINT = "install it with: pip install 'tunesmith[liger]'"


@dataclass(frozen=True)
class LigerFamily:
    norm_offset: float  # Gemma's norms scale by (1 + weight)
    casting_mode: str  # where the norm casts to float32, as the family's own RMSNorm does
    mlp: str  # the fused gated MLP: "swiglu" (SiLU) or "geglu" (tanh GELU)


FAMILIES = {
    "llama": LigerFamily(0.0, "llama", "swiglu"),
    "mistral": LigerFamily(0.0, "llama", "swiglu"),
    "qwen2": LigerFamily(0.0, "llama", "swiglu"),
    "qwen3": LigerFamily(0.0, "llama", "swiglu"),
    "gemma": LigerFamily(1.0, "gemma", "geglu"),
    "gemma2": LigerFamily(1.0, "gemma", "geglu"),
}


def apply_kernels(model, kernels: str, device_type: str) -> None:
    """Swap in the kernels train.kernels names; call before the method wraps layers (LoRA finds the same linears)."""
    if kernels == "none":
        return
    family = FAMILIES.get(model.config.model_type)
    if family is None:
        raise TunesmithError(f"train.kernels liger supports the {', '.join(FAMILIES)} families, not "
                             f"'{model.config.model_type}'; set train.kernels: none for this model")
    if device_type != "cuda":
        raise TunesmithError("train.kernels liger runs Triton kernels on a CUDA GPU; set train.kernels: none here")
    try:
        import liger_kernel.transformers as liger
    except ImportError:
        raise TunesmithError(f"train.kernels liger needs the liger-kernel package; {INSTALL_HINT}") from None
    swap_liger_modules(model, liger, family)


def swap_liger_modules(model, liger, family: LigerFamily) -> int:
    """Replace the model's RMSNorms and gated MLPs by `liger`'s modules; returns how many were swapped."""
    import torch

    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            kind = type(child).__name__
            if kind.endswith("RMSNorm"):
                eps = getattr(child, "variance_epsilon", None) or getattr(child, "eps", 1e-6)
                new = liger.LigerRMSNorm(child.weight.shape[0], eps=eps, offset=family.norm_offset,
                                         casting_mode=family.casting_mode, in_place=False)
                new.weight = child.weight
            elif kind.endswith("MLP") and all(hasattr(child, n) for n in ("gate_proj", "up_proj", "down_proj")):
                with torch.device("meta"):  # its own linears are replaced at once: allocate none
                    new = liger.LigerSwiGLUMLP(model.config) if family.mlp == "swiglu" \
                        else liger.LigerGEGLUMLP(model.config)
                new.gate_proj, new.up_proj, new.down_proj = child.gate_proj, child.up_proj, child.down_proj
            else:
                continue
            setattr(parent, name, new)
            swapped += 1
    return swapped


def compile_layers(model, backend: str = "inductor") -> int:
    """torch.compile each decoder layer in place (layers are alike, so one compiled graph serves them all;
    compiling the whole model would also trace the loss path's dynamic shapes). Returns the layer count.
    `backend` aot_eager captures the same forward and backward graphs without generating code (minutes
    faster on a CPU, where inductor compiles C++)."""
    from tunesmith.model.methods import decoder_layers

    layers = decoder_layers(model)
    for layer in layers:
        layer.compile(backend=backend)
    return len(layers)
