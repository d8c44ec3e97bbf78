"""Faults injected into the data cache, the tokenizing workers, metrics.jsonl and the final save: each is
detected with a clear message, and none loses finished work."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading

import numpy as np
import pytest

from conftest import tiny_run_config
from tunesmith.data.cache import ShardCache
from tunesmith.data.encoding import SHARD_SIZE, encode_records
from tunesmith.data.records import Encoded
from tunesmith.errors import TunesmithError

VOCAB = 50
RECORDS = list(range(4 * SHARD_SIZE))  # four shards of plain integers


def encode_many(records: list) -> list[Encoded]:
    """A stand-in encoder: record r becomes ids [r % VOCAB, (r + 1) % VOCAB], the second a target."""
    return [Encoded([r % VOCAB, (r + 1) % VOCAB], [-100, (r + 1) % VOCAB], {"r": r}) for r in records]


def encoded_by_a_worker_that_dies(parent: int, dying_shard: int):
    """encode_many, except that the worker given shard `dying_shard` kills itself half-way through it."""
    def encode(records):
        if os.getpid() != parent and records[0] == dying_shard * SHARD_SIZE:
            os.kill(os.getpid(), signal.SIGKILL)
        return encode_many(records)
    return encode


def finishes(work, timeout_s: float = 120):
    """Run `work` on a thread; what it returned or raised, or a failure if it hangs."""
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(result=_catch(work)), daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), "hung instead of reporting the fault"
    return outcome["result"]


def _catch(work):
    try:
        return work()
    except Exception as err:  # handed to the test to check
        return err


def test_a_killed_tokenizer_worker_is_a_clear_error_and_finished_shards_stay(tmp_path):
    cache = ShardCache(tmp_path / "cache", VOCAB)
    dying = encoded_by_a_worker_that_dies(os.getpid(), dying_shard=3)  # worker 1 takes shards 1 and 3
    error = finishes(lambda: encode_records(RECORDS, dying, 64, 2, cache))
    assert isinstance(error, TunesmithError) and "killed by signal 9" in str(error)
    assert cache.has(1) and not cache.has(3) and cache.manifest() is None
    encoded = []
    samples, _ = encode_records(RECORDS, lambda records: encoded.append(records[0]) or encode_many(records), 64, 1,
                                cache)
    assert [s.input_ids for s in samples] == [s.input_ids for s in encode_many(RECORDS)]
    assert 1 not in [first // SHARD_SIZE for first in encoded]  # the finished shard was not tokenized again


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _out_of_vocabulary(path):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["ids"][3] = VOCAB + 7
    np.savez(path, **arrays)


@pytest.mark.parametrize("damage", [_truncate, _out_of_vocabulary])
def test_a_damaged_cache_shard_is_detected_and_rebuilt(tmp_path, capsys, damage):
    from tunesmith.config.schema import DataConfig
    from tunesmith.data.dataset import prepare_data

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    rows = [{"instruction": f"say {i}", "input": "", "output": f"{i}"} for i in range(30)]
    (data_dir / "rows.json").write_text(json.dumps(rows))
    (data_dir / "dataset_info.json").write_text(json.dumps({"rows": {"file_name": "rows.json"}}))
    data = DataConfig(datasets=["rows"], dataset_dir=str(data_dir), cache_dir=str(tmp_path / "cache"))

    def encode(records):
        return [Encoded([i % VOCAB for i in range(len(r.messages[0]["content"]) + 2)], [-100, 1] + [-100] *
                        len(r.messages[0]["content"]), {}) for r in records]

    clean = prepare_data(data, encode, "conversation", 0, fingerprint="f", vocab_size=VOCAB)
    shard = next((tmp_path / "cache").rglob("shard-00000.npz"))
    damage(shard)
    capsys.readouterr()
    rebuilt = prepare_data(data, encode, "conversation", 0, fingerprint="f", vocab_size=VOCAB)
    assert "rebuilding it from the data" in capsys.readouterr().out
    assert [s.input_ids for s in rebuilt.train] == [s.input_ids for s in clean.train]
    again = prepare_data(data, encode, "conversation", 0, fingerprint="f", vocab_size=VOCAB)
    assert again.counts.get("cached") == 1  # the rebuilt cache is whole again


def test_a_half_written_metrics_line_breaks_neither_the_chart_nor_a_resume(tmp_path, tiny_model_dir, identity_dir):
    from tunesmith.config import validate_config
    from tunesmith.train.metrics import read_metrics
    from tunesmith.train.run import train
    from tunesmith.webui.runs import loss_points

    out = tmp_path / "run"
    settings = tiny_run_config(tiny_model_dir, identity_dir, out, train={"max_steps": 2, "save_steps": 1})
    settings["data"]["cache_dir"] = str(tmp_path / "cache")
    train(validate_config(settings))
    with (out / "metrics.jsonl").open("a") as metrics:
        metrics.write('{"step": 3, "loss": 2.0')  # killed mid-write
    assert [p["step"] for p in loss_points(out)] == [1, 2]
    settings["train"].update(max_steps=3, resume="auto")
    train(validate_config(settings))
    assert [r["step"] for r in read_metrics(out) if "loss" in r] == [1, 2, 3]
    assert all(json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines())
    (out / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(TunesmithError, match="line 2"):
        read_metrics(out)


class KilledTokenizer:
    """A tokenizer whose saving is cut short by a kill, after the weights were written."""

    chat_template = None

    def save_pretrained(self, folder):
        (folder / "tokenizer.json").write_text("{")
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_kill_during_the_final_save_leaves_the_folder_as_it_was(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.model.save import save_trained

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("earlier: state\n")
    saving = multiprocessing.get_context("fork").Process(
        target=save_trained, args=(model, KilledTokenizer(), "{{ messages }}", run))
    saving.start()
    saving.join(120)
    assert saving.exitcode == -signal.SIGKILL
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == ["config.yaml"]
    save_trained(model, AutoTokenizer.from_pretrained(tiny_model_dir), "{{ messages }}", run)
    assert (run / "config.json").is_file() and (run / "model.safetensors").is_file()
    assert not any(p.name.startswith(".") for p in run.iterdir())  # the killed save's staging is gone too
    assert AutoModelForCausalLM.from_pretrained(run).state_dict().keys() == model.state_dict().keys()
