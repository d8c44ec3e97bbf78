"""Multiple-choice benchmarks on tests/fixtures/benchmarks, with tiny models forced to answer one letter.

Answers in the fixtures, counted by hand from the CSV files:
  mmlu test    elementary_mathematics C A B D C | high_school_geography C A B D C | philosophy B A C D B
  ceval val    middle_school_mathematics B A D C D | middle_school_geography C A B D B
  cmmlu test   chinese_history B A C D B | elementary_mathematics D A C B C
"""

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import build_tiny_model
from tunesmith.cli import main
from tunesmith.errors import TunesmithError
from tunesmith.eval.benchmark import Benchmark
from tunesmith.eval.multiple_choice import evaluate_benchmark
from tunesmith.eval.prompts import fitting_prompt, letter_token_ids, prompt_style
from tunesmith.eval.scoring import next_token_logprobs
from tunesmith.infer.loader import load_engine

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"


def _letter_id(tokenizer, letter: str) -> int:
    return tokenizer(letter, add_special_tokens=False)["input_ids"][0]


@pytest.fixture(scope="module")
def forced_c_dir(tmp_path_factory, smollm2_dir) -> Path:
    """A tiny model that always answers C: every token embedding carries a large constant in dimension 0,
    so the final hidden state does too, and only C's output row reads that dimension."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_tiny_model(tmp_path_factory.mktemp("forced-c"), smollm2_dir, tie_word_embeddings=False)
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        model.get_input_embeddings().weight[:, 0] = 10.0
        head = model.get_output_embeddings().weight
        head[:, 0] = 0.0
        head[_letter_id(AutoTokenizer.from_pretrained(folder), "C"), 0] = 5.0
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def favour_a_adapter(tmp_path_factory, forced_c_dir) -> Path:
    """A rank-1 LoRA on the output head that adds twice C's weight on dimension 0 to A's row: answers A."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(forced_c_dir),
                           LoraConfig(r=1, lora_alpha=1, target_modules=["lm_head"]))
    layer = model.base_model.model.lm_head
    with torch.no_grad():
        layer.lora_A["default"].weight.zero_()
        layer.lora_A["default"].weight[0, 0] = 1.0
        layer.lora_B["default"].weight.zero_()
        layer.lora_B["default"].weight[_letter_id(AutoTokenizer.from_pretrained(forced_c_dir), "A"), 0] = 10.0
    folder = tmp_path_factory.mktemp("favour-a")
    model.save_pretrained(folder, save_embedding_layers=False)
    return folder


def _accuracies(results: dict) -> dict:
    return {key: (entry["correct"], entry["total"]) for key, entry in results["subjects"].items()}


def test_mmlu_accuracy_of_a_model_that_always_answers_c(forced_c_dir):
    results = evaluate_benchmark(load_engine(str(forced_c_dir)), "mmlu", FIXTURES / "mmlu", shots=2, batch_size=4)
    assert _accuracies(results) == {"elementary_mathematics": (2, 5), "high_school_geography": (2, 5),
                                    "philosophy": (1, 5)}
    assert results["categories"]["STEM"]["correct"] == 2 and results["categories"]["Humanities"]["correct"] == 1
    assert results["overall"] == {"correct": 5, "total": 15, "accuracy": pytest.approx(5 / 15)}


@pytest.mark.parametrize("task, expected", [
    ("ceval", {"middle_school_mathematics": (1, 5), "middle_school_geography": (1, 5)}),
    ("cmmlu", {"chinese_history": (1, 5), "elementary_mathematics": (2, 5)}),
])
def test_chinese_layouts_and_categories(forced_c_dir, task, expected):
    results = evaluate_benchmark(load_engine(str(forced_c_dir)), task, FIXTURES / task, shots=1, batch_size=3)
    assert _accuracies(results) == expected
    assert results["lang"] == "zh" and set(results["categories"]) <= {"STEM", "Social Science", "Humanities"}


