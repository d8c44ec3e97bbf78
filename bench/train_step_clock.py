"""Run one training (tunesmith or LLaMA-Factory) and record the wall and CPU clocks after every optimizer step
(and, for LLaMA-Factory, the target tokens trained so far: its logs do not count them).

    python bench/train_step_clock.py ts CONFIG.yaml CLOCK.json            # tunesmith's venv
    /work/lf-venv/bin/python bench/train_step_clock.py lf CONFIG.yaml CLOCK.json

On a machine shared with other work, wall time measures the neighbours; the process CPU time of the steady
steps (first step left out), run single-threaded, measures the work. Used by train_throughput.py.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _clock() -> list[float]:
    return [time.perf_counter(), time.process_time()]


def run_tunesmith(config_path: str, ticks: list) -> None:
    from tunesmith.config import load_config
    from tunesmith.train import loop
    from tunesmith.train.run import train

    class ClockedTrainer(loop.Trainer):
        def train_step(self):
            result = super().train_step()
            ticks.append(_clock())
            return result

    loop.Trainer = ClockedTrainer  # train() looks the class up in the loop module when it starts
    train(load_config(config_path))


def run_llamafactory(config_path: str, ticks: list) -> None:
    import yaml
    from llamafactory.train.tuner import run_exp
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        """Also counts the target tokens it trains on (labels != -100 after the first position), packed or not."""

        targets = 0

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            model.register_forward_pre_hook(self.count, with_kwargs=True)

        def count(self, module, args, kwargs):
            labels = kwargs.get("labels")
            if labels is not None:
                self.targets += int((labels[:, 1:] != -100).sum())

        def on_step_end(self, args, state, control, **kwargs):
            ticks.append(_clock() + [self.targets])

    run_exp(yaml.safe_load(Path(config_path).read_text()), callbacks=[Clock()])


def main() -> None:
    framework, config_path, out = sys.argv[1:4]
    ticks: list[list[float]] = []
    (run_llamafactory if framework == "lf" else run_tunesmith)(config_path, ticks)
    Path(out).write_text(json.dumps(ticks))


if __name__ == "__main__":
    main()
