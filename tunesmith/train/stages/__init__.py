"""Training stages, by the name used in `stage.kind`."""

from tunesmith.train.stages.dpo import DpoStage
from tunesmith.train.stages.grpo import GrpoStage
from tunesmith.train.stages.kto import KtoStage
from tunesmith.train.stages.ppo import PpoStage
from tunesmith.train.stages.pt import PtStage
from tunesmith.train.stages.rm import RmStage
from tunesmith.train.stages.sft import SftStage

STAGES = {"sft": SftStage, "pt": PtStage, "rm": RmStage, "dpo": DpoStage, "kto": KtoStage, "ppo": PpoStage,
          "grpo": GrpoStage}


def get_stage(kind: str, config=None):
    """The stage named `kind`, with its stage settings (the defaults of that kind when none are given)."""
    if config is None:
        from tunesmith.config.stage_kinds import stage_defaults

        config = stage_defaults(kind)  # defaults, without the kind's checks (e.g. ppo's reward model)
    return STAGES[kind](config)
