"""A run killed with SIGKILL and resumed continues the same trajectory; a kill mid-save loses nothing listed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, tiny_run_config

from tunesmith.train.checkpoint import STATE_FILE, list_checkpoints
from tunesmith.train.metrics import read_metrics


def _write_config(tmp_path: Path, name: str, config: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _launch(config_path: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "tunesmith", "train", str(config_path), *overrides],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(process: subprocess.Popen) -> None:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output.decode(errors="replace")[-3000:]


def _kill_when(process: subprocess.Popen, ready, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "timed out waiting to kill the run"
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _run_config(tiny_model_dir, identity_dir, out_dir, **train):
    # Dropout and NEFTune both draw random numbers every step, so RNG restoration is exercised too.
    return tiny_run_config(tiny_model_dir, identity_dir, out_dir,
                           method={"kind": "lora", "rank": 4, "alpha": 8, "dropout": 0.1},
                           train={"max_steps": 12, "scheduler": "cosine", "warmup_steps": 2, "neftune_alpha": 5.0,
                                  "precision": "fp32", **train})


def test_sigkill_and_resume_match_an_uninterrupted_run(tiny_model_dir, identity_dir, tmp_path):
    from safetensors.torch import load_file

    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    straight = _launch(_write_config(tmp_path, "straight", _run_config(tiny_model_dir, identity_dir, straight_dir)))
    killed_config = _write_config(tmp_path, "killed",
                                  _run_config(tiny_model_dir, identity_dir, killed_dir, save_steps=4, resume="auto"))
    killed = _launch(killed_config)
    _kill_when(killed, lambda: (killed_dir / "checkpoint-4" / STATE_FILE).is_file())
    _finish(straight)
    assert not (killed_dir / "adapter_model.safetensors").exists(), "the run finished before the kill"
    assert [p.name for p in list_checkpoints(killed_dir)][-1] in {"checkpoint-4", "checkpoint-8"}

    _finish(_launch(killed_config))

    expected = [(r["step"], r["loss"], r["lr"]) for r in read_metrics(straight_dir) if "loss" in r]
    resumed = [(r["step"], r["loss"], r["lr"]) for r in read_metrics(killed_dir) if "loss" in r]
    assert [step for step, _, _ in expected] == list(range(1, 13))
    assert resumed == expected  # exact float equality, step for step
    final_expected = load_file(straight_dir / "adapter_model.safetensors")
    final_resumed = load_file(killed_dir / "adapter_model.safetensors")
    assert final_expected.keys() == final_resumed.keys()
    for name, tensor in final_expected.items():
        assert tensor.equal(final_resumed[name]), name


class Killed(BaseException):
    """Stands in for SIGKILL at a chosen point: a BaseException, so no `except Exception` cleans up after it."""


def test_kill_during_save_leaves_the_newest_listed_checkpoint_loadable(tiny_model_dir, identity_dir, tmp_path,
                                                                     monkeypatch):
    from tunesmith.config.load import validate_config
    from tunesmith.model.load import load_model
    from tunesmith.model.methods import apply_method
    from tunesmith.train import checkpoint
    from tunesmith.train.checkpoint import load_checkpoint
    from tunesmith.train.optim import build_optimizer, build_scheduler
    from tunesmith.train.run import train

    saves = []

    def publish_or_die(*args, **kwargs):  # the third save dies once its files are written, before its rename
        saves.append(len(saves) + 1)
        if len(saves) == 3:
            raise Killed
        return real_publish(*args, **kwargs)

    real_publish = checkpoint._publish
    monkeypatch.setattr(checkpoint, "_publish", publish_or_die)
    raw = tiny_run_config(tiny_model_dir, identity_dir, tmp_path / "run", method={"kind": "full"},
                          train={"max_steps": 10, "save_steps": 1, "save_total_limit": 2})
    config = validate_config(raw)
    with pytest.raises(Killed):
        train(config)
    run_dir = tmp_path / "run"
    assert [p.name for p in run_dir.glob(".checkpoint-*.tmp")] == [".checkpoint-3.tmp"]  # the half-written one
    assert [p.name for p in list_checkpoints(run_dir)] == ["checkpoint-1", "checkpoint-2"]

    newest = list_checkpoints(run_dir)[-1]
    model = apply_method(load_model(config.model), config.method)
    optimizer = build_optimizer(model, config.train)
    scheduler = build_scheduler(optimizer, config.train, config.train.max_steps)
    state = load_checkpoint(newest, model, optimizer, scheduler)
    assert state["step"] == 2
    assert json.loads((newest / STATE_FILE).read_text())["stream_position"] == state["step"]
    assert len(optimizer.state) == sum(1 for p in model.parameters() if p.requires_grad)
