"""Golden losses on SmolLM2-135M-Instruct's real weights, each checked against an independent computation.

On real weights the loss of a target token is far from ln V, so a token trained that should not be (or the
reverse) moves the loss visibly. The reference here never calls tunesmith's encoder or losses: the ChatML
text is written out span by span, each span tokenized alone and labelled by hand (trained or not), and the
loss is a plain PyTorch forward and cross entropy. sft goes through `tunesmith train` (one step of LoRA, whose
zero-initialised B leaves the first forward equal to the base model's); dpo and kto go through their stage's
encode / collate / loss with a LoRA whose B is random, so that the policy differs from its reference (the base
model, adapter disabled) and the losses depend on every masked log-prob.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO  # noqa: F401  (conftest sets up the session's cache folder first)

SYSTEM = "Be brief."
CONVERSATIONS = [
    [("user", "Hi"), ("assistant", "Hello! How can I help?"), ("user", "What is 2+2?"), ("assistant", "2+2 is 4.")],
    [("user", "Name a colour of the sky."), ("assistant", "Blue.")],
]
RTOL = 2e-5


def chatml_spans(turns, train_on_prompt=False, mask_history=False) -> list[tuple[str, bool]]:
    """(text, trained) pieces of the conversation as SmolLM2's ChatML renders it: a reply is trained with the
    end-of-turn token and the newline after it."""
    last_reply = max(i for i, (role, _) in enumerate(turns) if role == "assistant")
    spans = [(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n", False)]
    for index, (role, text) in enumerate(turns):
        if role == "user":
            spans.append((f"<|im_start|>user\n{text}<|im_end|>\n", False))
        else:
            spans += [("<|im_start|>assistant\n", False),
                      (f"{text}<|im_end|>\n", not mask_history or index == last_reply)]
    return [(text, True) for text, _ in spans] if train_on_prompt else spans


def ids_and_labels(tokenizer, spans) -> tuple[list[int], list[int]]:
    ids, labels = [], []
    for text, trained in spans:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if trained else [-100] * len(piece)
    return ids, labels


def token_logps(model, ids: list[int], labels: list[int]) -> torch.Tensor:
    """log p(token t | tokens < t) of every labelled token, by a plain forward of the one sequence."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].double()
    targets = torch.tensor(labels[1:])
    kept = targets != -100
    return -F.cross_entropy(logits[kept], targets[kept], reduction="none")


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.mark.parametrize("options", [{}, {"packing": True}, {"train_on_prompt": True}, {"mask_history": True}],
                         ids=["plain", "packing", "train_on_prompt", "mask_history"])
def test_sft_first_step_loss_matches_a_hand_labelled_forward(options, smollm2, smollm2_dir, tmp_path):
    from tunesmith.config import validate_config
    from tunesmith.run_folder import read_metrics
    from tunesmith.train.run import train

    model, tokenizer = smollm2
    rows = [{"messages": [{"role": "system", "content": SYSTEM}] +
             [{"role": role, "content": text} for role, text in turns]} for turns in CONVERSATIONS]
    (tmp_path / "golden.json").write_text(json.dumps(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"golden": {"file_name": "golden.json",
                                                                        "formatting": "openai"}}))
    run_dir = train(validate_config({
        "model": {"path": str(smollm2_dir), "dtype": "float32"},
        "method": {"kind": "lora", "rank": 4, "alpha": 8, "dropout": 0.0},
        "data": {"datasets": ["golden"], "dataset_dir": str(tmp_path), "max_length": 256, **options},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "batch_size": 2, "precision": "fp32"},
    }))
    logged = next(record["loss"] for record in read_metrics(run_dir) if "loss" in record)
    logps = torch.cat([token_logps(model, *ids_and_labels(tokenizer, chatml_spans(turns, **{
        key: value for key, value in options.items() if key != "packing"}))) for turns in CONVERSATIONS])
    assert logged == pytest.approx(-logps.mean().item(), rel=RTOL)


PAIRS = [("What is the capital of France?", "Paris.", "London."),
         ("Say hi.", "Hi!", "I would rather not say anything at all.")]


