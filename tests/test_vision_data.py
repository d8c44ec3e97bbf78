"""Images in the data: placeholders expanded to the processor's token count, never trained; one rule for
special-token text; bad records named; the cache keyed on the images' contents."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import LF_DATA
from tunesmith.config.schema import DataConfig
from tunesmith.data.dataset import load_records
from tunesmith.data.media_render import IMAGE_SPANS, IMAGES, truncate
from tunesmith.data.records import Conversation
from tunesmith.data.template import IGNORE, ChatTemplate
from tunesmith.errors import TunesmithError
from vision_models import image_processor, vision_template, vl_dir  # noqa: F401 (vl_dir: a fixture)


@pytest.fixture(scope="module")
def template(vl_dir):
    return vision_template(vl_dir)


def image_dataset(folder, rows, columns=("messages", "images")):
    """A dataset folder with LLaMA-Factory's demo images and `rows` registered as 'pics' (OpenAI messages)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(LF_DATA / "mllm_demo_data", folder / "mllm_demo_data", dirs_exist_ok=True)
    (folder / "pics.json").write_text(json.dumps(rows))
    entry = {"file_name": "pics.json", "formatting": "sharegpt", "columns": {c: c for c in columns},
             "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}
    (folder / "dataset_info.json").write_text(json.dumps({"pics": entry}))
    return folder


def chat(user, reply="A cat.", images=()):
    row = {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}
    return {**row, "images": list(images)} if images else row


def test_placeholders_expand_to_the_processors_token_count_and_are_never_trained(template):
    from PIL import Image

    records = load_records(DataConfig(datasets=["mllm_demo"], dataset_dir=str(LF_DATA)))
    processor, media = image_processor(), template.media
    for record, sample in zip(records, template.encode_many(records)):
        assert sample.meta[IMAGES] == record.images
        for path, (start, stop) in zip(record.images, sample.meta[IMAGE_SPANS]):
            grid = processor(images=[Image.open(path).convert("RGB")], return_tensors="pt")["image_grid_thw"][0]
            expected = int(grid.prod()) // processor.merge_size ** 2
            assert sample.input_ids[start:stop] == [media.start_id] + [media.pad_id] * expected + [media.end_id]
            assert sample.labels[start:stop] == [IGNORE] * (stop - start)
        assert sample.input_ids.count(media.pad_id) == sum(stop - start - 2 for start, stop in sample.meta[IMAGE_SPANS])
        assert sample.num_targets > 0


@pytest.mark.parametrize("size", [(28, 28), (56, 56), (300, 41), (41, 300), (640, 480), (1000, 999), (29, 1500)])
def test_an_images_token_count_read_from_its_size_is_the_processors_grid(template, tmp_path, size):
    """Encoding counts an image's tokens from its size (a file's header); the processor, run on the pixels,
    agrees (sizes under, inside and over the processor's pixel bounds, and long thin ones)."""
    from PIL import Image

    path = tmp_path / "image.jpg"
    Image.new("RGB", size, (200, 30, 90)).save(path)
    processor = image_processor()
    pixels = Image.open(path).convert("RGB")
    grid = processor(images=[pixels], return_tensors="pt")["image_grid_thw"][0]
    expected = int(grid.prod()) // processor.merge_size ** 2
    assert template.media.token_count(str(path)) == expected
    assert template.media.token_count(pixels) == expected  # decoded, as an API request brings it


def test_the_text_around_an_image_encodes_as_without_it(template):
    """Cutting the rendered text at a placeholder changes no text token: the assistant turns train the same."""
    records = load_records(DataConfig(datasets=["mllm_demo"], dataset_dir=str(LF_DATA)))
    record = records[0]
    sample = template.encode_many([record])[0]
    plain = Conversation([dict(m, content=m["content"].replace("<image>", "")) for m in record.messages])
    text_only = ChatTemplate(template.tokenizer).encode(plain)
    kept = [i for i in range(len(sample.input_ids))
            if not any(start <= i < stop for start, stop in sample.meta[IMAGE_SPANS])]
    assert [sample.input_ids[i] for i in kept] == text_only.input_ids
    assert [sample.labels[i] for i in kept] == text_only.labels


def test_special_token_text_a_user_typed_stays_text(template, tmp_path):
    """One rule: only a placeholder backed by the record's own images column becomes image tokens; an
    `<image>` in a dataset without an images column, and the model's image tokens written out, stay text."""
    typed = "Look: <image> and <|vision_start|><|image_pad|><|vision_end|>"
    text_only = image_dataset(tmp_path / "text", [chat(typed)], columns=("messages",))
    (plain,) = load_records(DataConfig(datasets=["pics"], dataset_dir=str(text_only)))
    media, tokenizer = template.media, template.tokenizer
    sample = template.encode_many([plain])[0]
    assert media.pad_id not in sample.input_ids and media.start_id not in sample.input_ids
    assert typed in tokenizer.decode(sample.input_ids)
    written = "<|vision_start|><|image_pad|><|vision_end|>"
    with_images = image_dataset(tmp_path / "images", [chat("<image>" + written, images=["mllm_demo_data/2.jpg"])])
    (record,) = load_records(DataConfig(datasets=["pics"], dataset_dir=str(with_images)))
    sample = template.encode_many([record])[0]
    ((start, stop),) = sample.meta[IMAGE_SPANS]
    assert sample.input_ids.count(media.pad_id) == stop - start - 2  # the written-out one added none
    assert tokenizer.decode(sample.input_ids[stop:]).startswith(written)


@pytest.mark.parametrize("row, problem", [
    (chat("<image>Hi", images=["mllm_demo_data/9.jpg"]), "does not exist"),
    (chat("<image>Hi", images=["pics.json"]), "not a readable image"),
    (chat("<image><image>Hi", images=["mllm_demo_data/1.jpg"]), "2 '<image>' placeholder(s) but 1 file(s)"),
    (chat("Hi", images=["mllm_demo_data/1.jpg"]), "0 '<image>' placeholder(s) but 1 file(s)"),
])
def test_a_bad_image_record_is_named(tmp_path, row, problem):
    folder = image_dataset(tmp_path, [chat("Hi"), row])
    with pytest.raises(TunesmithError, match="record 2") as error:
        load_records(DataConfig(datasets=["pics"], dataset_dir=str(folder)))
    assert problem in str(error.value)


def test_images_for_a_text_only_model_are_refused_naming_the_record(template, tmp_path):
    folder = image_dataset(tmp_path, [chat("Hi"), chat("<image>Hi", images=["mllm_demo_data/1.jpg"])])
    records = load_records(DataConfig(datasets=["pics"], dataset_dir=str(folder)))
    with pytest.raises(TunesmithError, match=r"pics.json: record 2: the record has images but the model is text"):
        ChatTemplate(template.tokenizer).encode_many(records)  # the same tokenizer, no image side


def test_stages_without_images_refuse_them(tmp_path):
    from tunesmith.data.media import refuse_images

    folder = image_dataset(tmp_path, [chat("<image>Hi", images=["mllm_demo_data/1.jpg"])])
    records = load_records(DataConfig(datasets=["pics"], dataset_dir=str(folder)))
    with pytest.raises(TunesmithError, match="stage grpo does not train on images"):
        refuse_images(records, "grpo")
    with pytest.raises(TunesmithError, match="stage pt trains on plain text only"):
        load_records(DataConfig(datasets=["pics"], dataset_dir=str(folder)), "text")


def test_truncation_keeps_whole_images_only(template):
    records = load_records(DataConfig(datasets=["mllm_demo"], dataset_dir=str(LF_DATA)))
    sample = template.encode_many(records[:1])[0]
    (first_start, first_stop), (second_start, _) = sample.meta[IMAGE_SPANS]
    cut = truncate(sample, second_start + 3)  # inside the second image
    assert cut.input_ids == sample.input_ids[:second_start]
    assert cut.meta[IMAGE_SPANS] == [[first_start, first_stop]] and cut.meta[IMAGES] == sample.meta[IMAGES][:1]
    assert IMAGES not in truncate(sample, first_start + 1).meta


def test_cache_key_follows_image_contents_and_processor_settings(template, tmp_path):
    from tunesmith.data.cache import cache_key, encoder_fingerprint
    from tunesmith.data.registry import resolve_datasets

    folder = image_dataset(tmp_path, [chat("<image>Hi", images=["mllm_demo_data/1.jpg"])])
    data = DataConfig(datasets=["pics"], dataset_dir=str(folder))
    fingerprint = encoder_fingerprint(template, "sft")

    def key():
        return cache_key(data, resolve_datasets(data.datasets, folder), "conversation", fingerprint)

    before = key()
    shutil.copy(folder / "mllm_demo_data" / "2.jpg", folder / "mllm_demo_data" / "1.jpg")
    assert key() != before
    resized = ChatTemplate(template.tokenizer, "auto", type(template.media)(image_processor(), template.tokenizer))
    resized.media.image_processor.max_pixels = 28 * 28 * 8
    assert encoder_fingerprint(resized, "sft") != fingerprint


def test_data_preview_shows_where_each_image_goes_and_its_token_count(vl_dir, template, tmp_path, capsys):
    import yaml

    from tunesmith.cli import main

    config = {"model": {"path": str(vl_dir)},
              "data": {"datasets": ["mllm_demo"], "dataset_dir": str(LF_DATA), "cache_dir": str(tmp_path)}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["data", "preview", str(tmp_path / "run.yaml"), "--n", "1"]) == 0
    out = capsys.readouterr().out
    count = template.media.token_count(str(LF_DATA / "mllm_demo_data" / "1.jpg"))
    assert f"<|im_start|>user\n<image 1: 1.jpg, {count + 2} tokens>Who are they?" in out
    assert f"What are they doing?<image 2: 1.jpg, {count + 2} tokens>" in out
