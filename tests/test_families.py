"""The families people fine-tune, each as a tiny random model built from its real config (tests/families/
configs.yaml) with a real tokenizer of its kind: every method trains, a merged adapter predicts as base +
adapter does, `chat` answers as transformers' own greedy decoding does, `data preview` renders as transformers'
own chat-template rendering does."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml

from conftest import LF_DATA
from family_models import FAMILIES, build_family_model
from stage_harness import assistant, build, user
from tunesmith.cli import main

RECORDS = [[user("What is the capital of France?"), assistant("Paris is the capital of France.")],
           [user("Name a colour."), assistant("Blue, the colour of a clear sky at noon.")]]
needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory) -> tuple[str, Path]:
    return request.param, build_family_model(request.param, tmp_path_factory.mktemp(request.param))


@pytest.mark.parametrize("method", ["full", "freeze", pytest.param("qlora", marks=needs_bnb)])
def test_method_trains_exactly_its_weights(family, method, tmp_path):
    name, model_dir = family
    trainer, before, trainable = _build_with_snapshot(model_dir, tmp_path, method)

    trainer.run()

    _assert_trained(name, method, trainer, before, trainable, tmp_path)


def test_lora_trains_and_merges_into_base_plus_adapter(family, tmp_path):
    from tunesmith.config import dump_config
    from tunesmith.export.merge import merged_model
    from tunesmith.model.save import save_trained
    from tunesmith.train.run import CONFIG_FILE

    name, model_dir = family
    trainer, before, trainable = _build_with_snapshot(model_dir, tmp_path, "lora", lr=1e-2)
    trainer.run()
    _assert_trained(name, "lora", trainer, before, trainable, tmp_path)

    peft_model = trainer.accelerator.unwrap_model(trainer.model).eval()
    run_dir = tmp_path / "saved"
    template = trainer.template
    save_trained(peft_model, template.tokenizer, template.source, run_dir)
    (run_dir / CONFIG_FILE).write_text(dump_config(trainer.config), encoding="utf-8")
    ids = torch.tensor([template.prompt_ids(RECORDS[0][:1]) + template.tokenizer.encode("Paris")[-1:]])
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
        with peft_model.disable_adapter():
            untouched = peft_model(input_ids=ids).logits
        merged = merged_model(run_dir, trainer.config, progress=False).eval()(input_ids=ids).logits

    assert (expected - untouched).abs().max() > 1e-4  # the adapter changes the predictions
    torch.testing.assert_close(merged, expected, rtol=1e-4, atol=1e-5)


def _build_with_snapshot(model_dir: Path, tmp_path: Path, method: str, **train):
    """(trainer, parameters before training, names of the trainable ones) for two sft steps on RECORDS."""
    from tunesmith.data.records import Conversation

    records = [Conversation(messages) for messages in RECORDS]
    _, trainer, _, config, template = build(model_dir, tmp_path, records, {"kind": "sft"}, method, **train)
    trainer.config, trainer.template = config, template
    model = trainer.accelerator.unwrap_model(trainer.model)  # freeze: the harness trains the last 2 of 3 layers
    before = {n: p.detach().float().clone() for n, p in model.named_parameters()}
    return trainer, before, {n for n, p in model.named_parameters() if p.requires_grad}


def _assert_trained(name, method, trainer, before, trainable, tmp_path):
    """Two finite losses, the second lower; weights moved, and only trainable ones."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach().float(), before[n])}
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert changed and changed <= trainable, f"{name}: frozen weights moved: {sorted(changed - trainable)[:3]}"
    assert losses[1] < losses[0], f"{name} {method}: the second step did not lower the loss ({losses})"


def test_chat_answers_as_transformers_greedy_decoding(family, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.data.template_names import template_source

    name, model_dir = family
    prompt = [{"role": "user", "content": "Hello, who are you?"}]
    assert main(["chat", "--model", str(model_dir), "--template", FAMILIES[name]["template"], "--prompt",
                 prompt[0]["content"], "--temperature", "0", "--max-new-tokens", "6"]) == 0
    shown = capsys.readouterr().out.strip()

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    text = tokenizer.apply_chat_template(prompt, chat_template=template_source(tokenizer, FAMILIES[name]["template"]),
                                         tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    reply = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
    assert shown == reply


def test_data_preview_renders_as_transformers(family, tmp_path, capsys):
    from transformers import AutoTokenizer

    from tunesmith.config.schema import DataConfig
    from tunesmith.data.dataset import load_records
    from tunesmith.data.template_names import template_source

    name, model_dir = family
    config = {"model": {"path": str(model_dir), "template": FAMILIES[name]["template"]},
              "data": {"datasets": ["identity"], "dataset_dir": str(LF_DATA), "max_length": 512,
                       "vars": {"name": "Tuna", "author": "Acme"}, "cache_dir": str(tmp_path / "cache")}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["data", "preview", str(tmp_path / "run.yaml"), "--n", "1", "--json"]) == 0
    sample = json.loads(capsys.readouterr().out.splitlines()[0])

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    record = load_records(DataConfig(**config["data"]))[0]
    source = template_source(tokenizer, config["model"]["template"])
    text = tokenizer.apply_chat_template(record.messages, chat_template=source, tokenize=False)
    assert sample["input_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]
    # the trained tokens are the reply and what closes its turn: one span of the rendering, starting at the reply
    trained = tokenizer.decode([t for t in sample["labels"] if t != -100]).lstrip()
    reply = record.messages[-1]["content"]
    assert trained.startswith(reply) and text[text.index(reply):].startswith(trained)
