"""How replies are sampled: one group, used by the rollouts of ppo and grpo and by eval's predict task."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from pydantic import BeforeValidator, Field, model_validator

from tunesmith.config.group import Group


class SamplingConfig(Group):
    max_new_tokens: int = Field(256, ge=1, description="Longest reply, in tokens; longer ones are cut.")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature; 0 decodes greedily.")
    top_p: float = Field(
        1.0, gt=0, le=1, description="Sample from the smallest set of tokens whose probabilities add up to "
        "top_p; 1 keeps all."
    )
    top_k: int = Field(0, ge=0, description="Sample from the k likeliest tokens; 0: no limit.")
    repetition_penalty: float = Field(
        1.0, gt=0, description="transformers' multiplicative penalty on every token seen so far; 1: none."
    )
    presence_penalty: float = Field(
        0.0, ge=-2, le=2, description="OpenAI's: subtracted once from every token generated so far."
    )
    frequency_penalty: float = Field(
        0.0, ge=-2, le=2, description="OpenAI's: subtracted per occurrence of a token generated so far."
    )
    seed: int | None = Field(
        None, ge=0, description="Seed of the sampling; null: from train.seed when training, else random."
    )


def sampling_field(group: type[SamplingConfig], description: str, **defaults):
    """The annotation of a sampling group whose defaults differ from the group's own (eval decodes greedily):
    keys left out take these defaults, whether the whole group is left out or only some of its keys."""
    def fill(value):
        return {**defaults, **value} if isinstance(value, dict) else value

    return Annotated[group, BeforeValidator(fill),
                     Field(default_factory=partial(group, **defaults), description=description)]


class RolloutSampling(SamplingConfig):
    """Sampling of ppo / grpo rollouts: the loss treats each reply as drawn from the policy's own distribution
    (at `temperature`), so nothing may reshape that distribution behind its back."""

    @model_validator(mode="after")
    def _policy_distribution(self) -> "RolloutSampling":
        if self.temperature == 0:
            raise ValueError("stage.sampling.temperature is 0: rollouts must be sampled; use a temperature > 0")
        if self.repetition_penalty != 1 or self.presence_penalty or self.frequency_penalty:
            raise ValueError("stage.sampling: penalties move the rollouts off the policy's distribution, which "
                             "the loss assumes; leave repetition_penalty 1 and presence/frequency_penalty 0")
        if self.seed is not None:
            raise ValueError("stage.sampling.seed: rollouts draw their streams from train.seed; set that instead")
        return self
