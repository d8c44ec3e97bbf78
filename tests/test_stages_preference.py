"""rm, dpo and kto stages on the tiny model: encoding, invariants, learning, and every method."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from conftest import build_tiny_model
from stage_harness import assistant, build, user
from tunesmith.data.records import KtoExample, Preference
from tunesmith.data.template import IGNORE
from tunesmith.train.metrics import read_metrics
from tunesmith.train.stages.preference import REJECTED, reference_logps

METHODS = ["lora", "full", "freeze"]


@pytest.fixture(scope="module")
def wide_model_dir(tmp_path_factory, smollm2_dir):
    """The tiny model with hidden size 64: bitsandbytes' 4-bit blocks need rows of 64 (qlora)."""
    return build_tiny_model(tmp_path_factory.mktemp("wide"), smollm2_dir, hidden_size=64, intermediate_size=128)


def pairs(n=8):
    """A separable toy set: the chosen reply always praises, the rejected one always complains."""
    topics = ["the sea", "a cat", "green tea", "the moon", "music", "rain", "bread", "a bike", "maths", "snow"]
    return [Preference([user(f"What do you think of {topics[i % len(topics)]}?")],
                       assistant("good good good, wonderful"), assistant("bad bad bad, awful"))
            for i in range(n)]


def kto_examples(n=8):
    return [KtoExample([user(f"Question {i}?")], assistant("good" if i % 2 else "bad"), desirable=bool(i % 2))
            for i in range(n)]


def test_pair_encoding_labels_only_the_last_reply_and_truncates_the_prompt_from_the_left(tiny_model_dir, tmp_path):
    multi_turn = Preference([user("first " * 30), assistant("earlier reply"), user("second question")],
                            assistant("the chosen answer"), assistant("a rejected one"))
    stage, _, _, config, template = build(tiny_model_dir, tmp_path, [], {"kind": "dpo"})
    full = stage.encode(multi_turn, template, config.data)
    reply = template.tokenizer.decode([t for t in full.labels if t != IGNORE])
    assert reply.startswith("the chosen answer") and "earlier" not in reply
    assert template.tokenizer.decode([t for t in full.meta[REJECTED].labels if t != IGNORE]).startswith("a rejected")
    short = config.data.model_copy(update={"max_length": len(full.input_ids) - 10})
    cut = stage.encode(multi_turn, template, short)
    assert len(cut.input_ids) <= short.max_length and cut.meta["prompt_truncated"]
    assert cut.input_ids == full.input_ids[10:]  # the oldest prompt tokens went, the reply stayed whole
    assert cut.labels[-cut.num_targets:] == full.labels[-full.num_targets:]
    tiny = config.data.model_copy(update={"max_length": 4})
    assert stage.encode(multi_turn, template, tiny).num_targets == 0  # reply alone does not fit: dropped


def test_an_empty_reply_after_a_multi_turn_prompt_is_the_turn_closing_alone(tiny_model_dir, tmp_path):
    """What PPO's scorer meets when the policy answers nothing: not the earlier turn's reply, not a crash."""
    from tunesmith.train.stages.preference import encode_reply

    *_, template = build(tiny_model_dir, tmp_path, [], {"kind": "dpo"})
    prompt = [user("first question"), assistant("earlier reply"), user("second question")]
    ids, start = encode_reply(template, prompt, assistant(""))
    assert ids[:start] == template.prompt_ids(prompt)
    rendered = template.tokenizer.apply_chat_template(prompt + [assistant("")], tokenize=False)
    assert template.tokenizer.decode(ids) == rendered
    assert start < len(ids)  # the closing is left to score


def test_dpo_loss_is_ln2_at_step_0_and_reference_stays_fixed(tiny_model_dir, tmp_path):
    stage, trainer, data, _, _ = build(tiny_model_dir, tmp_path, pairs(), {"kind": "dpo", "beta": 0.5},
                                       max_steps=3, lr=1e-2)
    batch = stage.collate(data.train[:4], 0)
    loss, metrics = stage.loss(trainer.model, batch)
    assert float(loss) / 4 == pytest.approx(math.log(2), rel=1e-5)
    assert float(metrics["accuracy"]) == 0.0
    before = reference_logps(stage.reference, trainer.model, batch)
    trainer.run()
    after = reference_logps(stage.reference, trainer.model, batch)
    torch.testing.assert_close(before, after)
    loss_after, _ = stage.loss(trainer.model, batch)
    assert float(loss_after) / 4 < math.log(2)  # the policy moved away from the reference


