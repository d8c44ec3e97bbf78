"""Tiny random vision-language models for tests, each saved as a model folder with its tokenizer and a small
image processor: Qwen2-VL / Qwen2.5-VL with the qwen3 tokenizer (it has Qwen's vision tokens), and LLaVA-1.5
(a CLIP tower, a projector, a Llama) with the llama 2 tokenizer plus an `<image>` token, as llava-hf's."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import LF_DATA, TOKENIZERS

# Small images: between 4 and 16 merged patches (28 x 28 pixels each) per image.
IMAGE_SIZES = {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 16}


def image_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(patch_size=14, merge_size=2, temporal_patch_size=2, **IMAGE_SIZES)


# The vision tower of each architecture, tiny: Qwen2.5-VL's adds windowed attention and an RMSNorm MLP.
TOWERS = {
    "qwen2_vl": dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2),
    "qwen2_5_vl": dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                       window_size=56, fullatt_block_indexes=[1]),
}


def build_tiny_qwen2_vl(folder: Path, seed: int = 0, model_type: str = "qwen2_vl") -> Path:
    """A tiny random Qwen2-VL (or, with model_type qwen2_5_vl, Qwen2.5-VL) model folder."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZERS / "qwen3")
    ids = {name: tokenizer.convert_tokens_to_ids(f"<|{name}|>") for name in
           ("image_pad", "video_pad", "vision_start", "vision_end")}
    text = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})
    vision = dict(TOWERS[model_type], patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    config = AutoConfig.for_model(model_type, text_config=text, vision_config=vision, tie_word_embeddings=True,
                                  image_token_id=ids["image_pad"], video_token_id=ids["video_pad"],
                                  vision_start_token_id=ids["vision_start"], vision_end_token_id=ids["vision_end"])
    torch.manual_seed(seed)
    AutoModelForImageTextToText.from_config(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    image_processor().save_pretrained(folder)
    return folder


# LLaVA's tower takes 56 x 56 pixels in 14-pixel patches: 16 patch features, plus CLIP's class token, which the
# default feature strategy drops.
LLAVA_IMAGE_SIZE, LLAVA_PATCH = 56, 14


def llava_image_processor():
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": LLAVA_IMAGE_SIZE},
                                 crop_size={"height": LLAVA_IMAGE_SIZE, "width": LLAVA_IMAGE_SIZE})


def build_tiny_llava(folder: Path, seed: int = 0) -> Path:
    """A tiny random LLaVA-1.5 model folder; its tokenizer carries the vicuna chat template, as LLaVA-1.5's."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer, LlavaConfig

    from tunesmith.data.template_names import template_source

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZERS / "llama2")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tokenizer.chat_template = template_source(tokenizer, "vicuna")
    text = dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    vision = dict(model_type="clip_vision_model", image_size=LLAVA_IMAGE_SIZE, patch_size=LLAVA_PATCH,
                  hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  projection_dim=32)
    config = LlavaConfig(text_config=text, vision_config=vision, image_token_id=tokenizer.convert_tokens_to_ids(
        "<image>"), vision_feature_layer=-2, vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    AutoModelForImageTextToText.from_config(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    llava_image_processor().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def vl_dir(tmp_path_factory) -> Path:
    """The tiny Qwen2-VL folder, built once per session (import this fixture into a test module)."""
    return build_tiny_qwen2_vl(tmp_path_factory.mktemp("qwen2-vl"))


@pytest.fixture(scope="session")
def vl25_dir(tmp_path_factory) -> Path:
    """The tiny Qwen2.5-VL folder, built once per session (import this fixture into a test module)."""
    return build_tiny_qwen2_vl(tmp_path_factory.mktemp("qwen2.5-vl"), model_type="qwen2_5_vl")


@pytest.fixture(scope="session")
def llava_dir(tmp_path_factory) -> Path:
    """The tiny LLaVA folder, built once per session (import this fixture into a test module)."""
    return build_tiny_llava(tmp_path_factory.mktemp("llava"))


def vision_template(folder: Path):
    """The model folder's tokenizer and chat template (its own) with its image side (data/vision_processor.py)."""
    from tunesmith.data.template import ChatTemplate
    from tunesmith.data.vision_processor import load_media
    from tunesmith.model.load import tokenizer_from

    tokenizer = tokenizer_from(folder)
    return ChatTemplate(tokenizer, "auto", load_media(folder, tokenizer))


def sft_parts(folder: Path):
    """(template, collate, model) of a tiny model folder for sft: the model in float32 and eval mode."""
    from functools import partial

    from tunesmith.config.schema import ModelConfig
    from tunesmith.model.load import load_model
    from tunesmith.train.stages.sft import SftStage

    template = vision_template(folder)
    stage = SftStage()
    stage.media = template.media
    collate = partial(stage.collate, pad_id=template.tokenizer.pad_token_id)
    return template, collate, load_model(ModelConfig(path=str(folder), dtype="float32")).eval()


def demo_samples(template, count: int = 3) -> list:
    """The first `count` records of LLaMA-Factory's mllm_demo, encoded."""
    from tunesmith.config.schema import DataConfig
    from tunesmith.data.dataset import load_records

    records = load_records(DataConfig(datasets=["mllm_demo"], dataset_dir=str(LF_DATA), max_samples=count))
    return template.encode_many(records)


def naive_loss(model, batch):
    """Summed next-token cross entropy from the model's own forward (all logits, transformers' head)."""
    import torch

    from tunesmith.data.template import IGNORE

    logits = model(**{key: value for key, value in batch.items() if key not in ("labels", "target_index")}).logits
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(),
                                             ignore_index=IGNORE, reduction="sum")


