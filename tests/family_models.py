"""Tiny random models of the families people fine-tune, built from each family's real config scaled down
(tests/families/configs.yaml), saved with a real tokenizer of the family's kind."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from conftest import TOKENIZERS

FAMILIES = yaml.safe_load((Path(__file__).parent / "families" / "configs.yaml").read_text(encoding="utf-8"))


def build_family_model(name: str, folder: Path, **overrides) -> Path:
    """The family's architecture at test size (`overrides` change config fields), saved with its tokenizer.
    A tokenizer without a chat template (llama2 stands in for Mistral, Gemma and Phi-3, whose own tokenizers
    carry one) gets the family's built-in."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from tunesmith.data.template_names import template_source

    spec = FAMILIES[name]
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZERS / spec["tokenizer"])
    settings = {**spec["real"], **spec["tiny"], "vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
                "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id, **overrides}
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(spec["model_type"], **settings))
    model.save_pretrained(folder)
    if not tokenizer.chat_template:
        tokenizer.chat_template = template_source(tokenizer, spec["template"])
    tokenizer.save_pretrained(folder)
    return folder
