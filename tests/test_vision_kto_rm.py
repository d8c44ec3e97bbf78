"""KTO and reward-model training on images: an example's images are in its prompt, so its rows (kto's KL row,
both replies of an rm pair) carry them; the stage's loss on an image batch equals the naive formula on the
model's own forward run one sample at a time."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from conftest import LF_DATA
from tunesmith.config.schema import DataConfig, ModelConfig
from tunesmith.data.dataset import load_records
from tunesmith.data.media_render import IMAGES
from tunesmith.data.template import IGNORE
from vision_models import vision_template, vl_dir  # noqa: F401 (vl_dir: a fixture)

EXAMPLES = [("<image>Who is this?", "A football player.", True),
            ("Describe <image> briefly, please, in a few words.", "A cat on a sofa.", False),
            ("<image>Where?", "On a pitch.", True)]


def image_dataset(folder, rows: list[dict], **entry) -> None:
    """A dataset 'data' in `folder` (with LLaMA-Factory's demo images beside it) of sharegpt-style rows."""
    shutil.copytree(LF_DATA / "mllm_demo_data", folder / "mllm_demo_data")
    (folder / "data.json").write_text(json.dumps(rows))
    (folder / "dataset_info.json").write_text(json.dumps({"data": {"file_name": "data.json", "formatting":
                                                                   "sharegpt", **entry}}))


@pytest.fixture(scope="module")
def model(vl_dir):
    from tunesmith.model.load import load_model

    return load_model(ModelConfig(path=str(vl_dir), dtype="float32")).eval()


def stage_with_media(kind: str, template, **settings):
    from tunesmith.config.stage_kinds import parse_stage
    from tunesmith.train.stages import get_stage

    stage = get_stage(kind, parse_stage({"kind": kind, **settings}))
    stage.media = template.media
    return stage


def model_inputs(media, ids: list[int], images: list[str]) -> dict:
    """One sample as the model's own forward takes it, pixels from the processor."""
    input_ids = torch.tensor([ids])
    return {"input_ids": input_ids, "mm_token_type_ids": media.token_types(input_ids), **media.pixels(images)}


def naive_reply_logp(model, media, sample) -> torch.Tensor:
    """Sum of log softmax(logits)[next token] over the labelled tokens, from the model's full logits."""
    logits = model(**model_inputs(media, sample.input_ids, sample.meta[IMAGES])).logits[0, :-1].float()
    labels = torch.tensor(sample.labels[1:])
    trained = labels != IGNORE
    return logits.log_softmax(-1)[trained].gather(-1, labels[trained, None]).sum()


def test_kto_rows_carry_their_images_and_the_loss_is_the_naive_formula(vl_dir, model, tmp_path):
    from tunesmith.train.stages.kto import KL_SAMPLE, assign_kl_partners
    from tunesmith.train.stages.preference import REF_LOGPS

    image_dataset(tmp_path, [{"messages": [{"role": "user", "content": prompt},
                                           {"role": "assistant", "content": reply}], "label": good,
                              "images": [f"mllm_demo_data/{n + 1}.jpg"]}
                             for n, (prompt, reply, good) in enumerate(EXAMPLES)],
                  columns={"messages": "messages", "kto_tag": "label", "images": "images"},
                  tags={"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"})
    records = load_records(DataConfig(datasets=["data"], dataset_dir=str(tmp_path)), "kto")
    template = vision_template(vl_dir)
    beta, weights = 0.3, (1.0, 1.5)
    stage = stage_with_media("kto", template, beta=beta, desirable_weight=weights[0], undesirable_weight=weights[1])
    data = DataConfig(datasets=["data"], max_length=512)
    samples = [stage.encode(record, template, data) for record in records]
    assign_kl_partners(samples, data.max_length)
    media = template.media
    for record, sample in zip(records, samples):
        for row in (sample, sample.meta[KL_SAMPLE]):
            assert row.meta[IMAGES] == record.images
            assert row.input_ids.count(media.pad_id) == media.token_count(record.images[0])
    with torch.no_grad():
        logps = torch.stack([naive_reply_logp(model, media, sample) for sample in samples])
        kl_logps = torch.stack([naive_reply_logp(model, media, sample.meta[KL_SAMPLE]) for sample in samples])
    # A reference that differs from the policy: its log-probs given per sample, as precompute_ref stores them.
    generator = torch.Generator().manual_seed(0)
    ref, ref_kl = logps + torch.randn(3, generator=generator), kl_logps - torch.rand(3, generator=generator)
    for index, sample in enumerate(samples):
        sample.meta[REF_LOGPS] = [float(ref[index]), float(ref_kl[index])]
    with torch.no_grad():
        loss, _ = stage.loss(model, stage.collate(samples, template.tokenizer.pad_token_id))
    z = (kl_logps - ref_kl).mean().clamp(min=0)
    naive = sum(weights[0] * (1 - torch.sigmoid(beta * (logp - reference - z))) if good else
                weights[1] * (1 - torch.sigmoid(beta * (z - (logp - reference))))
                for logp, reference, (_, _, good) in zip(logps, ref, EXAMPLES))
    torch.testing.assert_close(loss, naive.float(), rtol=1e-4, atol=1e-5)


def test_rm_pairs_carry_their_images_the_loss_is_the_naive_formula_and_the_model_loads_back(vl_dir, model, tmp_path):
    from tunesmith.train.stages.preference import REJECTED

    image_dataset(tmp_path, [{"conversations": [{"from": "human", "value": prompt}],
                              "chosen": {"from": "gpt", "value": reply}, "rejected": {"from": "gpt", "value": "No."},
                              "images": [f"mllm_demo_data/{n + 1}.jpg"]}
                             for n, (prompt, reply, _) in enumerate(EXAMPLES)], ranking=True,
                  columns={"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "images": "images"})
    records = load_records(DataConfig(datasets=["data"], dataset_dir=str(tmp_path)), "preference")
    template = vision_template(vl_dir)
    stage = stage_with_media("rm", template)
    samples = [stage.encode(record, template, DataConfig(datasets=["data"], max_length=512)) for record in records]
    torch.manual_seed(0)
    scorer = stage.prepare(model, _NoData(), None, "cpu")
    with torch.no_grad():
        loss, metrics = stage.loss(scorer, stage.collate(samples, template.tokenizer.pad_token_id))
        naive = 0.0
        for record, sample in zip(records, samples):
            rewards = []
            for row in (sample, sample.meta[REJECTED]):
                assert row.meta[IMAGES] == record.images
                out = model(**model_inputs(template.media, row.input_ids, row.meta[IMAGES]), output_hidden_states=True)
                last = max(i for i, label in enumerate(row.labels) if label != IGNORE)
                rewards.append(scorer.head(out.hidden_states[-1][0, last]).squeeze())
            naive = naive - F.logsigmoid(rewards[0] - rewards[1])
    torch.testing.assert_close(loss, naive, rtol=1e-4, atol=1e-5)
    # Saved as an rm run saves it, the reward model loads back as a scorer (ppo / grpo) with its head.
    from tunesmith.model.value_head import load_scorer

    scorer.save_pretrained(tmp_path / "rm")
    loaded = load_scorer(tmp_path / "rm", ModelConfig(path=str(vl_dir), dtype="float32"))
    text = template.tokenizer("A cat on a sofa.", return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**text), scorer(**text), rtol=1e-5, atol=1e-5)


class _NoData:
    """What rm's prepare reads of the prepared data: no truncated prompts to report."""

    train: list = []
    val: list = []
