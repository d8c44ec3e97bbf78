"""LLaVA-1.5 style models (a CLIP tower, a projector, a Llama): placeholders expand as transformers' own
LlavaProcessor expands them, image tokens never train, a batch's loss is its samples' one by one and the model's
own forward, the vision options pick the right modules, a LoRA run merges into base + adapter, and chat about an
image answers as the model's own greedy generate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import LF_DATA
from tunesmith.config.method_kinds import parse_method
from tunesmith.config.schema import DataConfig, ModelConfig
from tunesmith.data.dataset import load_records
from tunesmith.data.template import IGNORE
from tunesmith.train.stages.sft import SftStage
from vision_models import (  # noqa: F401 (llava_dir: a fixture)
    LLAVA_PATCH,
    assert_batch_loss_is_per_sample_and_naive,
    assert_merged_is_base_plus_adapter,
    llava_dir,
    llava_image_processor,
    lora_image_run,
    sft_parts,
)

IMAGE = str(LF_DATA / "mllm_demo_data" / "2.jpg")


@pytest.fixture(scope="module")
def parts(llava_dir):
    """(template, collate, model) of the tiny LLaVA, the model in float32 and eval mode."""
    return sft_parts(llava_dir)


def demo_samples(template, count=3):
    records = load_records(DataConfig(datasets=["mllm_demo"], dataset_dir=str(LF_DATA), max_samples=count))
    return records, template.encode_many(records)


def reference_processor(tokenizer):
    """transformers' LlavaProcessor with LLaVA-1.5's settings: 14-pixel patches, CLIP's class token dropped."""
    from transformers import LlavaProcessor

    return LlavaProcessor(image_processor=llava_image_processor(), tokenizer=tokenizer, patch_size=LLAVA_PATCH,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)


def test_placeholders_expand_as_llava_processor_does_and_image_tokens_never_train(parts):
    from PIL import Image

    template, collate, _ = parts
    records, samples = demo_samples(template)
    processor = reference_processor(template.tokenizer)
    image_id = template.media.pad_id
    for record, sample in zip(records, samples):
        text = template.render(record.messages)  # `<image>` placeholders as typed: the processor expands them
        images = [Image.open(path).convert("RGB") for path in record.images]
        expected = processor(text=[text], images=images, add_special_tokens=False)["input_ids"][0]
        assert sample.input_ids == list(expected)
        assert sample.input_ids.count(image_id) == len(record.images) * 16  # (56 / 14)^2 patches
        assert all(label == IGNORE for token, label in zip(sample.input_ids, sample.labels) if token == image_id)
    batch = collate(samples)
    assert batch["pixel_values"].shape == (sum(len(r.images) for r in records), 3, 56, 56)


def test_batch_loss_equals_its_samples_one_by_one_and_the_models_own_forward(parts):
    template, collate, model = parts
    _, samples = demo_samples(template)
    assert len({len(sample.input_ids) for sample in samples}) > 1  # padding is exercised
    assert_batch_loss_is_per_sample_and_naive(model, collate, samples, "pixel_values")


def test_a_packed_batch_has_the_loss_of_the_unpacked_one(parts):
    from tunesmith.data.packing import pack_samples

    template, collate, model = parts
    _, samples = demo_samples(template, 4)
    packed = pack_samples(samples, max_length=sum(len(sample.input_ids) for sample in samples[:3]))
    assert len(packed) < len(samples)
    with torch.no_grad():
        unpacked = SftStage().loss(model, collate(samples))[0]
        packed_loss = SftStage().loss(model, collate(packed))[0]
    assert all(sample.labels[1] == IGNORE for sample in samples)  # packing drops each sample's first label
    torch.testing.assert_close(packed_loss, unpacked, rtol=1e-5, atol=1e-4)


