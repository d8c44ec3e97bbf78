"""The one schema of a run. Every field is documented here, once, beside its definition.

The CLI, the web UI and the API all build a `RunConfig`; nothing reads settings from anywhere else.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tunesmith.config.path_marker import PathField


class Group(BaseModel):
    """Base of every config group: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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


class LoraConfig(Group):
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


class FreezeConfig(Group):
    layers: int = Field(
        2, ge=0, description="Train the last N decoder layers (0: none); everything else stays frozen."
    )
    modules: list[str] = Field(
        default_factory=list,
        description="Also train the modules with these names or dotted name parts, e.g. [embed_tokens] or "
        "[mlp]; with layers: 0 only these train.",
    )

    @model_validator(mode="after")
    def _something_trains(self) -> "FreezeConfig":
        if self.layers == 0 and not self.modules:
            raise ValueError("method.freeze trains nothing: set layers >= 1 or name modules to train")
        return self


class VisionConfig(Group):
    """Which parts of a vision-language model (Qwen2-VL, Qwen2.5-VL) train, for every method kind; ignored for
    text-only models. The language model trains as the method says."""

    train_tower: bool = Field(
        False, description="Train the vision tower (the image encoder); frozen by default. With lora it gets "
        "adapters on its linear layers too; with full / freeze its weights train."
    )
    train_projector: bool = Field(
        False, description="Train the projector that maps image features into the language model (trained "
        "whole, also saved beside a LoRA adapter); frozen by default."
    )


class MethodConfig(Group):
    kind: Literal["lora", "qlora", "full", "freeze"] = Field(
        "lora",
        description="How weights are trained. full: all of them; freeze: the last layers / named modules; "
        "lora: low-rank adapters; qlora: lora on a base quantized as model.quantization_bit says.",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="Settings for kind: lora and qlora.")
    freeze: FreezeConfig = Field(default_factory=FreezeConfig, description="Settings for kind: freeze.")
    vision: VisionConfig = Field(default_factory=VisionConfig, description="Vision-language models: what trains "
                                 "besides the language model (every kind).")


class PpoConfig(Group):
    reward_model: Annotated[str | None, PathField("read")] = Field(
        None, description="Run folder of a finished `stage.kind: rm` run (weights or adapter + value_head.safetensors)."
    )
    max_new_tokens: int = Field(64, ge=1, description="Longest reply generated per prompt in a rollout.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the rollouts.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling of the rollouts: keep this much probability mass.")
    epochs: int = Field(4, ge=1, description="Optimizer passes over each rollout batch.")
    clip_range: float = Field(0.2, gt=0, description="Clip of the policy ratio: 1 +- clip_range.")
    value_clip_range: float = Field(0.2, gt=0, description="Clip of the value change from the rollout's values.")
    value_coef: float = Field(0.1, ge=0, description="Weight of the value loss beside the policy loss.")
    kl_coef: float = Field(0.05, ge=0, description="Per-token KL penalty against the reference model.")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount of GAE.")
    lam: float = Field(0.95, ge=0, le=1, description="Lambda of GAE.")
    reward_norm: Literal["none", "batch", "running"] = Field(
        "none", description="Normalise reward-model scores: by each rollout batch's mean/std, or by running ones."
    )
    reward_clip: float | None = Field(None, gt=0, description="Clip (normalised) scores to +-this; null: no clip.")
    whiten_advantages: bool = Field(True, description="Whiten advantages (zero mean, unit std) over each batch.")


