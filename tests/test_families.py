"""The families people fine-tune, each as a tiny random model built from its real config (tests/families/
configs.yaml) with a real tokenizer of its kind: every method trains, a merged adapter predicts as base +
adapter does, `chat` answers as transformers' own greedy decoding does, `data preview` renders as transformers'
own chat-template rendering does."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Family:
    name: str
    model_dir: Path
    tokenizer: object  # loaded once: a 150k-entry tokenizer takes seconds to load on a small CPU


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory) -> Family:
    from tunesmith.config.schema import ModelConfig
    from tunesmith.model.load import load_tokenizer

    model_dir = build_family_model(request.param, tmp_path_factory.mktemp(request.param))
    return Family(request.param, model_dir, load_tokenizer(ModelConfig(path=str(model_dir))))


@pytest.mark.parametrize("method", ["full", "freeze", pytest.param("qlora", marks=needs_bnb)])
def test_method_trains_exactly_its_weights(family, method, tmp_path, monkeypatch):
    run = TwoSteps(family, tmp_path, method, monkeypatch)

    run.trainer.run()

    run.assert_trained()


def test_lora_trains_and_merges_into_base_plus_adapter(family, tmp_path, monkeypatch):
    from tunesmith.config import dump_config
    from tunesmith.export.merge import merged_model
    from tunesmith.model.save import save_trained
    from tunesmith.train.run import CONFIG_FILE

    run = TwoSteps(family, tmp_path, "lora", monkeypatch, lr=1e-2)
    run.trainer.run()
    run.assert_trained()

    peft_model = run.trainer.accelerator.unwrap_model(run.trainer.model).eval()
    template = run.template
    save_trained(peft_model, template.tokenizer, template.source, tmp_path / "saved")
    (tmp_path / "saved" / CONFIG_FILE).write_text(dump_config(run.config), encoding="utf-8")
    ids = torch.tensor([template.prompt_ids(RECORDS[0][:1]) + template.tokenizer.encode("Paris")[-1:]])
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
        with peft_model.disable_adapter():
            untouched = peft_model(input_ids=ids).logits
        merged = merged_model(tmp_path / "saved", run.config, progress=False).eval()(input_ids=ids).logits

    assert (expected - untouched).abs().max() > 1e-4  # the adapter changes the predictions
    torch.testing.assert_close(merged, expected, rtol=1e-4, atol=1e-5)


class TwoSteps:
    """A trainer for two sft steps of `method` on RECORDS (the harness's freeze trains the last 2 of 3 layers),
    with the parameters before training and the names of the trainable ones."""

    def __init__(self, family: Family, tmp_path: Path, method: str, monkeypatch, **train):
        from tunesmith.data.records import Conversation
        from tunesmith.model import load

        monkeypatch.setattr(load, "load_tokenizer", lambda config, source=None: family.tokenizer)
        records = [Conversation(messages) for messages in RECORDS]
        _, self.trainer, _, self.config, self.template = build(family.model_dir, tmp_path, records, {"kind": "sft"},
                                                                method, **train)
        self.label, self.metrics = f"{family.name} {method}", tmp_path / "run" / "metrics.jsonl"
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        self.before = {n: p.detach().float().clone() for n, p in model.named_parameters()}
        self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}

    def assert_trained(self) -> None:
        """Two finite losses, the second lower; weights moved, and only trainable ones."""
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        losses = [json.loads(line)["loss"] for line in self.metrics.read_text().splitlines()]
        changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach().float(), self.before[n])}
        assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
        moved_frozen = sorted(changed - self.trainable)[:3]
        assert changed and not moved_frozen, f"{self.label}: frozen weights moved: {moved_frozen}"
        assert losses[1] < losses[0], f"{self.label}: the second step did not lower the loss ({losses})"


def test_chat_answers_as_transformers_greedy_decoding(family, capsys):
    from transformers import AutoModelForCausalLM

    from tunesmith.data.template_names import template_source

    name, model_dir, tokenizer = family.name, family.model_dir, family.tokenizer
    prompt = [{"role": "user", "content": "Hello, who are you?"}]
    assert main(["chat", "--model", str(model_dir), "--template", FAMILIES[name]["template"], "--prompt",
                 prompt[0]["content"], "--temperature", "0", "--max-new-tokens", "6"]) == 0
    shown = capsys.readouterr().out.strip()

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    source = template_source(tokenizer, FAMILIES[name]["template"])
    text = tokenizer.apply_chat_template(prompt, chat_template=source, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    reply = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
    assert shown == reply


def test_data_preview_renders_as_transformers(family, tmp_path, capsys):
    from tunesmith.config.schema import DataConfig
    from tunesmith.data.dataset import load_records
    from tunesmith.data.template_names import template_source

    name, model_dir, tokenizer = family.name, family.model_dir, family.tokenizer
    same = next(other for other, spec in FAMILIES.items()
                if (spec["tokenizer"], spec["template"]) == (FAMILIES[name]["tokenizer"], FAMILIES[name]["template"]))
    if same != name:  # preview reads only the tokenizer and the template, never the weights
        pytest.skip(f"{name} previews as {same} does: the same tokenizer and template")
    config = {"model": {"path": str(model_dir), "template": FAMILIES[name]["template"]},
              "data": {"datasets": ["identity"], "dataset_dir": str(LF_DATA), "max_length": 512, "max_samples": 2,
                       "vars": {"name": "Tuna", "author": "Acme"}, "cache_dir": str(tmp_path / "cache")}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["data", "preview", str(tmp_path / "run.yaml"), "--n", "1", "--json"]) == 0
    sample = json.loads(capsys.readouterr().out.splitlines()[0])

    record = load_records(DataConfig(**config["data"]))[0]
    source = template_source(tokenizer, config["model"]["template"])
    text = tokenizer.apply_chat_template(record.messages, chat_template=source, tokenize=False)
    assert sample["input_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]
    # the trained tokens are the reply and what closes its turn: one span of the rendering, starting at the reply
    trained = tokenizer.decode([t for t in sample["labels"] if t != -100]).lstrip()
    reply = record.messages[-1]["content"]
    assert trained.startswith(reply) and text[text.index(reply):].startswith(trained)
