"""The one schema of a run. Every field is documented here, once, beside its definition.

The CLI, the web UI and the API all build a `RunConfig`; nothing reads settings from anywhere else.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from tunesmith.config.group import Group
from tunesmith.config.method_kinds import DEFAULT_METHOD, LoraMethod, MethodConfig
from tunesmith.config.path_marker import PathField
from tunesmith.config.sampling import SamplingConfig, sampling_field
from tunesmith.config.stage_kinds import DEFAULT_STAGE, SftStageConfig, StageConfig


class ModelConfig(Group):
    path: Annotated[str, PathField("model")] = Field(
        description="Where the model is: a local Hugging Face folder, a hub id (when online), a .gguf file, "
        "or 'pkg:PACKAGE' for a folder shipped inside an installed Python package."
    )
    gguf_file: Annotated[str | None, PathField("name")] = Field(
        None, description="Name of the GGUF file inside `path` when `path` is a folder holding one."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Dtype of the weights that do not train (and of every weight in chat, eval and "
        "export). auto: the compute dtype of train.precision when training; otherwise float32 on CPU, bfloat16 "
        "on a GPU that supports it, else float16. Trainable weights are always float32 master weights."
    )
    template: Annotated[str, PathField("name")] = Field(
        "auto", description="Chat template: 'auto' uses the tokenizer's own; a name picks a built-in one; a "
        "LLaMA-Factory template name maps to a built-in or the tokenizer's own (table: data/lf_templates.yaml)."
    )
    trust_remote_code: bool = Field(
        False, description="Run Python code shipped with the model. Off unless you trust the model's source."
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="Attention kernel. auto: sdpa where the architecture supports it, else eager."
    )
    quantization_bit: Literal[4, 8] | None = Field(
        None, description="Load the base weights quantized to 4 or 8 bits with bitsandbytes (for method.kind: "
        "qlora; needs the `qlora` extra); null loads them unquantized."
    )
    quantization_type: Literal["nf4", "fp4"] = Field(
        "nf4", description="4-bit number format: nf4 (normal float, best for trained weights) or fp4."
    )
    double_quantization: bool = Field(
        True, description="4-bit: also quantize the per-block scales, saving about 0.4 bits per weight."
    )


class DataConfig(Group):
    datasets: Annotated[list[str], PathField("datasets")] = Field(
        description="Dataset names from dataset_info.json in `dataset_dir` (or file paths). A comma-separated "
        "string is accepted."
    )
    dataset_dir: Annotated[str, PathField("read")] = Field("data", description="Folder holding dataset_info.json and the data files.")
    max_length: int = Field(1024, ge=8, description="Longest tokenized sample; longer ones are truncated.")
    vars: dict[str, str] = Field(
        default_factory=dict, description="Values for {{name}}-style placeholders in the data (e.g. name, author)."
    )
    val_size: float = Field(
        0.0, ge=0, description="Validation split: a fraction (< 1) of the samples, or a count (>= 1)."
    )
    max_samples: int | None = Field(None, ge=1, description="Use at most this many samples from each dataset.")
    train_on_prompt: bool = Field(False, description="Also train on prompt tokens, not only assistant turns.")
    mask_history: bool = Field(
        False, description="Train only on the last assistant turn of each conversation; earlier turns are context."
    )
    packing: bool = Field(
        False, description="Concatenate samples into rows of max_length (pt/sft); samples never attend to each "
        "other (position_ids restart per sample), so the loss is the same as without packing."
    )
    video_fps: float = Field(
        2.0, gt=0, description="Frames per second taken from each video (as LLaMA-Factory's video_fps); frames "
        "are spread evenly over the video."
    )
    video_max_frames: int = Field(
        128, ge=1, description="Most frames taken from one video (LLaMA-Factory's video_maxlen)."
    )
    num_proc: int = Field(1, ge=1, description="Processes that tokenize the data in parallel.")
    cache: bool = Field(True, description="Keep tokenized data on disk and reuse it when the inputs are unchanged.")
    cache_dir: Annotated[str | None, PathField("write")] = Field(
        None, description="Where tokenized data is cached, keyed by a hash of the data files' contents, template, "
        "tokenizer, max_length, masking options and tunesmith's encoding code; null: the data folder of "
        "tunesmith's cache ($XDG_CACHE_HOME/tunesmith/data, else ~/.cache/tunesmith/data)."
    )

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
    "reduce_lr_on_plateau",
]


class TrainConfig(Group):
    output_dir: Annotated[str, PathField("write")] = Field("runs/latest", description="Run folder: config, metrics, plots, weights, checkpoints.")
    overwrite: bool = Field(False, description="Replace an earlier run in output_dir instead of refusing to start.")
    epochs: float = Field(3.0, gt=0, description="Passes over the training data (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    batch_size: int = Field(4, ge=1, description="Samples per micro-batch on each device.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate.")
    scheduler: SchedulerName = Field("cosine", description="Learning-rate schedule after warmup.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of the steps spent warming up linearly.")
    warmup_steps: int | None = Field(
        None, ge=0, description="Warm up linearly over this many steps; when set it takes precedence over warmup_ratio."
    )
    optimizer: Literal["adamw", "adamw_8bit", "paged_adamw_8bit"] = Field(
        "adamw",
        description="adamw: torch AdamW (fused kernel where the device has one); adamw_8bit: bitsandbytes 8-bit "
        "AdamW (needs the bitsandbytes package), a quarter of the optimizer memory; paged_adamw_8bit: the same "
        "with its states in CUDA managed memory, paged out to CPU memory when the GPU runs short (GPU only).",
    )
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW beta1 and beta2.")
    adam_eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float | None = Field(1.0, description="Clip gradients to this global norm; null disables.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Compute precision of the forward pass: bf16 / fp16 run it under autocast over "
        "float32 master weights (fp16 adds a dynamic loss scaler, GPU only). auto: fp32 on CPU (bf16 is "
        "emulated there), bf16 on a GPU that has it, fp16 on an older GPU. See model/precision.py."
    )
    kernels: Literal["none", "liger"] = Field(
        "none", description="liger: Liger's fused Triton kernels (RMSNorm, SwiGLU, RoPE) for the Llama, Qwen, "
        "Mistral and Gemma families on a GPU; needs the `liger` extra (liger-kernel)."
    )
    compile: bool = Field(
        False, description="torch.compile each decoder layer: faster steps on a GPU after a compile warm-up of "
        "a minute or so; the first steps are slow."
    )
    seed: int = Field(42, description="Seed for weights init, dropout and data order.")
    logging_steps: int = Field(1, ge=1, description="Log metrics every N optimizer steps.")
    save_steps: int | None = Field(None, ge=1, description="Write a checkpoint every N optimizer steps.")
    eval_steps: int | None = Field(
        None, ge=1, description="Evaluate on the validation split every N steps (default: at the end only)."
    )
    save_total_limit: int | None = Field(
        None, ge=1, description="Keep only the newest N checkpoints (older ones are deleted); null keeps all."
    )
    resume: Annotated[str | None, PathField("read", words=("auto",))] = Field(
        None,
        description="Continue a run: 'auto' picks the newest complete checkpoint in output_dir (or starts fresh "
        "when there is none); a path picks that checkpoint folder.",
    )
    gradient_checkpointing: bool | Literal["offload"] = Field(
        False, description="Recompute each decoder layer's activations in the backward pass: much less memory, "
        "about 30% slower. 'offload' also keeps the layer inputs it saves in CPU memory (pinned, copied back for "
        "the backward pass) instead of the GPU's: less GPU memory still, slower again; on a CPU it equals true."
    )
    router_aux_loss_coef: float | None = Field(
        None, ge=0, description="Mixture-of-experts models: weight of the router's load-balancing loss, added to "
        "the training loss and logged as aux_loss; null takes the model config's router_aux_loss_coef; 0 turns it off."
    )
    neftune_alpha: float | None = Field(
        None, gt=0, description="NEFTune: add uniform noise of scale alpha/sqrt(length*hidden) to the input "
        "embeddings while training (5 is typical); null disables."
    )
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop when eval_loss has not improved for this many evaluations (needs a "
        "validation split)."
    )
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list, description="Extra metric sinks besides metrics.jsonl; each needs its package installed."
    )


EVAL_SAMPLING = sampling_field(SamplingConfig, "predict: how replies are generated; its seed also seeds anything "
                               "else random in eval.", max_new_tokens=128, temperature=0.0, seed=42)


class EvalConfig(Group):
    task: Literal["mmlu", "ceval", "cmmlu", "predict", "loss"] = Field(
        description="mmlu / ceval / cmmlu: multiple-choice benchmark in that layout; predict: generate for the "
        "data group's prompts and score BLEU / ROUGE; loss: validation loss on the data group, with perplexity "
        "for pt / sft and the stage's own metrics otherwise."
    )
    benchmark_dir: Annotated[str | None, PathField("read")] = Field(
        None, description="Benchmark folder for mmlu / ceval / cmmlu (dev/val/test CSV files per subject)."
    )
    split: Literal["auto", "test", "val", "dev"] = Field(
        "auto", description="Benchmark split to score. auto: val for ceval (its test answers are hidden), else test."
    )
    shots: int = Field(5, ge=0, description="Solved examples from the dev split put before each question.")
    lang: Literal["auto", "en", "zh"] = Field(
        "auto", description="Prompt language of the benchmark. auto: en for mmlu, zh for ceval and cmmlu."
    )
    batch_size: int = Field(8, ge=1, description="Prompts per forward pass or generate call.")
    max_samples: int | None = Field(
        None, ge=1, description="Score at most this many questions per subject (benchmarks) or samples (predict, loss)."
    )
    out: Annotated[str | None, PathField("write")] = Field(
        None, description="Results JSON file; a table (.txt) and predictions go beside it. Default: "
        "RUN/eval/TASK.json for a run, else eval/TASK.json."
    )
    adapter: Annotated[str | None, PathField("read")] = Field(None, description="LoRA adapter folder to apply on model.path.")
    run: Annotated[str | None, PathField("read")] = Field(
        None, description="Evaluate what this run folder trained (with its template) instead of model.path."
    )
    sampling: EVAL_SAMPLING
    rewards: list[str] = Field(
        default_factory=list, description="predict: also score each reply with these reward functions, named as "
        "in stage.reward_funcs (accuracy, format, length, or 'path/to/file.py:function', which runs that "
        "file's code); each one's mean is reported as reward/NAME."
    )

    @model_validator(mode="after")
    def _check_benchmark_dir(self) -> "EvalConfig":
        if self.task in ("mmlu", "ceval", "cmmlu") and not self.benchmark_dir:
            raise ValueError(f"task {self.task} needs the benchmark folder: --data DIR or eval.benchmark_dir")
        return self


GgufKind = Literal["f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q5_k_s", "q4_k_m", "q4_k_s", "q3_k_m",
                   "q5_1", "q5_0", "q4_1", "q4_0"]


class ExportConfig(Group):
    run: Annotated[str | None, PathField("read")] = Field(None, description="Run folder to export. Default: train.output_dir of this config.")
    out: Annotated[str | None, PathField("write")] = Field(None, description="Folder the export is written to; required to export.")
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Dtype of the merged safetensors weights. auto: the dtype the base model was saved in."
    )
    max_shard_size: str = Field(
        "5GB", pattern=r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$",
        description="Largest safetensors shard, e.g. 5GB (decimal units) or 4GiB (binary units).",
    )
    gguf: list[GgufKind] = Field(
        default_factory=list, description="GGUF files to write beside the merged model, one per kind. K-quants "
        "(q4_k_m, q5_k_m, ...) follow llama.cpp's per-tensor mix; q4_0 / q4_1 / q5_0 / q5_1 keep the embeddings "
        "and output head at q8_0. A comma-separated string is accepted.",
    )
    ollama: bool = Field(True, description="Write an Ollama Modelfile next to the first GGUF file.")
    overwrite: bool = Field(False, description="Replace an existing, non-empty export folder instead of refusing.")

    @field_validator("gguf", mode="before")
    @classmethod
    def _split_gguf_kinds(cls, value):
        if isinstance(value, str):
            return [kind.strip() for kind in value.split(",") if kind.strip()]
        return value


class DeepSpeedConfig(Group):
    stage: Literal[0, 1, 2, 3] = Field(2, description="ZeRO stage: 1 shards optimizer states, 2 also gradients, 3 also weights.")
    offload_optimizer: bool = Field(False, description="Keep optimizer states in CPU memory (ZeRO 1-3).")
    offload_params: bool = Field(False, description="Keep weights in CPU memory (ZeRO 3 only).")
    config_file: Annotated[str | None, PathField("read")] = Field(
        None, description="Your own DeepSpeed JSON; used as is instead of one generated from the settings above."
    )

    @model_validator(mode="after")
    def _offload_params_needs_zero3(self) -> "DeepSpeedConfig":
        if self.offload_params and self.stage != 3 and not self.config_file:
            raise ValueError("dist.deepspeed.offload_params needs stage 3; set dist.deepspeed.stage=3")
        return self


class FsdpConfig(Group):
    sharding: Literal["full_shard", "shard_grad_op", "hybrid_shard", "no_shard"] = Field(
        "full_shard", description="What FSDP shards: weights+grads+optimizer (full_shard) or grads+optimizer."
    )
    offload_params: bool = Field(False, description="Keep sharded weights in CPU memory between uses.")


class DistConfig(Group):
    nproc_per_node: Union[int, Literal["auto"]] = Field(
        1, description="Processes on this machine (one per GPU); 'auto' uses every visible GPU."
    )
    nnodes: int = Field(1, ge=1, description="Machines taking part.")
    node_rank: int = Field(0, ge=0, description="This machine's index among nnodes (0 is the master).")
    master_addr: str = Field("127.0.0.1", description="Address of node 0, reachable from every node.")
    master_port: int = Field(29500, ge=1, le=65535, description="Free TCP port on node 0 for the rendezvous.")
    engine: Literal["ddp", "deepspeed", "fsdp"] = Field("ddp", description="How the processes share the work.")
    deepspeed: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig, description="Settings for engine: deepspeed.")
    fsdp: FsdpConfig = Field(default_factory=FsdpConfig, description="Settings for engine: fsdp.")
    timeout_minutes: int = Field(
        180, ge=1, description="How long a process waits at a collective (e.g. for rank 0 to tokenize the data)."
    )


class RunConfig(Group):
    model: ModelConfig
    method: MethodConfig = Field(
        default_factory=LoraMethod, description="How weights are trained: kind lora, qlora, full or freeze, "
        "with that kind's settings beside it, e.g. {kind: lora, rank: 16}."
    )
    stage: StageConfig = Field(
        default_factory=SftStageConfig, description="What training optimises: kind sft, pt, rm, dpo, kto, ppo "
        "or grpo, with that kind's settings beside it, e.g. {kind: dpo, beta: 0.1}."
    )
    data: DataConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig | None = Field(None, description="What `tunesmith eval CONFIG` evaluates and how.")
    export: ExportConfig = Field(default_factory=ExportConfig, description="What `tunesmith export` writes.")
    dist: DistConfig = Field(default_factory=DistConfig, description="Multi-process / multi-node training.")

    @model_validator(mode="before")
    @classmethod
    def _default_kinds(cls, raw):
        """`method: {rank: 16}` is lora and `stage: {}` is sft, as when the group is left out."""
        if isinstance(raw, dict):
            for group, kind in (("method", DEFAULT_METHOD), ("stage", DEFAULT_STAGE)):
                if isinstance(raw.get(group), dict) and "kind" not in raw[group]:
                    raw = {**raw, group: {"kind": kind, **raw[group]}}
        return raw

    @model_validator(mode="after")
    def _check_cross_fields(self) -> "RunConfig":
        if self.data.val_size >= 1 and self.data.val_size != int(self.data.val_size):
            raise ValueError("data.val_size: a count must be a whole number; use a fraction below 1 or an integer")
        _check_quantization_matches_method(self.model, self.method)
        _check_grpo_batch(self.stage, self.train)
        _check_eval_driven_options(self.train, self.data)
        if self.data.packing and self.stage.kind not in PACKABLE_STAGES:
            raise ValueError(f"data.packing works for the {' and '.join(PACKABLE_STAGES)} stages only, not for "
                             f"{self.stage.kind}; set data.packing: false")
        return self


PACKABLE_STAGES = ("pt", "sft")  # stages whose samples are one sequence each, so rows can hold several


def _check_eval_driven_options(train: TrainConfig, data: DataConfig) -> None:
    """Options that follow eval_loss only make sense with a validation split."""
    needs_eval = {"train.scheduler reduce_lr_on_plateau": train.scheduler == "reduce_lr_on_plateau",
                  "train.early_stopping_patience": train.early_stopping_patience is not None}
    for option, used in needs_eval.items():
        if used and not data.val_size:
            raise ValueError(f"{option} follows eval_loss, so it needs a validation split; set data.val_size "
                             "(e.g. 0.1) and train.eval_steps")


def _check_grpo_batch(stage: StageConfig, train: TrainConfig) -> None:
    """grpo: a micro-batch holds whole groups, so train.batch_size (completions) must be a multiple of G."""
    if stage.kind != "grpo" or train.batch_size % stage.num_generations == 0:
        return
    group = stage.num_generations
    lower, upper = train.batch_size // group * group, (train.batch_size // group + 1) * group
    nearest = f"{lower} or {upper}" if lower else f"{upper}"
    raise ValueError(f"train.batch_size {train.batch_size} is not a multiple of stage.num_generations "
                     f"{group}: each micro-batch holds whole groups of completions; use train.batch_size "
                     f"{nearest}, or change num_generations")


def _check_quantization_matches_method(model: ModelConfig, method: MethodConfig) -> None:
    if method.kind == "qlora" and model.quantization_bit is None:
        raise ValueError("method.kind qlora trains on a quantized base: set model.quantization_bit to 4 or 8")
    if model.quantization_bit is not None and method.kind != "qlora":
        raise ValueError(
            f"model.quantization_bit is set but method.kind is '{method.kind}': quantized weights cannot be "
            "trained directly; use method.kind: qlora or remove model.quantization_bit"
        )