@pytest.mark.parametrize("method", ["lora", "full"])
def test_precomputed_reference_equals_live_one(tiny_model_dir, tmp_path, method):
    stage, trainer, data, _, _ = build(tiny_model_dir, tmp_path, pairs(4), {"kind": "dpo", "precompute_ref": True},
                                       method=method)
    batch = stage.collate(data.train, 0)
    stored = batch.pop("ref_logps")
    torch.testing.assert_close(stored, reference_logps(stage.reference, trainer.model, batch))


def test_reward_model_separates_a_toy_set(tiny_model_dir, tmp_path):
    stage, trainer, data, _, _ = build(tiny_model_dir, tmp_path, pairs(16), {"kind": "rm"}, method="full",
                                       max_steps=25, lr=3e-3, batch_size=8)
    trainer.run()
    trainer.model.eval()
    with torch.no_grad():
        _, metrics = stage.loss(trainer.model, stage.collate(data.train, 0))
    assert float(metrics["accuracy"]) / len(data.train) > 0.9
    logged = read_metrics(tmp_path / "run")
    assert {"rewards/chosen", "rewards/rejected", "accuracy", "margin"} <= set(logged[-1])


COMBINATIONS = [(knobs, method) for knobs in ({"kind": "rm"}, {"kind": "dpo"}, {"kind": "kto"}) for method in METHODS]
COMBINATIONS += [({"kind": "dpo", "preference_loss": loss}, "lora") for loss in ("ipo", "hinge", "orpo", "simpo")]
if importlib.util.find_spec("bitsandbytes") is not None:
    COMBINATIONS += [({"kind": kind}, "qlora") for kind in ("rm", "dpo", "kto")]


@pytest.mark.parametrize(("stage_knobs", "method"), COMBINATIONS,
                         ids=["-".join([*map(str, knobs.values()), method]) for knobs, method in COMBINATIONS])
def test_every_stage_and_method_trains_two_steps(request, tiny_model_dir, tmp_path, stage_knobs, method):
    records = kto_examples() if stage_knobs["kind"] == "kto" else pairs()
    model_dir = request.getfixturevalue("wide_model_dir") if method == "qlora" else tiny_model_dir
    _, trainer, _, _, _ = build(model_dir, tmp_path, records, stage_knobs, method=method)
    trained = [p for p in trainer.model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trained]
    trainer.run()
    logged = read_metrics(tmp_path / "run")
    assert [r["step"] for r in logged if "loss" in r] == [1, 2]
    assert all(math.isfinite(r["loss"]) for r in logged if "loss" in r)
    assert any(not torch.equal(a, b) for a, b in zip(before, trained))


def test_rm_saves_its_value_head_and_loads_back_as_a_scorer(tiny_model_dir, tmp_path):
    from tunesmith.config.schema import ModelConfig
    from tunesmith.model.value_head import VALUE_HEAD_FILE, load_scorer

    stage, trainer, data, _, _ = build(tiny_model_dir, tmp_path, pairs(4), {"kind": "rm"})
    trainer.run()
    folder = tmp_path / "saved"
    trainer.model.save_pretrained(folder, safe_serialization=True)
    assert (folder / VALUE_HEAD_FILE).is_file() and (folder / "adapter_config.json").is_file()
    scorer = load_scorer(folder, ModelConfig(path=str(tiny_model_dir)))
    batch = stage.collate(data.train, 0)
    trainer.model.eval()
    with torch.no_grad():
        expected, _ = stage.loss(trainer.model, batch)
        got, _ = stage.loss(scorer, batch)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("kind", "dataset"), [("dpo", "dpo_en_demo"), ("rm", "dpo_en_demo"), ("kto", "kto_en_demo")])
def test_train_end_to_end_on_real_preference_data(tiny_model_dir, tmp_path, kind, dataset):
    from conftest import LF_DATA, tiny_run_config
    from tunesmith.config.load import validate_config
    from tunesmith.model.value_head import VALUE_HEAD_FILE
    from tunesmith.train.run import train

    raw = tiny_run_config(tiny_model_dir, LF_DATA, tmp_path / "run", stage={"kind": kind},
                          data={"datasets": [dataset], "max_samples": 6, "max_length": 256, "cache": False},
                          train={"max_steps": 2, "batch_size": 2})
    run_dir = train(validate_config(raw))
    logged = [record for record in read_metrics(run_dir) if "loss" in record]
    assert len(logged) == 2 and all(math.isfinite(record["loss"]) for record in logged)
    assert (run_dir / "adapter_config.json").is_file()
    assert (run_dir / VALUE_HEAD_FILE).is_file() == (kind == "rm")
