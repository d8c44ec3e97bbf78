"""Training stages, by the name used in `stage.kind`."""

from tunesmith.train.stages.pt import PtStage
from tunesmith.train.stages.sft import SftStage

STAGES = {"sft": SftStage, "pt": PtStage}


def get_stage(kind: str):
    return STAGES[kind]()
