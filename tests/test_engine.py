"""The inference engine against transformers: batched left-padded decoding, sampling processors, scoring."""

from __future__ import annotations

import pytest
import torch

from conftest import build_tiny_model
from tunesmith.errors import TunesmithError
from tunesmith.infer.engine import ContextTooLong, DecodeRequest, GenerationSettings
from tunesmith.infer.loader import load_engine
from tunesmith.infer.sampling import BatchSampler
from tunesmith.infer.text_tracker import TextTracker

GREEDY = GenerationSettings(max_new_tokens=8, temperature=0)
CONVERSATIONS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "tell me a much longer story"}],
    [{"role": "user", "content": "what is two plus two, exactly?"}],
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory, smollm2_dir):
    # A larger init spread than the shared tiny model, so greedy replies vary token to token.
    folder = build_tiny_model(tmp_path_factory.mktemp("lively"), smollm2_dir, initializer_range=0.5)
    return load_engine(str(folder))


def hf_greedy(engine, messages, max_new_tokens=8) -> list[int]:
    """transformers' own greedy decoding of one conversation, unbatched: the reference."""
    prompt = engine.template.prompt_ids(messages)
    out = engine.model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                max_new_tokens=max_new_tokens, do_sample=False,
                                eos_token_id=engine.template.stop_token_ids(), pad_token_id=engine.tokenizer.pad_token_id)
    return out[0, len(prompt):].tolist()


def test_batched_left_padded_greedy_matches_transformers_one_by_one(engine):
    texts = engine.generate_batch(CONVERSATIONS, GREEDY)
    for messages, text in zip(CONVERSATIONS, texts):
        expected = engine.tokenizer.decode(hf_greedy(engine, messages), skip_special_tokens=True)
        assert text == expected
    assert len(set(texts)) > 1  # the prompts really differ in length and reply


def test_rows_leaving_the_batch_early_do_not_disturb_the_others(engine):
    budgets = [3, 8, 5]
    requests = [DecodeRequest(engine.template.prompt_ids(m), GenerationSettings(max_new_tokens=b, temperature=0))
                for m, b in zip(CONVERSATIONS, budgets)]
    events = []
    for index, request in enumerate(requests):
        request.on_text = lambda piece, index=index: events.append(("text", index))
        request.on_done = lambda result, index=index: events.append(("done", index))
    results = engine.run_batch(requests)
    # The short row is reported done at once, not when the longest row of its batch finishes.
    assert events.index(("done", 0)) < max(i for i, event in enumerate(events) if event == ("text", 1))
    for messages, budget, result in zip(CONVERSATIONS, budgets, results):
        assert result.text == engine.tokenizer.decode(hf_greedy(engine, messages, budget), skip_special_tokens=True)
        assert (result.finish_reason, result.completion_tokens) == ("length", budget)


def test_requests_joining_a_running_batch_decode_as_they_would_alone(engine):
    def request(messages, budget):
        return DecodeRequest(engine.template.prompt_ids(messages), GenerationSettings(max_new_tokens=budget, temperature=0))

    first = request(CONVERSATIONS[1], 12)
    late = [request(CONVERSATIONS[0], 6), request(CONVERSATIONS[2], 9)]
    calls = []

    def admit(room):  # the late requests arrive after three steps, one at a time
        calls.append(room)
        return [late.pop(0)] if len(calls) in (3, 5) else []

    results = engine.run_batch([first], admit=admit, max_rows=4)
    assert len(results) == 3 and calls[0] == 3
    for messages, budget, result in zip([CONVERSATIONS[1], CONVERSATIONS[0], CONVERSATIONS[2]], [12, 6, 9], results):
        assert result.text == engine.tokenizer.decode(hf_greedy(engine, messages, budget), skip_special_tokens=True)


def test_stream_pieces_join_to_generate(engine):
    pieces = list(engine.stream(CONVERSATIONS[0], GREEDY))
    assert len(pieces) > 1 and "".join(pieces) == engine.generate(CONVERSATIONS[0], GREEDY)


def test_a_cancelled_row_stops_at_the_next_step(engine):
    request = DecodeRequest(engine.template.prompt_ids(CONVERSATIONS[0]),
                            GenerationSettings(max_new_tokens=400, temperature=0))
    request.on_text = lambda piece: request.cancelled.set()  # what closing a stream or a client leaving does
    result = engine.run_batch([request])[0]
    assert result.finish_reason == "cancelled" and result.completion_tokens <= 3
    stream = engine.stream(CONVERSATIONS[0], GenerationSettings(max_new_tokens=400, temperature=0))
    next(stream)
    stream.close()  # sets the same flag, then joins the decoding thread


