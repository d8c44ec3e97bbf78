"""Mixture of experts (Qwen3-MoE): the router's load-balancing loss joins the training loss as transformers adds
it, weighted like the main loss under accumulation; LoRA reaches the fused expert weights; estimate counts the
parameters a token passes through."""

from __future__ import annotations

import json

import pytest
import torch

from family_models import FAMILIES, build_family_model
from stage_harness import assistant, build, user

RECORDS = [[user("What is the capital of France?"), assistant("Paris is the capital of France.")],
           [user("Name a colour."), assistant("Blue.")]]
MODEL_COEF = 0.5  # the tiny model's router_aux_loss_coef: large, so that a missing term shows


@pytest.fixture(scope="module")
def moe_dir(tmp_path_factory):
    return build_family_model("qwen3_moe", tmp_path_factory.mktemp("moe"), router_aux_loss_coef=MODEL_COEF)


@pytest.fixture(scope="module")
def moe_tokenizer(moe_dir):
    """Loaded once: Qwen3's 150k-entry tokenizer takes seconds to load on a small CPU."""
    from tunesmith.config.schema import ModelConfig
    from tunesmith.model.load import load_tokenizer

    return load_tokenizer(ModelConfig(path=str(moe_dir)))


@pytest.fixture
def loaded_once(moe_tokenizer, monkeypatch):
    from tunesmith.model import load

    monkeypatch.setattr(load, "load_tokenizer", lambda config, source=None: moe_tokenizer)


def first_step(moe_dir, tmp_path, **train) -> tuple[dict, list, object]:
    """(metrics of step 1, the encoded samples, the stage) of a full-method sft run on RECORDS."""
    from tunesmith.data.records import Conversation

    records = [Conversation(messages) for messages in RECORDS]
    stage, trainer, data, _, _ = build(moe_dir, tmp_path, records, {"kind": "sft"}, "full", max_steps=1, **train)
    trainer.run()
    return json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0]), data.train, stage


