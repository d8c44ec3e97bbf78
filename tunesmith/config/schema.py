"""The one schema of a run. Every field is documented here, once, beside its definition.

The CLI, the web UI and the API all build a `RunConfig`; nothing reads settings from anywhere else.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Group(BaseModel):
    """Base of every config group: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Group):
    path: str = Field(
        description="Where the model is: a local Hugging Face folder, a hub id (when online), a .gguf file, "
        "or 'pkg:PACKAGE' for a folder shipped inside an installed Python package."
    )
    gguf_file: str | None = Field(
        None, description="Name of the GGUF file inside `path` when `path` is a folder holding one."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype. auto: float32 on CPU, bfloat16 on a GPU that supports it, else float16."
    )
    template: str = Field(
        "auto", description="Chat template: 'auto' uses the tokenizer's own; a name picks a built-in one."
    )
    trust_remote_code: bool = Field(
        False, description="Run Python code shipped with the model. Off unless you trust the model's source."
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="Attention kernel. auto: sdpa."
    )


class LoraConfig(Group):
    rank: int = Field(8, ge=1, description="LoRA rank r.")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha; the update is scaled by alpha / rank.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    targets: Union[Literal["all-linear"], list[str]] = Field(
        "all-linear",
        description="Modules to adapt: 'all-linear' (every linear layer but the output head) or a list of names.",
    )


class FreezeConfig(Group):
    layers: int = Field(2, ge=1, description="Train the last N decoder layers; everything else stays frozen.")


class MethodConfig(Group):
    kind: Literal["lora", "full", "freeze"] = Field("lora", description="How weights are trained.")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="Settings for kind: lora.")
    freeze: FreezeConfig = Field(default_factory=FreezeConfig, description="Settings for kind: freeze.")


class StageConfig(Group):
    kind: Literal["sft", "pt"] = Field(
        "sft", description="sft: supervised fine-tuning on conversations; pt: continued pre-training on text."
    )


class DataConfig(Group):
    datasets: list[str] = Field(
        description="Dataset names from dataset_info.json in `dataset_dir` (or file paths). A comma-separated "
        "string is accepted."
    )
    dataset_dir: str = Field("data", description="Folder holding dataset_info.json and the data files.")
    max_length: int = Field(1024, ge=8, description="Longest tokenized sample; longer ones are truncated.")
    vars: dict[str, str] = Field(
        default_factory=dict, description="Values for {{name}}-style placeholders in the data (e.g. name, author)."
    )
    val_size: float = Field(
        0.0, ge=0, description="Validation split: a fraction (< 1) of the samples, or a count (>= 1)."
    )
    max_samples: int | None = Field(None, ge=1, description="Use at most this many samples from each dataset.")
    train_on_prompt: bool = Field(False, description="Also train on prompt tokens, not only assistant turns.")

    @field_validator("datasets", mode="before")
    @classmethod
    def _split_comma_list(cls, value):
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value


SchedulerName = Literal[
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
]


class TrainConfig(Group):
    output_dir: str = Field("runs/latest", description="Run folder: config, metrics, plots, weights, checkpoints.")
    overwrite: bool = Field(False, description="Replace an earlier run in output_dir instead of refusing to start.")
    epochs: float = Field(3.0, gt=0, description="Passes over the training data (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    batch_size: int = Field(4, ge=1, description="Samples per micro-batch on each device.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate.")
    scheduler: SchedulerName = Field("cosine", description="Learning-rate schedule after warmup.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of the steps spent warming up linearly.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float | None = Field(1.0, description="Clip gradients to this global norm; null disables.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Compute precision. auto: fp32 on CPU (bf16 is emulated there), bf16 on a capable GPU."
    )
    seed: int = Field(42, description="Seed for weights init, dropout and data order.")
    logging_steps: int = Field(1, ge=1, description="Log metrics every N optimizer steps.")
    save_steps: int | None = Field(None, ge=1, description="Write a checkpoint every N optimizer steps.")
    eval_steps: int | None = Field(
        None, ge=1, description="Evaluate on the validation split every N steps (default: at the end only)."
    )


class RunConfig(Group):
    model: ModelConfig
    method: MethodConfig = Field(default_factory=MethodConfig)
    stage: StageConfig = Field(default_factory=StageConfig)
    data: DataConfig
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _check_cross_fields(self) -> "RunConfig":
        if self.data.val_size >= 1 and self.data.val_size != int(self.data.val_size):
            raise ValueError("data.val_size: a count must be a whole number; use a fraction below 1 or an integer")
        return self
