"""Checkpoints written to a temporary folder and renamed into place, so every listed one is complete."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"


def save_checkpoint(run_dir: Path, step: int, model, optimizer, scheduler, state: dict) -> Path:
    """Weights (safetensors), optimizer and scheduler state, and the loop's position, under checkpoint-STEP."""
    final = Path(run_dir) / f"{CHECKPOINT_PREFIX}{step}"
    staging = Path(run_dir) / f".{CHECKPOINT_PREFIX}{step}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging, safe_serialization=True)
    torch.save(optimizer.state_dict(), staging / "optimizer.pt")
    torch.save(scheduler.state_dict(), staging / "scheduler.pt")
    (staging / STATE_FILE).write_text(json.dumps({"step": step, **state}, indent=2), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a folder is only named checkpoint-N once it is complete)."""
    found = [p for p in Path(run_dir).glob(f"{CHECKPOINT_PREFIX}*") if (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))
