"""DeepSpeed checkpoints carry a manifest signed with the user's key: a resume refuses a changed, added or
forged file before DeepSpeed unpickles anything. Checked with stand-ins for accelerate and the DeepSpeed
engine (their save / load calls), around a real model; test_distributed.py resumes real DeepSpeed runs."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
import torch

from tunesmith.errors import TunesmithError
from tunesmith.train.checkpoint import STATE_FILE, load_engine_checkpoint, save_engine_checkpoint


class OneProcess:
    """accelerate's Accelerator as save/load_engine_checkpoint use it, for a single process."""

    is_main_process, process_index, num_processes, distributed_type = True, 0, 1, "NO"

    def __init__(self, model):
        self.model = model

    def wait_for_everyone(self):
        pass

    def unwrap_model(self, engine):
        return self.model


class RecordingEngine:
    """DeepSpeed's engine as far as checkpoints go: writes a pickled shard, records whether it was loaded."""

    def __init__(self):
        self.loaded = False

    def save_checkpoint(self, folder, tag, save_latest):
        (Path(folder) / tag).mkdir()
        torch.save({"optimizer": {"step": 3}}, Path(folder) / tag / "mp_rank_00_model_states.pt")

    def load_checkpoint(self, folder, tag, **kwargs):
        self.loaded = True


@pytest.fixture
def checkpoint(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    scheduler = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD(model.parameters(), lr=0.1), lambda step: 1.0)
    accelerator = OneProcess(model)
    folder = save_engine_checkpoint(accelerator, tmp_path / "run", 2, RecordingEngine(), scheduler,
                                    {"stream_position": 4, "tokens_seen": 80})
    return folder, accelerator, scheduler


def resume(checkpoint_folder, accelerator, scheduler) -> RecordingEngine:
    engine = RecordingEngine()
    load_engine_checkpoint(accelerator, checkpoint_folder, engine, scheduler)
    return engine


def test_an_untouched_checkpoint_resumes(checkpoint, user_config_folder):
    folder, accelerator, scheduler = checkpoint
    record = json.loads((folder / STATE_FILE).read_text())
    assert "deepspeed/mp_rank_00_model_states.pt" in record["manifest"] and record["tokens_seen"] == 80
    assert resume(folder, accelerator, scheduler).loaded
    key = user_config_folder / "tunesmith" / "checkpoint-signing.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and not any(folder.rglob("*.key"))


@pytest.mark.parametrize("fault", ["changed shard", "added file", "removed file", "changed record", "no signature"])
def test_a_tampered_checkpoint_is_refused_before_loading(checkpoint, fault):
    folder, accelerator, scheduler = checkpoint
    shard = folder / "deepspeed" / "mp_rank_00_model_states.pt"
    record = json.loads((folder / STATE_FILE).read_text())
    if fault == "changed shard":
        data = shard.read_bytes()
        shard.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    elif fault == "added file":
        torch.save({"anything": 1}, folder / "deepspeed" / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    elif fault == "removed file":
        (folder / "scheduler.pt").unlink()
    elif fault == "changed record":
        (folder / STATE_FILE).write_text(json.dumps({**record, "stream_position": 0}))
    else:
        (folder / STATE_FILE).write_text(json.dumps({k: v for k, v in record.items() if k != "signature"}))
    engine = RecordingEngine()
    with pytest.raises(TunesmithError, match="manifest"):
        load_engine_checkpoint(accelerator, folder, engine, scheduler)
    assert not engine.loaded


def test_a_manifest_signed_with_another_key_is_refused(checkpoint, tmp_path, monkeypatch):
    """A crafted folder whose maker rebuilt the manifest and signed it with their own key."""
    from tunesmith.train.manifest import signed

    folder, accelerator, scheduler = checkpoint
    forged = tmp_path / "forged"
    shutil.copytree(folder, forged)
    torch.save({"payload": 1}, forged / "deepspeed" / "mp_rank_00_model_states.pt")
    record = {k: v for k, v in json.loads((folder / STATE_FILE).read_text()).items()
              if k not in ("manifest", "signature")}
    with monkeypatch.context() as attacker:
        attacker.setenv("XDG_CONFIG_HOME", str(tmp_path / "attacker"))
        (forged / STATE_FILE).write_text(json.dumps(signed(record, forged, STATE_FILE)))
    engine = RecordingEngine()
    with pytest.raises(TunesmithError, match="not signed by this user"):
        load_engine_checkpoint(accelerator, forged, engine, scheduler)
    assert not engine.loaded
