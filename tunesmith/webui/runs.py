"""What the page reads from run folders: which runs and checkpoints exist, the loss curve, the progress."""

from __future__ import annotations

import re
from pathlib import Path

from tunesmith.run_folder import CHECKPOINT_PREFIX, checkpoint_step, has_weights, is_run_folder, read_metrics

_PROGRESS = re.compile(r"\|\s*(\d+)/(\d+)\s*\[")  # a tqdm progress bar, e.g. "training:  33%|██  | 1/3 [00:01<..."


def list_loadables(runs_dir: Path) -> list[tuple[str, str]]:
    """(label, path) of every finished run and every checkpoint under `runs_dir`, newest run first."""
    if not runs_dir.is_dir():
        return []
    runs = [p for p in runs_dir.iterdir() if p.is_dir() and is_run_folder(p)]
    choices = []
    for run in sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True):
        if has_weights(run):
            choices.append((run.name, str(run)))
        checkpoints = [c for c in run.glob(f"{CHECKPOINT_PREFIX}*") if c.is_dir() and has_weights(c)]
        for checkpoint in sorted(checkpoints, key=lambda c: checkpoint_step(c) or -1):
            choices.append((f"{run.name}/{checkpoint.name}", str(checkpoint)))
    return choices


def loss_points(run_dir: Path | None) -> list[dict]:
    """Chart rows {step, value, series} for the training loss and, where logged, the validation loss."""
    if run_dir is None:
        return []
    rows = []
    for record in read_metrics(run_dir):
        for series in ("loss", "eval_loss"):
            if series in record and "step" in record:
                rows.append({"step": record["step"], "loss": record[series], "series": series})
    return rows


def progress_of(log_text: str) -> tuple[int, int] | None:
    """(done, total) from the last progress bar in the log, if it shows one yet."""
    found = _PROGRESS.findall(log_text)
    if not found:
        return None
    done, total = found[-1]
    return int(done), int(total)
