"""End to end: `tunesmith train` writes a complete run folder and `tunesmith chat --run` talks to it."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import SMOLLM2, tiny_run_config
from tunesmith.cli import main


def train_cli(tmp_path, config: dict, *overrides: str) -> int:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return main(["train", str(path), *overrides])


def test_run_folder_holds_everything_a_run_promises(tmp_path, tiny_model_dir, identity_dir):
    out = tmp_path / "run"
    assert train_cli(tmp_path, tiny_run_config(tiny_model_dir, identity_dir, out)) == 0

    for name in ("config.yaml", "metrics.jsonl", "loss.png", "adapter_model.safetensors",
                 "adapter_config.json", "tokenizer_config.json"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all({"loss", "lr", "tokens"} <= set(r) for r in records)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["vars"] == {"name": "Tuna", "author": "Acme"}


def test_vars_override_changes_the_trained_identity(tmp_path, tiny_model_dir, identity_dir):
    from tunesmith.config import load_config
    from tunesmith.data.dataset import load_records

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_run_config(tiny_model_dir, identity_dir, tmp_path / "run")))
    config = load_config(path, ["data.vars.name=Ada", "data.vars.author=Lovelace Labs"])

    replies = [record.messages[-1]["content"] for record in load_records(config.data)]

    assert len(replies) == 91
    assert any("Ada" in reply and "Lovelace Labs" in reply for reply in replies)
    assert not any("{{name}}" in reply or "{{author}}" in reply for reply in replies)


def test_refuses_to_overwrite_an_earlier_run(tmp_path, tiny_model_dir, identity_dir, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("{}\n")
    code = train_cli(tmp_path, tiny_run_config(tiny_model_dir, identity_dir, out))
    assert code == 2 and "train.overwrite" in capsys.readouterr().err


def test_smollm2_trains_and_chats_from_its_run_folder(tmp_path, identity_dir, capsys):
    """The real model: two LoRA steps from the GGUF package, then an answer through `chat --run`."""
    config = tiny_run_config("unused", identity_dir, tmp_path / "run",
                             model=SMOLLM2, train={"max_steps": 2, "batch_size": 2},
                             data={"max_length": 64, "max_samples": 8})
    assert train_cli(tmp_path, config) == 0
    capsys.readouterr()

    code = main(["chat", "--run", str(tmp_path / "run"), "--prompt", "Who are you?",
                 "--temperature", "0", "--max-new-tokens", "8"])

    assert code == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("method", ["full", "freeze"])
def test_full_and_freeze_runs_chat_from_their_folder(tmp_path, tiny_model_dir, identity_dir, capsys, method):
    out = tmp_path / "run"
    config = tiny_run_config(tiny_model_dir, identity_dir, out, method={"kind": method},
                             train={"max_steps": 1})
    assert train_cli(tmp_path, config) == 0
    assert (out / "model.safetensors").is_file()
    capsys.readouterr()

    assert main(["chat", "--run", str(out), "--prompt", "hi", "--temperature", "0", "--max-new-tokens", "3"]) == 0
