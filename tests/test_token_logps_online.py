"""The online stages' log-probs (grpo completions, ppo replies) come from the chunked head inside the trained
module's forward: log-probs, entropies, values and gradients equal transformers' own full logits."""

from __future__ import annotations

import pytest
import torch

from tests.test_token_logps import VOCAB, tiny_model
from tunesmith.train.stages.grpo_rollout import completion_batch
from tunesmith.train.token_logps import LogpsModel, tail_logps

TEMPERATURE = 0.7


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """3 tokens of logits per chunk, so the rows' tokens span several chunks, the last one short."""
    monkeypatch.setattr("tunesmith.train.token_logps.LOGIT_ELEMENTS", 3 * VOCAB)


def sampled_batch() -> dict[str, torch.Tensor]:
    """Two prompts of different lengths (left-padded) with two completions each (right-padded)."""
    prompts = [[5, 6, 7], [8, 9]]
    completions = [[10, 11, 12, 13], [14, 15], [16, 17, 18], [19]]
    return completion_batch(prompts, completions, group=2, pad_id=0)


def full_logits_scores(model, batch, tokens):
    """(log-probs, entropies) from transformers' own logits / temperature at the positions predicting `tokens`."""
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids")}
    logits = model(**inputs).logits[:, -tokens.shape[1] - 1:-1].double() / TEMPERATURE
    log_probs = logits.log_softmax(-1)
    return log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1), -(log_probs.exp() * log_probs).sum(-1)


def assert_same_gradients(loss, expected, params):
    for grad, expected_grad in zip(torch.autograd.grad(loss, params), torch.autograd.grad(expected, params)):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["llama", "gemma2"])
def test_grpo_completion_logps_and_gradients_equal_full_logits(kind):
    model = tiny_model(kind).train()
    batch = sampled_batch()
    tokens, mask = batch["completion"], batch["completion_mask"].double()
    upstream = torch.randn(tokens.shape, generator=torch.Generator().manual_seed(1)).double() * mask

    logps, entropy = tail_logps(LogpsModel(model), batch, tokens, TEMPERATURE, with_entropy=True)
    expected, expected_entropy = full_logits_scores(model, batch, tokens)

    torch.testing.assert_close(logps.double() * mask, expected * mask, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(entropy.double() * mask, expected_entropy.detach() * mask, rtol=1e-5, atol=1e-6)
    assert not entropy.requires_grad  # a logged statistic, outside the graph
    params = [p for p in model.parameters() if p.requires_grad]
    assert_same_gradients((logps.double() * upstream).sum(), (expected * upstream).sum(), params)


def test_grpo_log_probs_are_computed_inside_the_wrapped_forward():
    """DDP syncs gradients only for passes through the module it wraps: the head must run in its forward."""
    model = LogpsModel(tiny_model())
    calls = []
    model.register_forward_hook(lambda module, args, output: calls.append(output.shape))
    batch = sampled_batch()
    logps = tail_logps(model, batch, batch["completion"], TEMPERATURE)
    assert calls == [(logps.numel(),)]
    assert logps.shape == batch["completion"].shape


def test_ppo_reply_logps_values_and_gradients_equal_full_logits():
    from tunesmith.model.value_head import new_head
    from tunesmith.train.stages.ppo import PolicyWithCritic

    torch.manual_seed(0)
    backbone = tiny_model().train()
    policy = PolicyWithCritic(backbone, new_head(backbone.config.hidden_size))
    batch = sampled_batch()
    reply, mask = batch["completion"], batch["completion_mask"].double()
    upstream = torch.randn(reply.shape, generator=torch.Generator().manual_seed(2)).double() * mask

    scored = policy(batch["input_ids"], batch["attention_mask"], batch["position_ids"], reply, TEMPERATURE,
                    with_entropy=True)
    expected, expected_entropy = full_logits_scores(backbone, batch, reply)
    hidden = backbone.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                    position_ids=batch["position_ids"]).last_hidden_state
    expected_values = policy.values(hidden[:, -reply.shape[1] - 1:-1])

    torch.testing.assert_close(scored["logps"].double() * mask, expected * mask, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scored["entropy"].double() * mask, expected_entropy.detach() * mask, rtol=1e-5,
                               atol=1e-6)
    torch.testing.assert_close(scored["values"], expected_values, rtol=1e-5, atol=1e-6)
    params = [p for p in policy.parameters() if p.requires_grad]
    loss = (scored["logps"].double() * upstream).sum() + scored["values"].double().sum()
    assert_same_gradients(loss, (expected * upstream).sum() + expected_values.double().sum(), params)