def assert_batch_loss_is_per_sample_and_naive(model, collate, samples, pixels_key: str) -> None:
    """sft's loss of the samples' batch equals their losses one by one and the naive loss of the model's own
    forward; flipping the pixels under `pixels_key` changes it (the pixels reach the model)."""
    import torch

    from tunesmith.train.stages.sft import SftStage

    stage = SftStage()
    batch = collate(samples)
    with torch.no_grad():
        batched = stage.loss(model, batch)[0]
        singles = torch.stack([stage.loss(model, collate([sample]))[0] for sample in samples]).sum()
        naive = naive_loss(model, batch)
        flipped = stage.loss(model, dict(batch, **{pixels_key: batch[pixels_key].flip(0)}))[0]
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(batched, naive, rtol=1e-5, atol=1e-4)
    assert not torch.isclose(batched, flipped)


def lora_image_run(folder: Path, tmp: Path):
    """(run folder, config) of a finished 2-step LoRA sft run of the model in `folder` on LLaMA-Factory's
    mllm_demo, the projector trained."""
    from tunesmith.config.load import validate_config
    from tunesmith.train.run import train

    config = validate_config({
        "model": {"path": str(folder), "dtype": "float32"},
        "method": {"kind": "lora", "rank": 4, "alpha": 8, "vision": {"train_projector": True}},
        "data": {"datasets": ["mllm_demo"], "dataset_dir": str(LF_DATA), "max_length": 256,
                 "cache_dir": str(tmp / "cache")},
        "train": {"output_dir": str(tmp / "run"), "max_steps": 2, "batch_size": 2, "lr": 1e-2, "seed": 7,
                  "scheduler": "constant", "precision": "fp32"},
    })
    return train(config), config


def assert_merged_is_base_plus_adapter(folder: Path, run_dir: Path, config, inputs: dict) -> None:
    """The run's merged model gives the logits of the base model with the run's adapter, and those differ
    from the base model's (the run trained)."""
    import torch
    from peft import PeftModel

    from tunesmith.config.schema import ModelConfig
    from tunesmith.export.merge import merged_model
    from tunesmith.model.load import load_model

    base = load_model(ModelConfig(path=str(folder), dtype="float32")).eval()
    with torch.no_grad():
        before = base(**inputs).logits
        expected = PeftModel.from_pretrained(base, str(run_dir)).eval()(**inputs).logits
        merged = merged_model(run_dir, config, progress=False).eval()(**inputs).logits
    assert not torch.allclose(expected, before, atol=1e-4)
    torch.testing.assert_close(merged, expected, rtol=1e-4, atol=1e-4)
