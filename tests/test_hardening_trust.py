"""trust_remote_code is never taken from a run folder's saved config: chat/eval --run, export, the web UI and
a PPO reward model all refuse a folder that asks for it, telling the user to give the flag themselves."""

from __future__ import annotations

import shutil

import pytest
import yaml

from tunesmith.errors import TunesmithError


@pytest.fixture
def asking_run(tmp_path, reward_run):
    """A finished run folder whose saved config.yaml asks for trust_remote_code."""
    folder = tmp_path / "asking"
    shutil.copytree(reward_run, folder)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["model"]["trust_remote_code"] = True
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def test_loading_a_run_refuses_a_saved_trust_flag(asking_run):
    from tunesmith.infer.loader import load_engine
    from tunesmith.run_folder import read_run_config

    with pytest.raises(TunesmithError, match="trust-remote-code yourself"):
        load_engine(run=str(asking_run))
    with pytest.raises(TunesmithError, match="trust-remote-code yourself"):
        read_run_config(asking_run)
    assert read_run_config(asking_run, trust_remote_code=True).model.trust_remote_code is True


def test_commands_refuse_it_and_name_the_flag(asking_run, tmp_path, capsys):
    from tunesmith.cli import main

    assert main(["export", "--run", str(asking_run), "--out", str(tmp_path / "out")]) == 2
    assert "--trust-remote-code" in capsys.readouterr().err
    assert main(["eval", "--run", str(asking_run), "--task", "mmlu", "--data", str(tmp_path)]) == 2
    assert "trust-remote-code yourself" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_reward_model_folder_cannot_grant_it(asking_run):
    from transformers import AutoTokenizer

    from tunesmith.train.stages.ppo import load_reward_scorer

    tokenizer = AutoTokenizer.from_pretrained(str(asking_run))
    with pytest.raises(TunesmithError, match="model.trust_remote_code in this run's own config"):
        load_reward_scorer(asking_run, tokenizer, "cpu")


def test_the_web_ui_loads_saved_arguments_with_trust_off(asking_run, tmp_path, monkeypatch):
    from tunesmith.webui.context import WebuiContext
    from tunesmith.webui.train_actions import load_arguments

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    ctx = WebuiContext.create("runs", allowed_roots=[asking_run.parent.parent.parent])  # the session's temp
    loaded = load_arguments(ctx, str(asking_run / "config.yaml"))
    assert loaded["model"]["trust_remote_code"] is False
    with pytest.raises(TunesmithError, match="trust-remote-code"):
        ctx.chat.load(None, str(asking_run), "auto")
