"""Videos (LLaMA-Factory's `videos` column and `<video>` placeholder) on the real demo files: frames sampled as
LLaMA-Factory samples them, laid out as Qwen2-VL's video path wants them, `<video>` expanded to the model's
count, never trained, and a batch's loss equal to its samples' one by one and to the model's own forward."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from conftest import LF_DATA
from tunesmith.config.schema import DataConfig, ModelConfig
from tunesmith.data.dataset import load_records
from tunesmith.data.media_render import VIDEO_SPANS, VIDEOS
from tunesmith.data.template import IGNORE, ChatTemplate
from tunesmith.data.video import VideoSampling, read_frames
from tunesmith.errors import TunesmithError
from tunesmith.train.stages.sft import SftStage
from vision_models import (  # noqa: F401 (fixtures)
    assert_batch_loss_is_per_sample_and_naive,
    image_processor,
    llava_dir,
    naive_loss,
    vl25_dir,
    vl_dir,
)

VIDEO_FILES = [LF_DATA / "mllm_demo_data" / name for name in ("1.mp4", "2.avi", "3.mp4")]
SAMPLING = VideoSampling(fps=0.5, max_frames=4)  # 3 to 4 frames a video: 2 temporal patches


def all_frames(path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.mark.parametrize("path", VIDEO_FILES, ids=lambda path: path.name)
def test_frames_are_sampled_as_llamafactory_samples_them(path):
    import av

    frames = all_frames(path)
    with av.open(str(path)) as container:
        seconds = container.duration / av.time_base  # the container's duration: the stream's may differ a little
    for sampling in (VideoSampling(fps=2.0, max_frames=128), VideoSampling(fps=2.0, max_frames=5)):
        count = min(len(frames), sampling.max_frames, int(seconds * sampling.fps))
        picked = np.linspace(0, len(frames) - 1, count).astype(np.int32)
        sampled = read_frames(str(path), sampling)
        assert len(sampled.images) == count
        for index, image in zip(picked, sampled.images):
            assert np.array_equal(np.asarray(image), frames[index])
        assert sampled.fps == pytest.approx(count / seconds, rel=0.02)


def test_video_patches_pair_frames_in_time_as_the_image_processor_lays_out_each_frame():
    from PIL import Image

    from tunesmith.data.vision_processor import video_patches

    processor = image_processor()
    first, second = (Image.open(LF_DATA / "mllm_demo_data" / name).convert("RGB").resize((90, 60))
                     for name in ("1.jpg", "2.jpg"))
    still, grid = video_patches(processor, [first, first])  # a still video is the image itself
    image = processor(images=[first], return_tensors="np")
    assert grid == image["image_grid_thw"][0].tolist()
    np.testing.assert_array_equal(still, image["pixel_values"])
    moving, grid = video_patches(processor, [first, second, second])  # an odd count repeats the last frame
    assert grid[0] == 2
    slots = moving.reshape(2, -1, 3, 2, 14, 14)  # [t, patches, channels, frame in the pair, 14, 14]
    frames = [processor(images=[frame], return_tensors="np")["pixel_values"].reshape(-1, 3, 2, 14, 14)[:, :, 0]
              for frame in (first, second)]
    for (t, slot), frame in zip([(0, 0), (0, 1), (1, 0), (1, 1)], [frames[0], frames[1], frames[1], frames[1]]):
        np.testing.assert_array_equal(slots[t, :, :, slot], frame)


@pytest.fixture(scope="module")
def video_parts(vl_dir):
    from tunesmith.data.vision_processor import load_media
    from tunesmith.model.load import load_model, tokenizer_from

    tokenizer = tokenizer_from(vl_dir)
    template = ChatTemplate(tokenizer, "auto", load_media(vl_dir, tokenizer, SAMPLING))
    stage = SftStage()
    stage.media = template.media
    records = load_records(DataConfig(datasets=["mllm_video_demo"], dataset_dir=str(LF_DATA)))
    model = load_model(ModelConfig(path=str(vl_dir), dtype="float32")).eval()
    return template, partial(stage.collate, pad_id=tokenizer.pad_token_id), records, model


def test_video_placeholders_expand_to_the_models_count_and_never_train(video_parts):
    template, collate, records, _ = video_parts
    samples = template.encode_many(records)
    media = template.media
    for record, sample in zip(records, samples):
        assert sample.meta[VIDEOS] == record.videos
        ((start, stop),) = sample.meta[VIDEO_SPANS]
        grid = media.video_pixels(record.videos)["video_grid_thw"][0]
        assert sample.input_ids[start:stop] == [media.start_id] + [media.video_pad_id] * (int(grid.prod()) // 4) + \
            [media.end_id]
        assert all(label == IGNORE for label in sample.labels[start:stop])
        assert any(label != IGNORE for label in sample.labels[stop:])
    batch = collate(samples)
    assert batch["video_grid_thw"].tolist() == [[2, *grid] for grid in batch["video_grid_thw"][:, 1:].tolist()]
    assert (batch["mm_token_type_ids"] == 2).sum() == batch["video_grid_thw"].prod(-1).sum() // 4


def test_video_batch_loss_equals_its_samples_one_by_one_and_the_models_own_forward(video_parts):
    template, collate, records, model = video_parts
    assert_batch_loss_is_per_sample_and_naive(model, collate, template.encode_many(records), "pixel_values_videos")


def test_a_model_without_a_video_path_and_a_missing_pyav_are_clear_errors(llava_dir, monkeypatch):
    from vision_models import vision_template

    records = load_records(DataConfig(datasets=["mllm_video_demo"], dataset_dir=str(LF_DATA), max_samples=1))
    with pytest.raises(TunesmithError, match="record 1: the record has videos but the model does not read videos"):
        vision_template(llava_dir).encode_many(records)
    monkeypatch.setitem(__import__("sys").modules, "av", None)  # as where PyAV is not installed
    with pytest.raises(TunesmithError, match=r"reading videos needs PyAV: pip install 'tunesmith\[video\]'"):
        read_frames(str(VIDEO_FILES[0]), SAMPLING)


def packed_equals_unpacked(template, collate, model, samples):
    """(unpacked loss, packed loss) of the samples, all packed into one row."""
    from tunesmith.data.packing import pack_samples

    packed = pack_samples(samples, max_length=sum(len(sample.input_ids) for sample in samples))
    assert len(packed) == 1
    with torch.no_grad():
        return SftStage().loss(model, collate(samples))[0], SftStage().loss(model, collate(packed))[0]


def test_a_packed_video_batch_has_the_loss_of_the_unpacked_one(video_parts):
    """Each packed sample's M-RoPE positions come from its own videos' grids (model/vision.py)."""
    template, collate, records, model = video_parts
    samples = template.encode_many(records)
    assert all(sample.labels[1] == IGNORE for sample in samples)  # packing drops each sample's first label
    unpacked, packed = packed_equals_unpacked(template, collate, model, samples)
    torch.testing.assert_close(packed, unpacked, rtol=1e-5, atol=1e-4)


def test_qwen2_5_vl_places_video_patches_by_their_seconds(vl25_dir):
    """Qwen2.5-VL takes second_per_grid_ts, the seconds a temporal patch spans (2 frames at the sampled rate);
    the batch, the packed row and the model's own forward agree, and the seconds change the loss."""
    from tunesmith.data.vision_processor import load_media
    from tunesmith.model.load import load_model, tokenizer_from

    folder = vl25_dir
    tokenizer = tokenizer_from(folder)
    template = ChatTemplate(tokenizer, "auto", load_media(folder, tokenizer, SAMPLING))
    stage = SftStage()
    stage.media = template.media
    collate = partial(stage.collate, pad_id=tokenizer.pad_token_id)
    records = load_records(DataConfig(datasets=["mllm_video_demo"], dataset_dir=str(LF_DATA)))[1:]  # the short two
    samples = template.encode_many(records)
    batch = collate(samples)
    rates = [read_frames(path, SAMPLING).fps for record in records for path in record.videos]
    torch.testing.assert_close(batch["second_per_grid_ts"], torch.tensor([2 / rate for rate in rates]))
    model = load_model(ModelConfig(path=str(folder), dtype="float32")).eval()
    unpacked, packed = packed_equals_unpacked(template, collate, model, samples)
    with torch.no_grad():
        naive = naive_loss(model, batch)
        untimed = stage.loss(model, {key: value for key, value in batch.items() if key != "second_per_grid_ts"})[0]
    torch.testing.assert_close(packed, unpacked, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(naive, unpacked, rtol=1e-5, atol=1e-4)
    assert not torch.isclose(untimed, unpacked)


def test_llamafactory_video_keys_translate():
    from tunesmith.config.llamafactory import translate

    data = translate({"video_fps": 1.0, "video_maxlen": 8}).config["data"]
    assert (data["video_fps"], data["video_max_frames"]) == (1.0, 8)


def test_dpo_pairs_with_a_video_batch_like_single_pairs(video_parts, tmp_path):
    import json
    import shutil

    from tunesmith.train.stages import get_stage
    from tunesmith.train.stages.preference import REJECTED, reply_logps

    template, _, _, model = video_parts
    for path in VIDEO_FILES[1:]:
        shutil.copy(path, tmp_path / path.name)
    rows = [{"conversations": [{"from": "human", "value": "<video>What happens?"}], "chosen": {"from": "gpt",
             "value": good}, "rejected": {"from": "gpt", "value": "Nothing at all."}, "videos": [path.name]}
            for path, good in zip(VIDEO_FILES[1:], ["She cooks.", "A dog runs."])]
    (tmp_path / "pairs.json").write_text(json.dumps(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"pairs": {
        "file_name": "pairs.json", "formatting": "sharegpt", "ranking": True,
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "videos": "videos"}}}))
    records = load_records(DataConfig(datasets=["pairs"], dataset_dir=str(tmp_path)), "preference")
    stage = get_stage("dpo")
    stage.media = template.media
    samples = [stage.encode(record, template, DataConfig(datasets=["pairs"], max_length=1024)) for record in records]
    assert all(row.meta[VIDEOS] == record.videos for record, sample in zip(records, samples)
               for row in (sample, sample.meta[REJECTED]))
    collate = partial(stage.collate, pad_id=template.tokenizer.pad_token_id)
    with torch.no_grad():
        batched = reply_logps(model, collate(samples))[0]
        singles = torch.cat([reply_logps(model, collate([sample]))[0].view(2, 1) for sample in samples], dim=1)
    torch.testing.assert_close(batched, singles.flatten(), rtol=1e-5, atol=1e-4)
