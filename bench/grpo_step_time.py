"""GRPO step time on SmolLM2-135M-Instruct (LoRA r16 all-linear, CPU): tunesmith beside TRL's GRPOTrainer on the
same prompts (grpo_reward_rise's), group size, batch, completion length, temperature, learning rate, gradient
checkpointing and torch threads. For tunesmith it also says where the time goes (generating + scoring the window
vs. training on it).

    python bench/grpo_step_time.py [--steps 4] [--repeats 3] [--max-new-tokens 32] [--threads 1]

Each side runs in its own process, alternating (tunesmith, TRL, tunesmith, TRL, ...), so both meet the same
neighbours on a shared machine. A run's first step is left out of its mean (warm-up); the medians and the
spread (min-max) over repeats are printed.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from grpo_reward_rise import GSM8K, INSTRUCTION, config, write_prompts

PATTERN = r".*####\s*-?[\d,]*\.?\d+"


def settings(out: Path, steps: int, max_new_tokens: int) -> dict:
    raw = config(out / "data", out / "tunesmith", seed=1, steps=steps)
    raw["stage"]["sampling"]["max_new_tokens"] = max_new_tokens
    return raw


def tunesmith_steps(raw: dict) -> list[tuple[float, float]]:
    """(generation seconds, training seconds) of each step."""
    from tunesmith.config.load import validate_config
    from tunesmith.train import loop
    from tunesmith.train.run import train

    times: list[tuple[float, float]] = []

    class Clocked(loop.Trainer):
        def train_step(self):
            window = type(self.stage).window.__get__(self.stage)  # the stage's own, not an earlier step's wrapper
            started = time.perf_counter()
            marks = []

            def timed_window(*args):
                made = window(*args)
                marks.append(time.perf_counter())
                return made

            self.stage.window = timed_window
            result = super().train_step()
            float(result.loss)  # waits for the step to finish
            times.append((marks[0] - started, time.perf_counter() - marks[0]))
            return result

    loop.Trainer = Clocked  # train() looks the class up in the loop module when it starts
    train(validate_config(raw))
    return times


def trl_steps(raw: dict, out: Path) -> list[float]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from tunesmith.config.schema import ModelConfig
    from tunesmith.model.load import resolve_source

    stage, train, method = raw["stage"], raw["train"], raw["method"]
    model_dir = resolve_source(ModelConfig(**raw["model"]))
    rows = [json.loads(line) for line in GSM8K.read_text(encoding="utf-8").splitlines()[:64]]
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": row["question"] + INSTRUCTION}]}
                              for row in rows])

    def format_reward(prompts, completions, **kwargs):
        return [float(re.fullmatch(PATTERN, c[0]["content"].strip(), re.DOTALL) is not None) for c in completions]

    ticks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ticks.append(time.perf_counter())

    args = GRPOConfig(output_dir=str(out / "trl"), per_device_train_batch_size=train["batch_size"],
                      num_generations=stage["num_generations"],
                      max_completion_length=stage["sampling"]["max_new_tokens"],
                      temperature=stage["sampling"]["temperature"], learning_rate=train["lr"],
                      lr_scheduler_type="constant", max_steps=train["max_steps"], beta=0.0,
                      loss_type=stage["token_averaging"], gradient_checkpointing=train["gradient_checkpointing"],
                      use_cpu=True, report_to="none", logging_steps=1, save_strategy="no", seed=train["seed"])
    model = AutoModelForCausalLM.from_pretrained(str(model_dir.location))
    trainer = GRPOTrainer(model=model, reward_funcs=format_reward, args=args, train_dataset=data,
                          peft_config=LoraConfig(r=method["rank"], lora_alpha=method["alpha"],
                                                 target_modules="all-linear"), callbacks=[Clock()])
    started = time.perf_counter()
    trainer.train()
    return [b - a for a, b in zip([started] + ticks, ticks)]


def side(name: str, out: Path, steps: int, max_new_tokens: int, threads: int) -> None:
    """One side's run in this process; prints its step times as one JSON line."""
    import torch

    torch.set_num_threads(threads)
    write_prompts(out / "data")
    raw = settings(out, steps, max_new_tokens)
    if name == "tunesmith":
        times = tunesmith_steps(raw)
        print(json.dumps({"generation": [g for g, _ in times], "training": [t for _, t in times]}))
    else:
        print(json.dumps({"step": trl_steps(raw, out)}))


def run_side(name: str, args) -> dict:
    command = [sys.executable, __file__, "--side", name, "--steps", str(args.steps), "--out", args.out,
               "--max-new-tokens", str(args.max_new_tokens), "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/bench-grpo-time")
    parser.add_argument("--side", choices=["tunesmith", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        side(args.side, Path(args.out), args.steps, args.max_new_tokens, args.threads)
        return
    ours, theirs = [], []
    for repeat in range(args.repeats):
        ours.append(run_side("tunesmith", args))
        theirs.append(run_side("trl", args))
        print(f"repeat {repeat + 1}: tunesmith steps {[round(g + t, 2) for g, t in zip(*ours[-1].values())]}, "
              f"TRL steps {[round(t, 2) for t in theirs[-1]['step']]}", flush=True)
    mean = lambda values: sum(values[1:]) / max(1, len(values) - 1)  # noqa: E731 (first step: warm-up)
    generation = [mean(run["generation"]) for run in ours]
    training = [mean(run["training"]) for run in ours]
    print(f"tunesmith: {spread([g + t for g, t in zip(generation, training)])} per step; "
          f"generating + scoring {spread(generation)}, training {spread(training)}")
    print(f"TRL GRPOTrainer: {spread([mean(run['step']) for run in theirs])} per step")


if __name__ == "__main__":
    main()