def transformers_loss(moe_dir, batch) -> tuple[float, float, float]:
    """(cross entropy, aux loss, their sum as Qwen3MoeForCausalLM computes it with its own coefficient)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(moe_dir, dtype=torch.float32)
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                    output_router_logits=True)
    return float(out.loss - MODEL_COEF * out.aux_loss), float(out.aux_loss), float(out.loss)


@pytest.mark.parametrize("coef", [None, 0.0, 2.0])
def test_router_loss_joins_the_loss_as_transformers_adds_it(moe_dir, loaded_once, tmp_path, coef):
    metrics, samples, stage = first_step(moe_dir, tmp_path, batch_size=2, router_aux_loss_coef=coef)
    ce, aux, _ = transformers_loss(moe_dir, stage.collate(samples, pad_id=0))

    weight = MODEL_COEF if coef is None else coef
    assert metrics["loss"] == pytest.approx(ce + weight * aux, rel=1e-5)
    if weight:
        assert metrics["aux_loss"] == pytest.approx(aux, rel=1e-5)
    else:
        assert "aux_loss" not in metrics


def test_router_loss_is_weighted_by_each_micro_batch_target_tokens(moe_dir, loaded_once, tmp_path):
    metrics, samples, stage = first_step(moe_dir, tmp_path, batch_size=1, grad_accum=2)
    units = [sample.num_targets for sample in samples]
    per_sample = [transformers_loss(moe_dir, stage.collate([sample], pad_id=0)) for sample in samples]

    naive_aux = sum(u * aux for u, (_, aux, _) in zip(units, per_sample)) / sum(units)
    naive_ce = sum(u * ce for u, (ce, _, _) in zip(units, per_sample)) / sum(units)
    assert metrics["aux_loss"] == pytest.approx(naive_aux, rel=1e-5)
    assert metrics["loss"] == pytest.approx(naive_ce + MODEL_COEF * naive_aux, rel=1e-5)


def test_lora_reaches_the_fused_expert_weights_and_merges(moe_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from tunesmith.config.method_kinds import parse_method
    from tunesmith.model.methods import apply_method

    method = parse_method({"kind": "lora", "rank": 4, "targets": ["q_proj"],
                           "target_parameters": ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]})
    model = apply_method(AutoModelForCausalLM.from_pretrained(moe_dir, dtype=torch.float32), method)
    ids = torch.tensor([[3, 14, 15, 92, 65, 35]])
    model(input_ids=ids, labels=ids).loss.backward()

    # lora_B: while B is zero, A gets no gradient
    expert_grads = [p.grad for n, p in model.named_parameters() if "experts" in n and "lora_B" in n]
    assert len(expert_grads) == 2 * 3 and all(g is not None and g.abs().sum() > 0 for g in expert_grads)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
        adapted = model(input_ids=ids).logits
        merged = model.merge_and_unload()(input_ids=ids).logits
    torch.testing.assert_close(merged, adapted, rtol=1e-4, atol=1e-5)


def test_estimate_counts_total_and_active_parameters(tmp_path):
    from transformers import AutoConfig

    from tunesmith.config import validate_config
    from tunesmith.model.estimate import estimate_memory

    real = FAMILIES["qwen3_moe"]["real"]
    AutoConfig.for_model("qwen3_moe", **real, vocab_size=151936).save_pretrained(tmp_path / "model")
    config = validate_config({"model": {"path": str(tmp_path / "model")}, "method": {"kind": "full"},
                              "data": {"datasets": ["unused"], "max_length": 32}})

    estimate = estimate_memory(config)

    total, active = estimate.params.total, estimate.active_params
    idle_experts = real["num_experts"] - real["num_experts_per_tok"]
    expert = 3 * real["hidden_size"] * real["moe_intermediate_size"]  # gate, up and down projections
    assert active == total - real["num_hidden_layers"] * idle_experts * expert
    assert round(total / 1e9, 1) == 30.5 and abs(active / 1e9 - 3.3) < 0.1  # Qwen's card: 30.5B, 3.3B activated
    assert f"active params per token (MoE): {active:,}" in estimate.report()


def test_llamafactory_moe_aux_loss_coef_becomes_the_router_loss_weight():
    from tunesmith.config.llamafactory import translate

    translation = translate({"model_name_or_path": "Qwen/Qwen3-30B-A3B", "moe_aux_loss_coef": 0.01})

    assert translation.config["train"]["router_aux_loss_coef"] == 0.01
    assert translation.applied["moe_aux_loss_coef"] == "train.router_aux_loss_coef"


def test_router_loss_is_counted_once_under_gradient_checkpointing(moe_dir, loaded_once, tmp_path, monkeypatch):
    """Checkpointing reruns each layer's forward during backward; the router hooks must not record those reruns
    (one set of router logits per layer), and the loss, the aux term and the gradient equal a run without it."""
    from tunesmith.model.moe import RouterLoss

    counted = []
    aux_loss = RouterLoss.aux_loss
    monkeypatch.setattr(RouterLoss, "aux_loss", lambda self, logits, mask: counted.append(len(logits))
                        or aux_loss(self, logits, mask))
    (tmp_path / "plain").mkdir(), (tmp_path / "checkpointed").mkdir()
    plain, samples, stage = first_step(moe_dir, tmp_path / "plain", batch_size=2)
    checkpointed, _, _ = first_step(moe_dir, tmp_path / "checkpointed", batch_size=2, gradient_checkpointing=True)
    _, aux, _ = transformers_loss(moe_dir, stage.collate(samples, pad_id=0))

    layers = json.loads((moe_dir / "config.json").read_text())["num_hidden_layers"]
    assert counted == [layers, layers]
    assert checkpointed["aux_loss"] == pytest.approx(aux, rel=1e-5)
    for key in ("loss", "aux_loss", "grad_norm"):
        assert checkpointed[key] == pytest.approx(plain[key], rel=1e-5)