class GrpoConfig(Group):
    num_generations: int = Field(
        8, ge=2, description="Completions sampled per prompt (the group size G); train.batch_size counts "
        "completions, so it must be a multiple of G."
    )
    max_new_tokens: int = Field(256, ge=1, description="Longest completion; longer ones are cut (truncated).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the completions.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling of the completions: keep this much mass.")
    beta: float = Field(
        0.0, ge=0, description="Weight of the KL penalty to the reference model (the k3 estimator). 0: no KL "
        "term, and no reference model is loaded at all."
    )
    epsilon: float = Field(0.2, gt=0, lt=1, description="Lower clip of the importance ratio: 1 - epsilon.")
    epsilon_high: float | None = Field(
        None, gt=0, description="Upper clip of the ratio, 1 + epsilon_high (DAPO's clip-higher, e.g. 0.28); "
        "null: epsilon."
    )
    num_iterations: int = Field(
        1, ge=1, description="Optimizer updates per batch of completions (mu). Above 1 the rollout's log-probs "
        "are kept as the old policy's; at 1 the ratio is exactly 1."
    )
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = Field(
        "dapo", description="How token losses are averaged. grpo: mean per completion, then over completions "
        "(favours short correct answers); bnpo: token mean per micro-batch; dr_grpo: sum divided by "
        "completions x max_new_tokens (no length bias); dapo: token mean over the whole step, all processes."
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="Divide advantages (reward minus its group's mean) by the group's std, the "
        "batch's std, or nothing (Dr. GRPO)."
    )
    mask_truncated_completions: bool = Field(
        False, description="Completions cut at max_new_tokens take no part in the loss (DAPO)."
    )
    reward_funcs: list[str] = Field(
        default_factory=lambda: ["accuracy"], description="Rewards, summed with reward_weights: built-ins "
        "accuracy (final answer vs the data's answer), format (format_pattern matches), length (DAPO's soft "
        "overlong penalty); 'path/to/file.py:function' (your own Python code, which `tunesmith train` runs); or "
        "the folder of a finished rm run."
    )
    reward_weights: list[float] | None = Field(
        None, description="One weight per reward function; null: 1 each."
    )
    format_pattern: str = Field(
        r".*####\s*-?[\d,]*\.?\d+", description="The `format` reward's regex: 1 when the whole completion "
        "matches ('.' also matches newlines). The default asks for a final '#### <number>' line."
    )
    overlong_buffer: int = Field(
        32, ge=1, description="The `length` reward: completions longer than max_new_tokens - overlong_buffer "
        "tokens are penalised linearly, down to -1 at max_new_tokens."
    )
    samples_per_step: int = Field(2, ge=0, description="Completions written to samples.jsonl each step.")

    @model_validator(mode="after")
    def _check_rewards(self) -> "GrpoConfig":
        if not self.reward_funcs:
            raise ValueError("stage.grpo.reward_funcs is empty; name at least one reward, e.g. [accuracy]")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.reward_funcs):
            raise ValueError(f"stage.grpo.reward_weights has {len(self.reward_weights)} weights for "
                             f"{len(self.reward_funcs)} reward_funcs; give one weight per function")
        if "length" in self.reward_funcs and self.overlong_buffer > self.max_new_tokens:
            raise ValueError("stage.grpo.overlong_buffer is larger than max_new_tokens; make it smaller")
        return self


