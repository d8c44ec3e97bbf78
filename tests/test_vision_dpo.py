"""DPO on images: the pair's images are in its shared prompt, so both rows carry them; the loss of a batch of
pairs equals the pairs' losses one by one; stages without image support (ppo, grpo) refuse image data by name."""

from __future__ import annotations

import json
import shutil
from functools import partial

import pytest
import torch

from conftest import LF_DATA
from tunesmith.config.schema import DataConfig
from tunesmith.data.dataset import load_records
from tunesmith.data.media_render import IMAGES
from vision_models import vision_template, vl_dir  # noqa: F401 (vl_dir: a fixture)

PAIRS = [("<image>Who is this?", "A football player.", "A cat."),
         ("Describe <image> briefly, please, in a few words.", "Players celebrate.", "Nothing."),
         ("<image>Where?", "On a pitch.", "In space, far from any football ground at all.")]


@pytest.fixture
def pair_records(tmp_path):
    shutil.copytree(LF_DATA / "mllm_demo_data", tmp_path / "mllm_demo_data")
    rows = [{"conversations": [{"from": "human", "value": prompt}], "chosen": {"from": "gpt", "value": good},
             "rejected": {"from": "gpt", "value": bad}, "images": [f"mllm_demo_data/{n + 1}.jpg"]}
            for n, (prompt, good, bad) in enumerate(PAIRS)]
    (tmp_path / "pairs.json").write_text(json.dumps(rows))
    entry = {"file_name": "pairs.json", "formatting": "sharegpt", "ranking": True,
             "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "images": "images"}}
    (tmp_path / "dataset_info.json").write_text(json.dumps({"pairs": entry}))
    return load_records(DataConfig(datasets=["pairs"], dataset_dir=str(tmp_path)), "preference")


def dpo_stage(vl_dir):
    from tunesmith.train.stages import get_stage

    template = vision_template(vl_dir)
    stage = get_stage("dpo")
    stage.media = template.media
    return stage, template


def test_dpo_pairs_carry_their_prompts_images_and_batch_like_single_pairs(vl_dir, pair_records):
    from tunesmith.model.load import load_model
    from tunesmith.config.schema import ModelConfig
    from tunesmith.train.stages.preference import REJECTED, reply_logps

    stage, template = dpo_stage(vl_dir)
    data = DataConfig(datasets=["pairs"], max_length=512)
    samples = [stage.encode(record, template, data) for record in pair_records]
    media = stage.media
    for record, sample in zip(pair_records, samples):
        for row in (sample, sample.meta[REJECTED]):
            assert row.meta[IMAGES] == record.images
            assert row.input_ids.count(media.pad_id) == media.token_count(record.images[0])
    collate = partial(stage.collate, pad_id=template.tokenizer.pad_token_id)
    batch = collate(samples)
    assert batch["image_grid_thw"].shape[0] == 2 * len(samples)  # chosen rows' images, then rejected rows'
    model = load_model(ModelConfig(path=str(vl_dir), dtype="float32")).eval()
    with torch.no_grad():
        batched = reply_logps(model, batch)[0]
        singles = torch.cat([reply_logps(model, collate([sample]))[0].view(2, 1) for sample in samples], dim=1)
    torch.testing.assert_close(batched, singles.flatten(), rtol=1e-5, atol=1e-4)


def test_a_stage_without_image_support_refuses_image_data_before_loading_the_model(vl_dir, tmp_path):
    from tunesmith.config.load import validate_config
    from tunesmith.errors import TunesmithError
    from tunesmith.train.run import train

    config = validate_config({
        "model": {"path": str(vl_dir)}, "stage": {"kind": "grpo", "reward_funcs": ["length"]},
        "data": {"datasets": ["mllm_demo"], "dataset_dir": str(LF_DATA), "cache": False},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "batch_size": 8},
    })
    with pytest.raises(TunesmithError, match=r"mllm_demo.json: record 1: stage grpo does not train on images"):
        train(config)
