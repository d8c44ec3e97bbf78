"""Export of a run to a Hugging Face folder: merge, shards, tokenizer + template, generation config, card,
and the folder rules (refuse a non-empty folder, never leave a half-written one)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import tiny_run_config

PROBE = "Hello! Who made you? 12 + 30 = 42."


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    """A LoRA run and a full run of 3 steps each on the tiny model."""
    from conftest import LF_DATA
    from tunesmith.config import validate_config
    from tunesmith.train.run import train

    root = tmp_path_factory.mktemp("export-runs")
    shutil.copy(LF_DATA / "identity.json", root / "identity.json")
    (root / "dataset_info.json").write_text(json.dumps({"identity": {"file_name": "identity.json"}}))
    made = {}
    for kind in ("lora", "full"):
        raw = tiny_run_config(tiny_model_dir, root, root / kind, method={"kind": kind}, train={"max_steps": 3})
        made[kind] = train(validate_config(raw))
    return made


def _export(run_dir: Path, out: Path, **settings):
    from tunesmith.config.schema import ExportConfig
    from tunesmith.export.pipeline import export_run

    return export_run(run_dir, ExportConfig(out=str(out), **settings), progress=False)


def _logits(model, tokenizer, text: str = PROBE):
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


@pytest.fixture(scope="module")
def lora_export(runs, tmp_path_factory):
    return _export(runs["lora"], tmp_path_factory.mktemp("lora-export") / "out", dtype="fp32").folder


def test_merged_logits_equal_base_plus_adapter(runs, lora_export, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(lora_export)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    base_logits = _logits(base, tokenizer)
    with_adapter = PeftModel.from_pretrained(base, str(runs["lora"])).eval()
    merged = AutoModelForCausalLM.from_pretrained(lora_export, dtype=torch.float32)
    expected = _logits(with_adapter, tokenizer)
    assert not torch.allclose(expected, base_logits), "the adapter changed nothing; the test would prove nothing"
    torch.testing.assert_close(_logits(merged, tokenizer), expected, rtol=1e-4, atol=1e-6)
    assert not any("lora" in name for name in merged.state_dict())


def test_reward_model_exports_with_its_score_head(reward_run, tmp_path):
    """The merged reward model scores exactly as the rm run does; GGUF, which would drop the head, is refused."""
    from transformers import AutoTokenizer

    from tunesmith.config import load_config
    from tunesmith.data.collator import pad_batch
    from tunesmith.data.records import Encoded
    from tunesmith.data.template import IGNORE, ChatTemplate
    from tunesmith.errors import TunesmithError
    from tunesmith.model.value_head import load_scorer
    from tunesmith.train.stages.preference import encode_reply
    from tunesmith.train.stages.rm import last_reply_values

    out = _export(reward_run, tmp_path / "rm-export", dtype="fp32").folder
    base = load_config(reward_run / "config.yaml").model
    template = ChatTemplate(AutoTokenizer.from_pretrained(out))
    prompt = [{"role": "user", "content": "Q1?"}]
    samples = []
    for reply in ("good", "bad", "a longer answer"):
        ids, start = encode_reply(template, prompt, {"role": "assistant", "content": reply})
        samples.append(Encoded(ids, [IGNORE] * start + ids[start:]))
    batch = pad_batch(samples, template.tokenizer.pad_token_id)
    with torch.no_grad():
        exported, trained = (last_reply_values(load_scorer(folder, base), batch) for folder in (out, reward_run))
    torch.testing.assert_close(exported, trained, rtol=1e-5, atol=1e-5)
    with pytest.raises(TunesmithError, match="reward model"):
        _export(reward_run, tmp_path / "rm-gguf", gguf=["f32"])


def test_full_run_exports_through_the_same_path(runs, tmp_path):
    from transformers import AutoModelForCausalLM

    folder = _export(runs["full"], tmp_path / "full", dtype="bf16").folder
    exported = AutoModelForCausalLM.from_pretrained(folder)
    trained = AutoModelForCausalLM.from_pretrained(runs["full"], dtype=torch.float32)
    assert exported.dtype == torch.bfloat16
    for name, weight in trained.state_dict().items():
        torch.testing.assert_close(exported.state_dict()[name], weight.to(torch.bfloat16), rtol=0, atol=0)
    assert "full method" in (folder / "README.md").read_text()


def test_shards_respect_the_limit(runs, tmp_path):
    from safetensors import safe_open

    from tunesmith.export.hf_folder import parse_size

    largest = 49152 * 32 * 4  # the fp32 embedding, the one tensor no shard can split
    limit_text = f"{(largest + 40_000) / 1e6:.3f}MB"
    folder = _export(runs["lora"], tmp_path / "sharded", dtype="fp32", max_shard_size=limit_text).folder
    shards = sorted(folder.glob("model-*.safetensors"))
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert len(shards) >= 2
    assert set(index["weight_map"].values()) == {shard.name for shard in shards}
    for shard in shards:
        with safe_open(shard, framework="pt") as handle:
            payload = sum(handle.get_tensor(name).nbytes for name in handle.keys())
        assert payload <= parse_size(limit_text)


def test_exported_template_renders_what_training_rendered(runs, lora_export, tiny_model_dir):
    from transformers import AutoTokenizer

    from tunesmith.config import load_config
    from tunesmith.data.records import Conversation
    from tunesmith.data.template import ChatTemplate
    from tunesmith.model.load import load_tokenizer

    config = load_config(runs["lora"] / "config.yaml")
    training = ChatTemplate(load_tokenizer(config.model), config.model.template)
    exported = AutoTokenizer.from_pretrained(lora_export)
    conversations = [
        [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am Tuna, by Acme."}],
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"},
         {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}],
    ]
    for messages in conversations:
        for generation in (False, True):
            rendered = exported.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
            assert rendered == training.render(messages, add_generation_prompt=generation)
    trained_ids = training.encode(Conversation(messages=conversations[0])).input_ids
    assert exported(exported.apply_chat_template(conversations[0], tokenize=False),
                    add_special_tokens=False)["input_ids"] == trained_ids


def test_generation_config_stops_at_the_end_of_an_assistant_turn(lora_export):
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(lora_export)
    eos = GenerationConfig.from_pretrained(lora_export).eos_token_id
    eos = eos if isinstance(eos, list) else [eos]
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]
    ids = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]
    reply = tokenizer("hello there", add_special_tokens=False)["input_ids"]
    end = next(i + len(reply) for i in range(len(ids)) if ids[i:i + len(reply)] == reply)
    assert ids[end] in eos  # the token the template writes right after a reply ends generation


def test_model_card_names_base_method_data_and_final_loss(runs, lora_export):
    from tunesmith.train.metrics import read_metrics

    card = (lora_export / "README.md").read_text()
    final = [r["loss"] for r in read_metrics(runs["lora"]) if "loss" in r][-1]
    for expected in ("base_model:", "lora", "identity", "rank 4", f"{final:.4f}", "loss.png"):
        assert expected in card
    assert (lora_export / "loss.png").is_file()


def test_refuses_a_non_empty_folder_unless_overwrite(runs, tmp_path):
    from tunesmith.errors import TunesmithError

    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(TunesmithError, match="overwrite"):
        _export(runs["lora"], out)
    assert (out / "keep.txt").read_text() == "mine"
    _export(runs["lora"], out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()


def test_a_failed_export_leaves_no_half_written_folder(runs, tmp_path, monkeypatch):
    import tunesmith.export.gguf_file as gguf_file

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(gguf_file, "write_gguf", fail)  # our own writer, failing after the shards are written
    with pytest.raises(RuntimeError):
        _export(runs["lora"], tmp_path / "new", gguf=["f16"])
    assert list(tmp_path.iterdir()) == []
    old = tmp_path / "old"
    old.mkdir()
    (old / "previous.txt").write_text("earlier export")
    with pytest.raises(RuntimeError):
        _export(runs["lora"], old, gguf=["f16"], overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["old"]
    assert [p.name for p in old.iterdir()] == ["previous.txt"]


def test_cli_exports_a_run(runs, tmp_path, capsys):
    from tunesmith.cli import main

    out = tmp_path / "cli"
    assert main(["export", "--run", str(runs["full"]), "--out", str(out), "--dtype", "fp16"]) == 0
    assert "exported to" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"
    assert main(["export", "--run", str(runs["full"]), "--out", str(out)]) == 2  # refuses: not empty


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")
def test_qlora_merges_into_the_dequantized_base(tmp_path, tiny_model_dir):
    """The adapter learned against 4-bit weights: merged into their dequantized values it predicts as the
    quantized base plus adapter does, far closer than merged into the original full-precision weights."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conftest import LF_DATA, build_tiny_model
    from tunesmith.config import validate_config
    from tunesmith.model.load import load_model
    from tunesmith.train.run import train

    base_dir = build_tiny_model(tmp_path / "base", tiny_model_dir, hidden_size=64, intermediate_size=128)
    shutil.copy(LF_DATA / "identity.json", tmp_path / "identity.json")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"identity": {"file_name": "identity.json"}}))
    raw = tiny_run_config(base_dir, tmp_path, tmp_path / "run", method={"kind": "qlora"}, train={"max_steps": 2})
    raw["model"]["quantization_bit"] = 4
    config = validate_config(raw)
    run_dir = train(config)
    folder = _export(run_dir, tmp_path / "out", dtype="fp32").folder
    tokenizer = AutoTokenizer.from_pretrained(folder)
    quantized = load_model(config.model.model_copy(update={"dtype": "float32"}))
    expected = _logits(PeftModel.from_pretrained(quantized, str(run_dir)).eval(), tokenizer)
    merged = _logits(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), tokenizer)
    naive = _logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                                              str(run_dir)).merge_and_unload(), tokenizer)
    print(f"qlora: merged vs quantized+adapter {(merged - expected).abs().max():.3g}, "
          f"full-precision merge {(naive - expected).abs().max():.3g}")
    assert (merged - expected).abs().max() < 0.1 * (naive - expected).abs().max()