@pytest.fixture(scope="module")
def policy(smollm2_dir):
    """SmolLM2 with a LoRA whose B is random: the policy differs from the base model, its reference."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return get_peft_model(model, config).eval(), tokenizer


def _reply_logp(model, tokenizer, prompt: str, reply: str) -> float:
    spans = chatml_spans([("user", prompt), ("assistant", reply)])
    return token_logps(model, *ids_and_labels(tokenizer, spans)).sum().item()


def _policy_and_reference(model, tokenizer, prompt: str, reply: str) -> tuple[float, float]:
    policy_logp = _reply_logp(model, tokenizer, prompt, reply)
    with model.disable_adapter():
        return policy_logp, _reply_logp(model, tokenizer, prompt, reply)


def _stage_loss(kind: str, model, tokenizer, records, **stage):
    """The stage's summed loss over `records` in one batch, from its own encode / collate / loss."""
    from tunesmith.config import validate_config
    from tunesmith.data.dataset import PreparedData
    from tunesmith.data.template import ChatTemplate
    from tunesmith.train.stages import get_stage

    config = validate_config({"model": {"path": "the policy in memory"}, "stage": {"kind": kind, **stage},
                              "data": {"datasets": ["records in memory"], "max_length": 256}})
    stage_obj = get_stage(kind, config.stage)
    template = ChatTemplate(tokenizer)
    samples = [stage_obj.encode(record, template, config.data) for record in records]
    stage_obj.prepare(model, PreparedData(samples, []), config, torch.device("cpu"))
    with torch.no_grad():
        loss, _ = stage_obj.loss(model, stage_obj.collate(samples, pad_id=tokenizer.pad_token_id))
    return loss.item()


def _messages(prompt: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


def test_dpo_loss_matches_hand_labelled_log_probs(policy):
    from tunesmith.data.records import Preference

    model, tokenizer = policy
    beta = 0.5
    records = [Preference(_messages(p), {"role": "assistant", "content": c}, {"role": "assistant", "content": r})
               for p, c, r in PAIRS]
    expected = 0.0
    for prompt, chosen, rejected in PAIRS:
        (chosen_logp, chosen_ref), (rejected_logp, rejected_ref) = (
            _policy_and_reference(model, tokenizer, prompt, reply) for reply in (chosen, rejected))
        margin = beta * ((chosen_logp - chosen_ref) - (rejected_logp - rejected_ref))
        expected += -F.logsigmoid(torch.tensor(margin, dtype=torch.float64)).item()
    assert _stage_loss("dpo", model, tokenizer, records, beta=beta) == pytest.approx(expected, rel=RTOL)


def test_kto_loss_matches_hand_labelled_log_probs(policy):
    """KTO's reference point z: each prompt with the next example's reply (cyclically), as the stage pairs them."""
    from tunesmith.data.records import KtoExample

    model, tokenizer = policy
    beta = 0.5
    examples = [(prompt, chosen, True) for prompt, chosen, _ in PAIRS[:1]] + \
               [(prompt, rejected, False) for prompt, _, rejected in PAIRS[1:]]
    records = [KtoExample(_messages(p), {"role": "assistant", "content": reply}, good) for p, reply, good in examples]
    ratios = [policy_logp - ref for policy_logp, ref in
              (_policy_and_reference(model, tokenizer, p, reply) for p, reply, _ in examples)]
    partners = [(examples[i][0], examples[(i + 1) % len(examples)][1]) for i in range(len(examples))]
    mismatched = [policy_logp - ref for policy_logp, ref in
                  (_policy_and_reference(model, tokenizer, p, reply) for p, reply in partners)]
    z = max(0.0, sum(mismatched) / len(mismatched))
    expected = sum(1 - torch.sigmoid(torch.tensor(beta * ((r - z) if good else (z - r)))).item()
                   for r, (_, _, good) in zip(ratios, examples))
    assert _stage_loss("kto", model, tokenizer, records, beta=beta) == pytest.approx(expected, rel=RTOL)
