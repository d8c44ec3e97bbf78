"""LLaMA-Factory's 126 template names: each accepted in model.template and by convert-config, as a built-in, as
the tokenizer's own template of that family, or refused with the reason and names that work."""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import ASSETS, TOKENIZERS
from tunesmith.cli import main
from tunesmith.data.template import ChatTemplate
from tunesmith.data.template_names import LF_TABLE, accepted_names, builtin_template_names, choose_template
from tunesmith.errors import TunesmithError

REFERENCE = ASSETS.parent / "reference" / "lf_template_names.txt"
TABLE = yaml.safe_load(LF_TABLE.read_text(encoding="utf-8"))


def lf_names() -> list[str]:
    lines = REFERENCE.read_text(encoding="utf-8").splitlines()
    return [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def tokenizers():
    from transformers import AutoTokenizer

    return {name: AutoTokenizer.from_pretrained(TOKENIZERS / name) for name in ("qwen3", "llama3_1", "llama2")}


def test_every_llamafactory_name_is_in_exactly_one_section():
    sections = [set(names) for names in TABLE.values()]
    assert sorted(name for section in sections for name in section) == sorted(lf_names())
    assert len(lf_names()) == 126
    assert set(TABLE["builtin"].values()) <= set(builtin_template_names())
    closest = [name for reason, names in TABLE["refuse"].values() for name in names]
    assert set(closest) | set(TABLE["multimodal"].values()) <= set(accepted_names())


@pytest.mark.parametrize("name", sorted(TABLE["builtin"]))
def test_builtin_mapped_names_render_like_their_builtin(name, tokenizers):
    tokenizer = tokenizers["llama2"]  # no template of its own: only the built-in can render
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    source = (LF_TABLE.parent / "templates" / f"{TABLE['builtin'][name]}.jinja").read_text(encoding="utf-8")
    expected = tokenizer.apply_chat_template(messages, chat_template=source, tokenize=False)

    assert ChatTemplate(tokenizer, name).render(messages) == expected


@pytest.mark.parametrize("name", sorted(TABLE["tokenizer"]))
def test_tokenizer_own_names_use_the_tokenizer_template_of_that_family(name, tokenizers):
    family, marker = TABLE["tokenizer"][name]
    qwen3 = tokenizers["qwen3"]
    if marker is None or marker in qwen3.chat_template:
        assert ChatTemplate(qwen3, name).source == qwen3.chat_template
    else:
        with pytest.raises(TunesmithError, match=f"not one \\(it lacks '{re.escape(marker)}'\\)"):
            ChatTemplate(qwen3, name)
    with pytest.raises(TunesmithError, match="the tokenizer has no chat template"):
        ChatTemplate(tokenizers["llama2"], name)


@pytest.mark.parametrize("name", sorted(TABLE["refuse"]) + sorted(TABLE["multimodal"]))
def test_refused_names_give_the_reason_and_names_that_work(name, tokenizers):
    with pytest.raises(TunesmithError) as err:
        ChatTemplate(tokenizers["qwen3"], name)
    message = str(err.value)
    suggested = TABLE["refuse"][name][1] if name in TABLE["refuse"] else [TABLE["multimodal"][name]]
    assert f"template '{name}'" in message and all(f"{other}" in message for other in suggested)
    if name in TABLE["multimodal"]:
        assert "images, video or audio" in message
    for other in suggested:
        choose_template(other)  # each suggestion is itself accepted


def test_a_typo_suggests_close_names():
    with pytest.raises(TunesmithError, match="did you mean .*qwen3"):
        choose_template("qwen33")


def test_qwen3_tokenizer_with_lf_name_qwen3_renders_the_builtin_qwen3(tokenizers):
    """LLaMA-Factory's 'qwen3' and the real Qwen3 tokenizer's template agree on a plain conversation."""
    qwen3 = tokenizers["qwen3"]
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    own = qwen3.apply_chat_template(messages, tokenize=False)

    assert ChatTemplate(qwen3, "qwen3").render(messages) == own


@pytest.mark.parametrize("name, written, mapped", [
    ("qwen", "qwen2_5", "mapped: template 'qwen' -> the built-in template 'qwen2_5'"),
    ("llama3", "llama3", "mapped: template 'llama3' -> the built-in template 'llama3'"),
    ("deepseek3", "deepseek3", "mapped: template 'deepseek3' -> the tokenizer's own chat template (DeepSeek-V3)"),
])
def test_convert_config_maps_the_template_and_says_so(name, written, mapped, tmp_path, capsys):
    lf = {"model_name_or_path": "org/model", "stage": "sft", "finetuning_type": "lora", "dataset": "identity",
          "template": name, "output_dir": str(tmp_path / "out")}
    (tmp_path / "lf.yaml").write_text(yaml.safe_dump(lf))

    assert main(["convert-config", str(tmp_path / "lf.yaml"), "-o", str(tmp_path / "ours.yaml")]) == 0

    assert mapped in capsys.readouterr().err.splitlines()
    assert yaml.safe_load((tmp_path / "ours.yaml").read_text())["model"]["template"] == written


def test_convert_config_reports_a_refused_template(tmp_path, capsys):
    lf = {"model_name_or_path": "org/model", "dataset": "identity", "template": "qwen2_vl",
          "output_dir": str(tmp_path / "out")}
    (tmp_path / "lf.yaml").write_text(yaml.safe_dump(lf))

    assert main(["convert-config", str(tmp_path / "lf.yaml"), "-o", str(tmp_path / "ours.yaml")]) == 0

    err = capsys.readouterr().err
    assert "not applied: template (template 'qwen2_vl'" in err and "use 'qwen'" in err
    assert "template" not in yaml.safe_load((tmp_path / "ours.yaml").read_text())["model"]