def test_adapter_and_merged_model_move_the_answers_to_a(forced_c_dir, favour_a_adapter, tmp_path):
    engine = load_engine(str(forced_c_dir), adapter=str(favour_a_adapter))
    results = evaluate_benchmark(engine, "mmlu", FIXTURES / "mmlu", shots=0, batch_size=8)
    # A is the answer of question 2 in each mmlu subject.
    assert results["overall"]["correct"] == 3
    assert set(_accuracies(results).values()) == {(1, 5)}
    merged = tmp_path / "merged"
    engine.model.save_pretrained(merged)  # the engine merged the (unquantized) adapter into the weights
    engine.tokenizer.save_pretrained(merged)
    again = evaluate_benchmark(load_engine(str(merged)), "mmlu", FIXTURES / "mmlu", shots=0, max_samples=2)
    # first two of each subject: C A | C A | B A -> one A each
    assert again["overall"]["correct"] == 3 and again["overall"]["total"] == 6


def test_batched_letter_scores_equal_a_plain_forward_pass(tiny_model_dir):
    engine = load_engine(str(tiny_model_dir))
    benchmark = Benchmark(FIXTURES / "mmlu")
    subject = benchmark.subjects[0]
    shots = benchmark.questions(subject, "dev")
    prompts = [fitting_prompt(engine.template, q, shots[: i % 3], subject.name, prompt_style("en"), None)
               for i, q in enumerate(benchmark.questions(subject, "test"))]
    letters = letter_token_ids(engine.tokenizer)
    batched = next_token_logprobs(engine.model, prompts, letters, engine.tokenizer.pad_token_id)
    for row, prompt in enumerate(prompts):
        with torch.no_grad():
            logits = engine.model(torch.tensor([prompt])).logits[0, -1]
        torch.testing.assert_close(batched[row], torch.log_softmax(logits, -1)[letters], atol=1e-5, rtol=1e-5)


def test_shots_are_dropped_until_the_prompt_fits(tiny_model_dir):
    engine = load_engine(str(tiny_model_dir))
    benchmark = Benchmark(FIXTURES / "mmlu")
    subject = benchmark.subjects[0]
    question, shots = benchmark.questions(subject, "test")[0], benchmark.questions(subject, "dev")
    style = prompt_style("en")
    full = fitting_prompt(engine.template, question, shots, subject.name, style, None)
    one_shot = fitting_prompt(engine.template, question, shots[:1], subject.name, style, None)
    assert fitting_prompt(engine.template, question, shots, subject.name, style, len(one_shot) + 1) == one_shot
    assert len(full) > len(one_shot)


def test_hidden_answers_and_missing_splits_are_errors(forced_c_dir):
    engine = load_engine(str(forced_c_dir))
    with pytest.raises(TunesmithError, match="no answers"):
        evaluate_benchmark(engine, "ceval", FIXTURES / "ceval", split="test")
    with pytest.raises(TunesmithError, match="no 'val' split"):
        evaluate_benchmark(engine, "cmmlu", FIXTURES / "cmmlu", split="val")


def test_ceval_subject_names_follow_the_prompt_language():
    names = {s.key: s.name for s in Benchmark(FIXTURES / "ceval", lang="zh").subjects}
    assert names["middle_school_geography"] == "初中地理"
    assert Benchmark(FIXTURES / "ceval", lang="en").subjects[0].name == "Middle School Geography"


def test_cli_with_a_config_writes_json_and_table(forced_c_dir, tmp_path, identity_dir):
    config = tmp_path / "eval.yaml"
    out = tmp_path / "results" / "mmlu.json"
    config.write_text(json.dumps({
        "model": {"path": str(forced_c_dir)},
        "data": {"datasets": ["identity"], "dataset_dir": str(identity_dir)},
        "eval": {"task": "mmlu", "benchmark_dir": str(FIXTURES / "mmlu"), "shots": 1, "out": str(out)},
    }))
    assert main(["eval", str(config), "eval.max_samples=3", "--batch-size", "2"]) == 0
    results = json.loads(out.read_text())
    # first three of each subject: C A B | C A B | B A C -> one C in each
    assert results["overall"]["correct"] == 3 and results["overall"]["total"] == 9
    assert results["shots"] == 1 and results["evaluated"]["model"] == str(forced_c_dir)
    assert "overall" in out.with_suffix(".txt").read_text()