def test_seed_makes_sampling_reproducible(engine):
    settings = GenerationSettings(max_new_tokens=8, temperature=1.0, seed=11)
    first = engine.generate(CONVERSATIONS[0], settings)
    assert engine.generate(CONVERSATIONS[0], settings) == first
    others = {engine.generate(CONVERSATIONS[0], GenerationSettings(max_new_tokens=8, temperature=1.0, seed=s))
              for s in range(4)}
    assert len(others) > 1


def test_stop_string_cuts_the_reply(engine):
    full = engine.generate(CONVERSATIONS[1], GREEDY)
    stop = full[len(full) // 2: len(full) // 2 + 3]
    cut = engine.generate(CONVERSATIONS[1], GenerationSettings(max_new_tokens=8, temperature=0, stop=[stop]))
    assert cut == full.split(stop)[0]


def test_context_overflow_is_a_clear_error(engine):
    huge = [{"role": "user", "content": "word " * 600}]
    with pytest.raises(ContextTooLong, match="more than the model's context of 512"):
        engine.generate(huge, GREEDY)
    with pytest.raises(TunesmithError):
        GenerationSettings(top_p=0)


def test_sampler_warping_matches_transformers_processors():
    from transformers import RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    torch.manual_seed(0)
    logits = torch.randn(3, 50) * 3
    prompt = [[1, 2, 3], [4], [5, 6]]
    settings = [GenerationSettings(temperature=0.7, top_k=10, top_p=0.8, repetition_penalty=1.3)] * 3
    sampler = BatchSampler(settings, prompt, 50, "cpu")
    ids = torch.tensor([[1, 2, 3], [4, 4, 4], [5, 6, 6]])
    expected = RepetitionPenaltyLogitsProcessor(1.3)(ids, logits.clone())
    assert torch.allclose(sampler.penalize(logits), expected)
    for warper in (TemperatureLogitsWarper(0.7), TopKLogitsWarper(10), TopPLogitsWarper(0.8)):
        expected = warper(ids, expected)
    assert torch.equal(torch.isinf(sampler.warp(sampler.penalize(logits))), torch.isinf(expected))


def test_presence_and_frequency_penalties_follow_openai_formula():
    logits = torch.zeros(1, 6)
    sampler = BatchSampler([GenerationSettings(presence_penalty=0.5, frequency_penalty=0.25)], [[0]], 6, "cpu")
    for token in (2, 2, 3):
        sampler.record(torch.tensor([token]))
    counts = torch.tensor([[0, 0, 2, 1, 0, 0]], dtype=torch.float)
    assert torch.allclose(sampler.penalize(logits), logits - 0.5 * (counts > 0) - 0.25 * counts)


def test_text_tracker_releases_a_prefix_and_holds_back_partial_stops(engine):
    ids = engine.tokenizer("Hello there, general Kenobi. END of it", add_special_tokens=False)["input_ids"]
    tracker = TextTracker(engine.tokenizer, ["END"])
    pieces = [tracker.add(i) for i in ids if not tracker.stopped]
    pieces.append(tracker.finish())
    assert "".join(pieces) == "Hello there, general Kenobi. END of it".split("END")[0]
    assert all("E" not in piece for piece in pieces)  # "E" could have begun "END": never released early


def test_loglikelihood_matches_a_naive_forward(engine):
    pairs = [("The cat sat on the", " mat"), ("Two plus two is", " four, of course")]
    scores = engine.loglikelihood(pairs, batch_size=2)
    for (context, continuation), (total, greedy) in zip(pairs, scores):
        ctx = engine.tokenizer(context, add_special_tokens=False)["input_ids"]
        whole = engine.tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logprobs = torch.log_softmax(engine.model(torch.tensor([whole])).logits[0].float(), -1)
        naive = sum(logprobs[i - 1, whole[i]].item() for i in range(len(ctx), len(whole)))
        assert total == pytest.approx(naive, abs=1e-4)
        assert greedy == all(logprobs[i - 1].argmax().item() == whole[i] for i in range(len(ctx), len(whole)))


def test_score_ranks_a_choice_the_model_prefers(engine):
    messages = CONVERSATIONS[0]
    favourite = engine.generate(messages, GenerationSettings(max_new_tokens=2, temperature=0))
    scores = engine.score(messages, [favourite, "zzzz qqqq"])
    assert scores[0] > scores[1]


def test_vllm_backend_without_vllm_says_how_to_install(tiny_model_dir):
    from tunesmith.infer.vllm_engine import vllm_available

    if vllm_available():
        pytest.skip("vllm is installed here")
    with pytest.raises(TunesmithError, match="tunesmith\\[vllm\\]"):
        load_engine(str(tiny_model_dir), backend="vllm")
