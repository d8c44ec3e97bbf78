"""`method`: how weights are trained, a tagged union on `kind`. Each kind holds only its own settings, so a
setting of another kind (method.rank under kind full) is an error naming the key."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, TypeAdapter, model_validator

from tunesmith.config.group import Group


class VisionConfig(Group):
    """Which parts of a vision-language model (Qwen2-VL, Qwen2.5-VL, LLaVA) train; ignored for text-only models.
    The language model trains as the method kind says."""

    train_tower: bool = Field(
        False, description="Train the vision tower (the image encoder); frozen by default. With lora it gets "
        "adapters on its linear layers too; with full / freeze its weights train."
    )
    train_projector: bool = Field(
        False, description="Train the projector that maps image features into the language model (trained "
        "whole, also saved beside a LoRA adapter); frozen by default."
    )


class MethodBase(Group):
    """Settings every method kind has: a field added here appears under each kind."""

    vision: VisionConfig = Field(default_factory=VisionConfig, description="Vision-language models: what trains "
                                 "besides the language model.")


class FullMethod(MethodBase):
    kind: Literal["full"] = Field("full", description="Train every weight.")


class FreezeMethod(MethodBase):
    kind: Literal["freeze"] = Field("freeze", description="Train the last layers and named modules only.")
    layers: int = Field(
        2, ge=0, description="Train the last N decoder layers (0: none); everything else stays frozen."
    )
    modules: list[str] = Field(
        default_factory=list,
        description="Also train the modules with these names or dotted name parts, e.g. [embed_tokens] or "
        "[mlp]; with layers: 0 only these train.",
    )

    @model_validator(mode="after")
    def _something_trains(self) -> "FreezeMethod":
        if self.layers == 0 and not self.modules:
            raise ValueError("method kind freeze trains nothing: set layers >= 1 or name modules to train")
        return self


class LoraMethod(MethodBase):
    kind: Literal["lora"] = Field("lora", description="Train low-rank adapters beside frozen weights.")
    rank: int = Field(8, ge=1, description="LoRA rank r.")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha; the update is scaled by alpha / rank.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    targets: Union[Literal["all-linear"], list[str]] = Field(
        "all-linear",
        description="Modules to adapt: 'all-linear' (every linear layer but the output head) or a list of names.",
    )
    target_parameters: list[str] = Field(
        default_factory=list,
        description="Parameters (not modules) to adapt, by name or name ending, e.g. [mlp.experts.gate_up_proj, "
        "mlp.experts.down_proj]: the fused 3-D expert weights of MoE models such as Qwen3-MoE.",
    )
    dora: bool = Field(False, description="DoRA: learn each weight's magnitude apart from its LoRA direction.")
    rslora: bool = Field(False, description="rsLoRA: scale the update by alpha / sqrt(rank) instead of alpha / rank.")
    modules_to_save: list[str] = Field(
        default_factory=list,
        description="Modules trained in full and saved beside the adapter, e.g. [embed_tokens, lm_head] after "
        "adding tokens.",
    )


class QloraMethod(LoraMethod):
    kind: Literal["qlora"] = Field(
        "qlora", description="LoRA on a base quantized as model.quantization_bit says (needs the `qlora` extra)."
    )


MethodConfig = Annotated[Union[LoraMethod, QloraMethod, FullMethod, FreezeMethod], Field(discriminator="kind")]
DEFAULT_METHOD = "lora"
_ADAPTER: TypeAdapter = TypeAdapter(MethodConfig)


def parse_method(settings: dict) -> LoraMethod | QloraMethod | FullMethod | FreezeMethod:
    """The method group for `settings` (kind defaults to lora), validated."""
    return _ADAPTER.validate_python({"kind": DEFAULT_METHOD, **settings})
