"""Bad configs and bad data files stop the run with one line that names the problem and the fix."""

from __future__ import annotations

import json

import pytest
import yaml

from tunesmith.cli import main
from tunesmith.config import load_config


def write_config(tmp_path, config: dict):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


BASE = {"model": {"path": "unused"}, "data": {"datasets": ["identity"]}}


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_unknown_key_names_the_key_and_suggests_the_right_one(tmp_path, capsys):
    path = write_config(tmp_path, {**BASE, "train": {"learning_rate": 1e-4}})

    code, err = run_cli(capsys, "train", str(path))

    assert code == 2
    assert err.count("\n") == 1
    assert "unknown key 'train.learning_rate'" in err and "did you mean 'lr'" in err


def test_bad_value_names_the_field(tmp_path, capsys):
    path = write_config(tmp_path, {**BASE, "train": {"batch_size": "eight"}})

    code, err = run_cli(capsys, "train", str(path))

    assert code == 2 and err.count("\n") == 1
    assert "'train.batch_size'" in err and "'eight'" in err


def test_missing_required_group_is_named(tmp_path, capsys):
    path = write_config(tmp_path, {"model": {"path": "x"}})
    code, err = run_cli(capsys, "train", str(path))
    assert code == 2 and "'data' is required" in err


def test_overrides_are_typed_and_validated(tmp_path):
    path = write_config(tmp_path, BASE)

    config = load_config(path, ["train.lr=2e-4", "train.max_steps=3", "data.vars.name=Ada Lovelace"])

    assert config.train.lr == 2e-4 and config.train.max_steps == 3
    assert config.data.vars == {"name": "Ada Lovelace"}


def test_malformed_data_file_names_file_and_line(tmp_path, capsys, tiny_model_dir):
    (tmp_path / "broken.jsonl").write_text('{"instruction": "hi", "output": "hello"}\n{"instruction": \n')
    (tmp_path / "dataset_info.json").write_text(json.dumps({"broken": {"file_name": "broken.jsonl"}}))
    config = {"model": {"path": str(tiny_model_dir)},
              "data": {"datasets": ["broken"], "dataset_dir": str(tmp_path)},
              "train": {"output_dir": str(tmp_path / "run")}}

    code, err = run_cli(capsys, "train", str(write_config(tmp_path, config)))

    assert code == 2 and err.count("\n") == 1
    assert "broken.jsonl" in err and "line 2" in err


def test_missing_model_path_is_named(tmp_path, capsys, identity_dir):
    config = {"model": {"path": str(tmp_path / "nowhere")},
              "data": {"datasets": ["identity"], "dataset_dir": str(identity_dir)},
              "train": {"output_dir": str(tmp_path / "run")}}

    code, err = run_cli(capsys, "train", str(write_config(tmp_path, config)))

    assert code == 2 and "nowhere" in err and "does not exist" in err


@pytest.mark.parametrize("text", ["model: [unclosed", ""])
def test_unreadable_yaml(tmp_path, capsys, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, err = run_cli(capsys, "train", str(path))
    assert code == 2 and "bad.yaml" in err
