"""`stage`: what the training optimises, a tagged union on `kind`. Each kind holds only its own settings, so a
setting of another kind (stage.preference_loss under kind sft) is an error naming the key."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, TypeAdapter, model_validator

from tunesmith.config.group import Group
from tunesmith.config.path_marker import PathField
from tunesmith.config.sampling import RolloutSampling, sampling_field

PPO_SAMPLING = sampling_field(RolloutSampling, "How rollouts are sampled.", max_new_tokens=64)


class SftStageConfig(Group):
    kind: Literal["sft"] = Field("sft", description="Supervised fine-tuning on conversations.")


class PtStageConfig(Group):
    kind: Literal["pt"] = Field("pt", description="Continued pre-training on text.")


class RmStageConfig(Group):
    kind: Literal["rm"] = Field("rm", description="A reward model (value head) trained on preference pairs.")


class ReferenceAnchoredStage(Group):
    """The settings of stages that hold the policy near a frozen reference model (dpo, kto)."""

    kind: Literal["dpo", "kto"]
    beta: float = Field(
        0.1, gt=0, description="Strength of the KL anchor to the reference (dpo's simpo: the reward scale)."
    )
    precompute_ref: bool = Field(
        False, description="Compute reference log-probs once before training (dropout off), then drop them "
        "from every step."
    )


class DpoStageConfig(ReferenceAnchoredStage):
    kind: Literal["dpo"] = Field(
        "dpo", description="Direct preference optimisation on chosen/rejected pairs (and IPO, hinge, ORPO, SimPO)."
    )
    preference_loss: Literal["sigmoid", "ipo", "hinge", "orpo", "simpo"] = Field(
        "sigmoid", description="Which loss turns the chosen/rejected margin into a loss: sigmoid (DPO), ipo, "
        "hinge, orpo, simpo. orpo and simpo need no reference model."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="sigmoid: assumed rate of flipped labels.")
    simpo_gamma: float = Field(0.5, ge=0, description="simpo: target reward margin gamma.")
    orpo_lambda: float = Field(0.1, gt=0, description="orpo: weight of the odds-ratio term beside the chosen NLL.")


class KtoStageConfig(ReferenceAnchoredStage):
    kind: Literal["kto"] = Field("kto", description="KTO on examples marked desirable or undesirable.")
    desirable_weight: float = Field(1.0, gt=0, description="Weight of desirable examples.")
    undesirable_weight: float = Field(1.0, gt=0, description="Weight of undesirable examples.")


class PpoStageConfig(Group):
    kind: Literal["ppo"] = Field("ppo", description="PPO against a reward model, with a value head.")
    reward_model: Annotated[str | None, PathField("read")] = Field(
        None, description="Run folder of a finished `stage.kind: rm` run (weights or adapter + value_head.safetensors)."
    )
    sampling: PPO_SAMPLING
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

    @model_validator(mode="after")
    def _needs_reward_model(self) -> "PpoStageConfig":
        if not self.reward_model:
            raise ValueError("stage.reward_model is required for kind ppo; point it at a finished rm run folder")
        return self


class GrpoStageConfig(Group):
    kind: Literal["grpo"] = Field("grpo", description="Group-relative policy optimisation with reward functions.")
    sampling: RolloutSampling = Field(
        default_factory=RolloutSampling, description="How completions are sampled; longer ones are cut (truncated)."
    )
    num_generations: int = Field(
        8, ge=2, description="Completions sampled per prompt (the group size G); train.batch_size counts "
        "completions, so it must be a multiple of G."
    )
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
    token_averaging: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = Field(
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
    rollout_backend: Literal["hf", "vllm"] = Field(
        "hf", description="What samples the completions. hf: the policy itself, with tunesmith's batched decoder "
        "(CPU or GPU); vllm: a vLLM engine on the same GPU, in the same process (pip install 'tunesmith[vllm]'), "
        "given the policy's weights (LoRA folded in) before each rollout, i.e. after every update."
    )
    vllm_gpu_memory: float = Field(
        0.3, gt=0, lt=1, description="rollout_backend vllm: the share of the GPU's memory vLLM takes (weights "
        "and KV cache); the rest is left to training."
    )

    @model_validator(mode="after")
    def _check_rewards(self) -> "GrpoStageConfig":
        if not self.reward_funcs:
            raise ValueError("stage.reward_funcs is empty; name at least one reward, e.g. [accuracy]")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.reward_funcs):
            raise ValueError(f"stage.reward_weights has {len(self.reward_weights)} weights for "
                             f"{len(self.reward_funcs)} reward_funcs; give one weight per function")
        if "length" in self.reward_funcs and self.overlong_buffer > self.sampling.max_new_tokens:
            raise ValueError("stage.overlong_buffer is larger than sampling.max_new_tokens; make it smaller")
        return self



STAGE_KINDS: dict[str, type[Group]] = {
    "sft": SftStageConfig, "pt": PtStageConfig, "rm": RmStageConfig, "dpo": DpoStageConfig, "kto": KtoStageConfig,
    "ppo": PpoStageConfig, "grpo": GrpoStageConfig,
}
StageConfig = Annotated[Union[tuple(STAGE_KINDS.values())], Field(discriminator="kind")]
DEFAULT_STAGE = "sft"
_ADAPTER: TypeAdapter = TypeAdapter(StageConfig)


def parse_stage(settings: dict):
    """The stage group for `settings` (kind defaults to sft), validated."""
    return _ADAPTER.validate_python({"kind": DEFAULT_STAGE, **settings})


def stage_defaults(kind: str):
    """The defaults of stage `kind`, without its checks (ppo's reward model is left unset)."""
    return STAGE_KINDS[kind].model_construct()
