"""GGUF export read back by transformers' own GGUF loader, and the Ollama Modelfile's translated template."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from conftest import TOKENIZERS, build_tiny_model

PROBE = "Hello! Who made you? 12 + 30 = 42.\n<|im_start|>user\nnaïve café"


def _write(hf_folder: Path, kind: str, out_dir: Path) -> Path:
    from transformers import AutoTokenizer

    from tunesmith.data.template import ChatTemplate
    from tunesmith.export.gguf_file import write_gguf

    tokenizer = AutoTokenizer.from_pretrained(hf_folder)
    template = ChatTemplate(tokenizer)
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_gguf(hf_folder, out_dir / f"model-{kind}.gguf", kind, tokenizer, template.source,
                      template.stop_token_ids(), "tiny", progress=False)


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def _tiny_qwen3(folder: Path, tokenizer_dir: Path) -> Path:
    """A tiny Qwen3 (q/k norms, untied head, no q/k reordering) with a small vocabulary, for speed."""
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    # head_dim 128: transformers reads a qwen3 GGUF with the default head_dim, not attention.key_length
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=128, max_position_embeddings=256,
                         tie_word_embeddings=False, eos_token_id=tokenizer.eos_token_id)
    Qwen3ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def llama_folder(tiny_model_dir, tmp_path_factory):
    """A tiny Llama whose weights are not symmetric in any way a wrong q/k row order could hide in."""
    return build_tiny_model(tmp_path_factory.mktemp("gguf-llama"), tiny_model_dir, seed=3)


@pytest.fixture(scope="module")
def llama_ggufs(llama_folder, tmp_path_factory):
    """f32 and q8_0 GGUF files of the tiny Llama, each alone in its folder."""
    root = tmp_path_factory.mktemp("gguf-files")
    return {kind: _write(llama_folder, kind, root / kind) for kind in ("f32", "q8_0")}


@pytest.mark.parametrize("kind", ["f32", "q8_0"])
def test_gguf_predicts_like_the_merged_model(llama_folder, llama_ggufs, kind):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = AutoTokenizer.from_pretrained(llama_folder)(PROBE)["input_ids"]
    expected = _logits(AutoModelForCausalLM.from_pretrained(llama_folder, dtype=torch.float32), ids)
    gguf = llama_ggufs[kind]
    got = _logits(AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32), ids)
    difference = (got - expected).abs().max().item()
    print(f"{kind}: max abs logit difference {difference:.3g} (logit range {expected.abs().max().item():.3g})")
    if kind == "f32":
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    else:
        assert difference < 0.05 * expected.abs().max().item()
        assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.9


def test_gguf_carries_the_tokenizer_and_template(llama_folder, llama_ggufs):
    from transformers import AutoTokenizer

    original = AutoTokenizer.from_pretrained(llama_folder)
    gguf = llama_ggufs["f32"]
    restored = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    assert restored(PROBE)["input_ids"] == original(PROBE)["input_ids"]
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert restored.chat_template == original.chat_template
    assert restored.apply_chat_template(messages, tokenize=False) == original.apply_chat_template(messages, tokenize=False)
    assert (restored.eos_token, restored.bos_token) == (original.eos_token, original.bos_token)


def test_low_bit_kinds_keep_embeddings_at_q8_0(llama_folder, tmp_path):
    from gguf import GGUFReader

    gguf = _write(llama_folder, "q4_0", tmp_path)
    types = {tensor.name: tensor.tensor_type.name for tensor in GGUFReader(gguf).tensors}
    assert types["token_embd.weight"] == "Q8_0"
    assert types["blk.0.attn_q.weight"] == "Q4_0"
    assert types["blk.0.attn_norm.weight"] == "F32"


def test_qwen3_gguf_predicts_like_the_model(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    qwen3 = _tiny_qwen3(tmp_path / "qwen3", tiny_model_dir)
    ids = AutoTokenizer.from_pretrained(qwen3)(PROBE)["input_ids"]
    gguf = _write(qwen3, "f32", tmp_path / "qwen3-gguf")
    got = _logits(AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32), ids)
    expected = _logits(AutoModelForCausalLM.from_pretrained(qwen3, dtype=torch.float32), ids)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["qwen3", "llama3_1"])
def test_pretokenizer_names_split_text_as_transformers_reads_them(name):
    """transformers' GGUF loader rebuilds the split regex from tokenizer.ggml.pre: it must be the original one."""
    import json

    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    from tunesmith.export.gguf_vocab import pretokenizer_name

    spec = json.loads((TOKENIZERS / name / "tokenizer.json").read_text())
    regex = spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
    assert GGUF_PRE_TOKENIZER_SPLITS[pretokenizer_name(spec)] == regex


