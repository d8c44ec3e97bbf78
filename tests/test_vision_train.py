"""Training a tiny Qwen2-VL on images: the loss of a batch equals its samples' one by one and the model's own
forward; the vision options decide what trains; a LoRA run merges into a model equal to base + adapter."""

from __future__ import annotations

import pytest
import torch

from tunesmith.config.method_kinds import parse_method
from tunesmith.config.schema import ModelConfig
from tunesmith.data.template import IGNORE
from tunesmith.train.stages.sft import SftStage
from vision_models import (  # noqa: F401 (vl_dir, vl25_dir: fixtures)
    assert_merged_is_base_plus_adapter,
    demo_samples,
    lora_image_run,
    naive_loss,
    sft_parts,
    vision_template,
    vl25_dir,
    vl_dir,
)


@pytest.fixture(scope="module")
def parts(vl_dir):
    """(template, collate, model) of the tiny Qwen2-VL, the model in float32 and eval mode."""
    return sft_parts(vl_dir)


def test_batch_loss_equals_its_samples_one_by_one_and_the_models_own_forward(parts):
    template, collate, model = parts
    samples = demo_samples(template)
    assert len({len(sample.input_ids) for sample in samples}) > 1  # padding is exercised
    stage = SftStage()
    with torch.no_grad():
        batched, _ = stage.loss(model, collate(samples))
        singles = [stage.loss(model, collate([sample]))[0] for sample in samples]
        naive = naive_loss(model, collate(samples))
    torch.testing.assert_close(batched, torch.stack(singles).sum(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(batched, naive, rtol=1e-5, atol=1e-4)


def test_the_image_changes_the_loss(parts):
    """The pixels reach the model: the same tokens with another image's pixels give another loss."""
    template, collate, model = parts
    sample = demo_samples(template, 1)[0]
    batch = collate([sample])
    other = dict(batch, pixel_values=torch.flip(batch["pixel_values"], dims=[0]))
    with torch.no_grad():
        assert not torch.isclose(SftStage().loss(model, batch)[0], SftStage().loss(model, other)[0])


def trainable_names(model) -> list[str]:
    return [name for name, param in model.named_parameters() if param.requires_grad]


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_the_vision_tower_and_projector_are_frozen_unless_asked(vl_dir, kind):
    from tunesmith.model.load import load_model
    from tunesmith.model.methods import apply_method

    def trained(**vision):
        model = load_model(ModelConfig(path=str(vl_dir), dtype="float32"))
        names = trainable_names(apply_method(model, parse_method({"kind": kind, "vision": vision})))
        return ([n for n in names if ".visual." in n and ".merger." not in n], [n for n in names if ".merger." in n],
                [n for n in names if ".visual." not in n])

    tower, projector, language = trained()
    assert not tower and not projector and language
    tower, projector, _ = trained(train_projector=True)
    assert not tower and projector
    tower, projector, _ = trained(train_tower=True)
    assert tower and not projector


@pytest.fixture(scope="module")
def lora_run(vl_dir, tmp_path_factory):
    """(run folder, config) of a finished 2-step LoRA sft run on LLaMA-Factory's mllm_demo, projector trained."""
    return lora_image_run(vl_dir, tmp_path_factory.mktemp("vl-run"))


def image_inputs(parts) -> dict:
    template, collate, _ = parts
    batch = collate(demo_samples(template, 2))
    return {key: value for key, value in batch.items() if key != "labels"}


def test_a_lora_run_trains_on_images_and_merges_into_base_plus_adapter(vl_dir, parts, lora_run):
    run_dir, config = lora_run
    assert (run_dir / "preprocessor_config.json").is_file()  # the run folder reads images as it trained
    assert_merged_is_base_plus_adapter(vl_dir, run_dir, config, image_inputs(parts))


def test_export_writes_the_merged_model_with_its_processor_and_refuses_gguf(parts, lora_run, tmp_path):
    from transformers import AutoModelForImageTextToText

    from tunesmith.config.schema import ExportConfig
    from tunesmith.errors import TunesmithError
    from tunesmith.export.merge import merged_model
    from tunesmith.export.pipeline import export_run

    run_dir, config = lora_run
    with pytest.raises(TunesmithError, match="vision-language model is not supported: llama.cpp keeps the vision"):
        export_run(run_dir, ExportConfig(out=str(tmp_path / "gguf"), gguf=["f16"]), progress=False)
    out = tmp_path / "merged"
    export_run(run_dir, ExportConfig(out=str(out), dtype="fp32"), progress=False)
    assert (out / "preprocessor_config.json").is_file()
    inputs = image_inputs(parts)
    with torch.no_grad():
        exported = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32).eval()(**inputs).logits
        merged = merged_model(run_dir, config, progress=False).eval()(**inputs).logits
    torch.testing.assert_close(exported, merged, rtol=1e-5, atol=1e-5)


def test_a_packed_batch_has_the_loss_of_the_unpacked_one(parts):
    """Packed rows get per-sample M-RoPE positions (the model's own, per sample) and a block-diagonal mask."""
    from tunesmith.data.packing import pack_samples

    template, collate, model = parts
    samples = demo_samples(template, 4)
    packed = pack_samples(samples, max_length=sum(len(sample.input_ids) for sample in samples[:3]))
    assert len(packed) < len(samples)
    stage = SftStage()
    with torch.no_grad():
        unpacked_loss = stage.loss(model, collate(samples))[0]
        packed_batch = collate(packed)
        packed_loss = stage.loss(model, packed_batch)[0]
    # packing leaves each sample's first label out; here those are prompt tokens, untrained anyway
    assert all(sample.labels[1] == IGNORE for sample in samples)
    torch.testing.assert_close(packed_loss, unpacked_loss, rtol=1e-5, atol=1e-4)


def test_qwen2_5_vl_batches_packs_and_freezes_its_tower_like_qwen2_vl(vl25_dir):
    from tunesmith.data.packing import pack_samples
    from tunesmith.model.load import load_model
    from tunesmith.model.methods import apply_method

    folder = vl25_dir
    template = vision_template(folder)
    tokenizer = template.tokenizer
    stage = SftStage()
    stage.media = template.media
    samples = demo_samples(template)
    model = load_model(ModelConfig(path=str(folder), dtype="float32")).eval()
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    with torch.no_grad():
        batched = stage.loss(model, stage.collate(samples, tokenizer.pad_token_id))[0]
        singles = sum(stage.loss(model, stage.collate([sample], tokenizer.pad_token_id))[0] for sample in samples)
        packed = stage.loss(model, stage.collate(pack_samples(samples, 512), tokenizer.pad_token_id))[0]
        naive = naive_loss(model, stage.collate(samples, tokenizer.pad_token_id))
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(packed, batched, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(naive, batched, rtol=1e-5, atol=1e-4)
    assert not [name for name in trainable_names(apply_method(model, parse_method({}))) if ".visual." in name]
