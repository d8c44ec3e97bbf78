"""The run folder's layout: the one place that knows its file names.

A run folder (train.output_dir) holds the config it was trained with, the metrics log, the loss plot, the
model card, the trained weights (an adapter, or a whole model) with their tokenizer, and checkpoint-STEP
folders. Train writes it; chat, export, eval, the API and the web UI read it through this module.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.errors import TunesmithError

CONFIG_FILE = "config.yaml"  # the validated config the run was trained with
METRICS_FILE = "metrics.jsonl"  # one JSON object per logged step
PLOT_FILE = "loss.png"
CARD_FILE = "README.md"
CHECKPOINT_PREFIX = "checkpoint-"  # checkpoint-STEP
ADAPTER_CONFIG = "adapter_config.json"  # peft writes it beside an adapter's weights
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MODEL_CONFIG = "config.json"  # transformers writes it beside a whole model's weights


def config_path(run_dir: Path) -> Path:
    return Path(run_dir) / CONFIG_FILE


def is_run_folder(folder: Path) -> bool:
    """Whether `folder` was made by `tunesmith train` (it holds the run's config)."""
    return config_path(folder).is_file()


def read_run_config(run_dir: Path, named_by: str = "--run", trust_remote_code: bool = False,
                    how: str = "pass --trust-remote-code"):
    """The RunConfig saved in `run_dir`; `named_by` is the option the user named the folder with. Its
    model.trust_remote_code is the caller's `trust_remote_code`, never the saved file's (config/trust.py);
    `how` tells the user how to give it when the folder needs it."""
    from tunesmith.config import load_saved_config
    from tunesmith.config.trust import saved_model_config

    if not is_run_folder(run_dir):
        raise TunesmithError(f"{run_dir} is not a tunesmith run folder (no {CONFIG_FILE}); check {named_by}")
    config = load_saved_config(config_path(run_dir))
    config.model = saved_model_config(config.model, config_path(run_dir), trust_remote_code, how)
    return config


def is_adapter(folder: Path) -> bool:
    """Whether `folder` holds adapter weights (applied on top of the base model) rather than a whole model."""
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def has_weights(folder: Path) -> bool:
    """Whether `folder` holds trained weights that load: an adapter or a whole model."""
    return is_adapter(folder) or (Path(folder) / MODEL_CONFIG).is_file()


def checkpoint_step(folder: Path) -> int | None:
    """STEP of a checkpoint-STEP folder; None for any other name."""
    suffix = Path(folder).name[len(CHECKPOINT_PREFIX):]
    return int(suffix) if Path(folder).name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit() else None


def read_metrics(run_dir: Path) -> list[dict]:
    """Every record of the run's metrics log, in order; none when nothing was logged yet. A last line cut
    short (the run was killed mid-write) is left out; a bad line before it means the file was damaged
    otherwise, and is an error naming the line."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise TunesmithError(f"{path}: line {number} is not a JSON record; fix or delete that line") from None
    return records


def final_metrics(run_dir: Path) -> dict:
    """The last logged value of each metric (steps may log different metrics), with the last step."""
    final: dict = {}
    for record in read_metrics(run_dir):
        final.update(record)
    return final