def test_unsupported_architecture_is_a_clear_error():
    from transformers import GPT2Config

    from tunesmith.errors import TunesmithError
    from tunesmith.export.gguf_arch import gguf_architecture

    with pytest.raises(TunesmithError, match="model_type 'gpt2'.*export without export.gguf"):
        gguf_architecture(GPT2Config())


# ---- Ollama -------------------------------------------------------------------------------------------

CONVERSATION = [
    {"role": "system", "content": "You answer in French."},
    {"role": "user", "content": "Hello\nthere"},
    {"role": "assistant", "content": "Bonjour"},
    {"role": "user", "content": "How are you?"},
]


@pytest.mark.parametrize("source", ["smollm2", "qwen3", "llama3_1"])
def test_measured_turn_format_reproduces_the_jinja_template(source, tiny_model_dir):
    from transformers import AutoTokenizer

    from tunesmith.data.template import ChatTemplate
    from tunesmith.export.ollama import measure_turn_format

    template = ChatTemplate(AutoTokenizer.from_pretrained(tiny_model_dir if source == "smollm2" else TOKENIZERS / source))
    fmt = measure_turn_format(template)
    for messages in (CONVERSATION, CONVERSATION[1:], CONVERSATION[:3]):
        for generation in (False, True):
            assert fmt.render(messages, generation) == template.render(messages, add_generation_prompt=generation)


def test_modelfile_has_template_system_and_stop_tokens(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from tunesmith.data.template import ChatTemplate
    from tunesmith.export.ollama import write_modelfile

    template = ChatTemplate(AutoTokenizer.from_pretrained(tiny_model_dir))
    text = write_modelfile(tmp_path, "model-q8_0.gguf", template, template.stop_token_ids()).read_text()
    assert text.startswith("FROM ./model-q8_0.gguf\n")
    assert 'PARAMETER stop "<|im_end|>"' in text
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in text  # the template's default system turn
    assert '{{ "<|im_start|>assistant\\n" }}' in text and "{{ .Content }}" in text


def test_export_writes_gguf_and_modelfile_beside_each_other(tiny_model_dir, tmp_path):
    from tunesmith.config import validate_config
    from tunesmith.config.schema import ExportConfig
    from tunesmith.export.pipeline import export_run
    from tunesmith.train.run import prepare_run_dir

    run_dir = tmp_path / "run"  # a "full" run folder made by hand: the tiny model plus the run's config
    config = validate_config({"model": {"path": str(tiny_model_dir)}, "method": {"kind": "full"},
                              "data": {"datasets": ["x"]}, "train": {"output_dir": str(run_dir)}})
    prepare_run_dir(config)
    for file in tiny_model_dir.iterdir():
        shutil.copy(file, run_dir / file.name)
    report = export_run(run_dir, ExportConfig(out=str(tmp_path / "out"), gguf=["q8_0", "f16"]), progress=False)
    assert {"gguf/model-q8_0.gguf", "gguf/model-f16.gguf", "gguf/Modelfile", "README.md"} <= set(report.files)
    assert (report.folder / "gguf" / "Modelfile").read_text().startswith("FROM ./model-q8_0.gguf")
