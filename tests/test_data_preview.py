"""`tunesmith data preview`: from a tokenizer-only folder, the samples training would see."""

from __future__ import annotations

import json
import shutil

import yaml

from conftest import LF_DATA
from tunesmith.cli import main


def write_config(tmp_path, smollm2_dir):
    tokenizer_only = tmp_path / "tokenizer"
    tokenizer_only.mkdir()
    for path in smollm2_dir.iterdir():
        if path.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(path, tokenizer_only / path.name)
    assert not list(tokenizer_only.glob("*.safetensors"))
    config = {"model": {"path": str(tokenizer_only)},
              "data": {"datasets": ["identity"], "dataset_dir": str(LF_DATA), "max_length": 64,
                       "vars": {"name": "Tuna", "author": "Acme"}, "cache_dir": str(tmp_path / "cache")}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, tokenizer_only


def test_preview_json_and_text(tmp_path, smollm2_dir, capsys):
    from transformers import AutoTokenizer

    from tunesmith.config.schema import DataConfig
    from tunesmith.data.dataset import load_records
    from tunesmith.data.template import ChatTemplate

    config, tokenizer_dir = write_config(tmp_path, smollm2_dir)
    assert main(["data", "preview", str(config), "--n", "2", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    template = ChatTemplate(AutoTokenizer.from_pretrained(tokenizer_dir))
    records = load_records(DataConfig(datasets=["identity"], dataset_dir=str(LF_DATA),
                                      vars={"name": "Tuna", "author": "Acme"}))
    every = [template.encode(record) for record in records]
    kept = [e for e in every if any(label != -100 for label in e.labels[:64])]
    expected = kept[:2]
    assert lines == [{"input_ids": e.input_ids[:64], "labels": e.labels[:64]} for e in expected]

    assert main(["data", "preview", str(config), "--n", "1"]) == 0
    out = capsys.readouterr().out
    reply = records[0].messages[-1]["content"]
    assert f"[[{reply}<|im_end|>\n]]" in out
    truncated = sum(1 for e in every if len(e.input_ids) > 64)
    assert f"samples {len(kept)}," in out and "p90" in out
    assert f"{truncated} truncated, {len(every) - len(kept)} dropped" in out