def trained_parts(folder, kind: str, **vision) -> dict[str, list[str]]:
    """The trainable parameter names of a freshly prepared model, by part: tower, projector, language model."""
    from tunesmith.model.load import load_model
    from tunesmith.model.methods import apply_method

    model = apply_method(load_model(ModelConfig(path=str(folder), dtype="float32")),
                         parse_method({"kind": kind, "vision": vision}))
    names = [name for name, param in model.named_parameters() if param.requires_grad]
    return {"tower": [n for n in names if ".vision_tower." in n],
            "projector": [n for n in names if ".multi_modal_projector." in n],
            "language": [n for n in names if ".language_model." in n or "lm_head" in n]}


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_the_vision_options_train_the_tower_and_projector_only_when_asked(llava_dir, kind):
    default = trained_parts(llava_dir, kind)
    assert not default["tower"] and not default["projector"] and default["language"]
    projector = trained_parts(llava_dir, kind, train_projector=True)
    assert not projector["tower"] and projector["projector"]
    tower = trained_parts(llava_dir, kind, train_tower=True)
    assert tower["tower"] and not tower["projector"]
    if kind == "lora":  # adapters on exactly the language model's linear layers by default
        from tunesmith.model.load import load_model

        model = load_model(ModelConfig(path=str(llava_dir), dtype="float32"))
        linear = {f"{name}.lora_A.default.weight" for name, module in model.named_modules()
                  if isinstance(module, torch.nn.Linear) and ".language_model." in name}
        adapters = {name.removeprefix("base_model.model.") for name in default["language"] if ".lora_A." in name}
        assert adapters == linear


def test_a_lora_run_trains_on_images_and_merges_into_base_plus_adapter(llava_dir, parts, tmp_path):
    run_dir, config = lora_image_run(llava_dir, tmp_path)
    template, collate, _ = parts
    batch = collate(demo_samples(template, 2)[1])
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "pixel_values")}
    assert_merged_is_base_plus_adapter(llava_dir, run_dir, config, inputs)


def test_chat_about_an_image_answers_as_the_models_own_greedy_generate(llava_dir):
    from PIL import Image

    from tunesmith.infer.loader import load_engine
    from tunesmith.infer.settings import GenerationSettings

    engine = load_engine(model=str(llava_dir))
    messages = [{"role": "user", "content": "<image>What is in the picture?"}]
    text = engine.template.render(messages, add_generation_prompt=True)
    inputs = reference_processor(engine.tokenizer)(text=[text], images=[Image.open(IMAGE).convert("RGB")],
                                                   add_special_tokens=False, return_tensors="pt")
    steps = 6
    with torch.no_grad():
        out = engine.model.generate(**inputs, max_new_tokens=steps, do_sample=False)
    expected = out[0, inputs["input_ids"].shape[1]:].tolist()
    stops = set(engine.template.stop_token_ids())
    expected = expected[: next((i for i, token in enumerate(expected) if token in stops), len(expected))]
    assert len(expected) > 2  # several tokens past the prompt
    reply = engine.generate(messages, GenerationSettings(max_new_tokens=steps, temperature=0), images=[IMAGE])
    assert reply == engine.tokenizer.decode(expected, skip_special_tokens=True)


def test_processor_files_that_do_not_fit_the_tower_are_clear_errors(llava_dir, tmp_path):
    import json
    import shutil

    from tunesmith.data.vision_processor import load_media
    from tunesmith.errors import TunesmithError
    from tunesmith.model.load import tokenizer_from

    folder = Path(shutil.copytree(llava_dir, tmp_path / "llava"))
    settings = json.loads((folder / "preprocessor_config.json").read_text())
    settings["crop_size"] = {"height": 28, "width": 28}
    (folder / "preprocessor_config.json").write_text(json.dumps(settings))
    with pytest.raises(TunesmithError, match="makes 28-pixel images but the vision tower takes 56"):
        load_media(folder, tokenizer_from(folder))
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(TunesmithError, match="llava model without preprocessor_config.json"):
        load_media(folder, tokenizer_from(folder))


def test_llava_1_5s_own_config_takes_576_tokens_an_image():
    """transformers' default LlavaConfig is LLaVA-1.5's (CLIP ViT-L/14 at 336 pixels): its image_seq_length."""
    from transformers import LlavaConfig

    from tunesmith.data.vision_llava import image_token_count

    config = LlavaConfig()
    assert image_token_count(config) == config.image_seq_length == 576
    full = LlavaConfig(vision_feature_select_strategy="full")  # the class token kept
    assert image_token_count(full) == 577