class StageConfig(Group):
    kind: Literal["sft", "pt", "rm", "dpo", "kto", "ppo", "grpo"] = Field(
        "sft",
        description="sft: supervised fine-tuning on conversations; pt: continued pre-training on text; "
        "rm: reward model on preference pairs; dpo: direct preference optimisation (and IPO, hinge, ORPO, "
        "SimPO); kto: KTO on desirable/undesirable examples; ppo: PPO against a reward model; grpo: "
        "group-relative policy optimisation with reward functions.",
    )
    beta: float = Field(0.1, gt=0, description="dpo/kto: strength of the KL anchor to the reference (SimPO: reward scale).")
    loss: Literal["sigmoid", "ipo", "hinge", "orpo", "simpo"] = Field(
        "sigmoid", description="dpo: the preference loss. orpo and simpo need no reference model."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="dpo sigmoid: assumed rate of flipped labels.")
    simpo_gamma: float = Field(0.5, ge=0, description="simpo: target reward margin gamma.")
    orpo_lambda: float = Field(0.1, gt=0, description="orpo: weight of the odds-ratio term beside the chosen NLL.")
    desirable_weight: float = Field(1.0, gt=0, description="kto: weight of desirable examples.")
    undesirable_weight: float = Field(1.0, gt=0, description="kto: weight of undesirable examples.")
    precompute_ref: bool = Field(
        False, description="dpo/kto: compute reference log-probs once before training (dropout off), then drop them "
        "from every step."
    )
    ppo: PpoConfig = Field(default_factory=PpoConfig, description="Settings for kind: ppo.")
    grpo: GrpoConfig = Field(default_factory=GrpoConfig, description="Settings for kind: grpo.")

    @model_validator(mode="after")
    def _check_ppo_reward_model(self) -> "StageConfig":
        if self.kind == "ppo" and not self.ppo.reward_model:
            raise ValueError("stage.ppo.reward_model is required for kind ppo; point it at a finished rm run folder")
        return self


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
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: much less memory, about 30% slower."
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
    seed: int = Field(42, description="Seed for sampling (predict with temperature > 0) and anything random.")
    out: Annotated[str | None, PathField("write")] = Field(
        None, description="Results JSON file; a table (.txt) and predictions go beside it. Default: "
        "RUN/eval/TASK.json for a run, else eval/TASK.json."
    )
    adapter: Annotated[str | None, PathField("read")] = Field(None, description="LoRA adapter folder to apply on model.path.")
    run: Annotated[str | None, PathField("read")] = Field(
        None, description="Evaluate what this run folder trained (with its template) instead of model.path."
    )
    max_new_tokens: int = Field(128, ge=1, description="predict: longest reply generated.")
    temperature: float = Field(0.0, ge=0, description="predict: sampling temperature; 0 decodes greedily.")
    rewards: list[str] = Field(
        default_factory=list, description="predict: also score each reply with these reward functions, named as "
        "in stage.grpo.reward_funcs (accuracy, format, length, or 'path/to/file.py:function', which runs that "
        "file's code); each one's mean is reported as reward/NAME."
    )

    @model_validator(mode="after")
    def _check_benchmark_dir(self) -> "EvalConfig":
        if self.task in ("mmlu", "ceval", "cmmlu") and not self.benchmark_dir:
            raise ValueError(f"task {self.task} needs the benchmark folder: --data DIR or eval.benchmark_dir")
        return self


GgufKind = Literal["f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q5_k_s", "q4_k_m", "q4_k_s",
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
    method: MethodConfig = Field(default_factory=MethodConfig)
    stage: StageConfig = Field(default_factory=StageConfig)
    data: DataConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig | None = Field(None, description="What `tunesmith eval CONFIG` evaluates and how.")
    export: ExportConfig = Field(default_factory=ExportConfig, description="What `tunesmith export` writes.")
    dist: DistConfig = Field(default_factory=DistConfig, description="Multi-process / multi-node training.")

    @model_validator(mode="after")
    def _check_cross_fields(self) -> "RunConfig":
        if self.data.val_size >= 1 and self.data.val_size != int(self.data.val_size):
            raise ValueError("data.val_size: a count must be a whole number; use a fraction below 1 or an integer")
        _check_quantization_matches_method(self.model, self.method)
        _check_grpo_batch(self.stage, self.train)
        return self


def _check_grpo_batch(stage: StageConfig, train: TrainConfig) -> None:
    """grpo: a micro-batch holds whole groups, so train.batch_size (completions) must be a multiple of G."""
    group = stage.grpo.num_generations
    if stage.kind != "grpo" or train.batch_size % group == 0:
        return
    lower, upper = train.batch_size // group * group, (train.batch_size // group + 1) * group
    nearest = f"{lower} or {upper}" if lower else f"{upper}"
    raise ValueError(f"train.batch_size {train.batch_size} is not a multiple of stage.grpo.num_generations "
                     f"{group}: each micro-batch holds whole groups of completions; use train.batch_size "
                     f"{nearest}, or change num_generations")


def _check_quantization_matches_method(model: ModelConfig, method: MethodConfig) -> None:
    if method.kind == "qlora" and model.quantization_bit is None:
        raise ValueError("method.kind 'qlora' trains on a quantized base: set model.quantization_bit to 4 or 8")
    if model.quantization_bit is not None and method.kind != "qlora":
        raise ValueError(
            f"model.quantization_bit is set but method.kind is '{method.kind}': quantized weights cannot be "
            "trained directly; use method.kind: qlora or remove model.quantization_bit"
        )
