"""Peak RSS and speed of the quickstart (SmolLM2-135M-Instruct, LoRA r16, batch 8, length 256, fp32 on CPU).

    python bench/quickstart_memory.py [--steps 4] [--repeats 1] [--variants default checkpointing offload]
                                      [--malloc NAME=VALUE ...]

Each run is a fresh `tunesmith train examples/quickstart.yaml` process, launched as scripts/quickstart.sh
launches it (its glibc malloc settings) with train.max_steps set; peak RSS is the child's ru_maxrss from start
to exit (wait4), speed the median target tokens/s over steps 2..N by the wall clock and by the process CPU
clock (bench/train_step_clock.py; on a machine shared with other work the CPU clock is the fairer one).
`--malloc` replaces the script's glibc malloc settings (e.g. `--malloc MALLOC_MMAP_THRESHOLD_=1000000000
MALLOC_TRIM_THRESHOLD_=1000000000` for the earlier ones) to weigh their memory against their speed.

The peer on the same configuration (CLARIFICATIONS #13, measured by the lead on this machine): LLaMA-Factory
0.9.5 peaks at 3.06 GB with its default gradient checkpointing and 7.32 GB without.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import run_child  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUICKSTART_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "1048576"}  # as scripts/quickstart.sh sets it
VARIANTS = {"default": {}, "checkpointing": {"gradient_checkpointing": True},
            "offload": {"gradient_checkpointing": "offload"}}
PEER_GB = {"LLaMA-Factory 0.9.5, its default checkpointing": 3.06, "LLaMA-Factory 0.9.5, no checkpointing": 7.32}


def measure(variant: str, steps: int, work: Path, malloc: dict[str, str]) -> dict:
    config = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    config["train"].update(max_steps=steps, output_dir=str(work / variant), **VARIANTS[variant])
    config_path, clock_path = work / f"{variant}.yaml", work / f"{variant}.clock.json"
    config_path.write_text(yaml.safe_dump(config))
    env = {**{key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}, **malloc,
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    argv = [sys.executable, str(REPO / "bench" / "train_step_clock.py"), "ts", str(config_path), str(clock_path)]
    rss_mib = run_child(argv, env, work / f"{variant}.log")
    ticks = json.loads(clock_path.read_text())
    records = [json.loads(line) for line in (work / variant / "metrics.jsonl").read_text().splitlines()]
    units = {r["step"]: r["units"] for r in records if "loss" in r}
    speed = {clock: statistics.median(units[step + 1] / (ticks[step][clock] - ticks[step - 1][clock])
                                      for step in range(1, len(ticks))) for clock in (0, 1)}
    return {"rss_gb": rss_mib * 1024**2 / 1e9, "tok_s": speed[0], "cpu_tok_s": speed[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--malloc", nargs="+", metavar="NAME=VALUE", help="glibc settings instead of the script's")
    args = parser.parse_args()
    malloc = dict(item.split("=", 1) for item in args.malloc) if args.malloc else QUICKSTART_MALLOC
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for variant in args.variants:
                result = measure(variant, args.steps, Path(folder), malloc)
                print(f"[{repeat + 1}/{args.repeats}] SmolLM2-135M quickstart {variant}: peak RSS "
                      f"{result['rss_gb']:.2f} GB; median target tok/s over steps 2..N: {result['tok_s']:.0f} by the wall "
                      f"clock, {result['cpu_tok_s']:.0f} by the process CPU clock", flush=True)
    for name, gb in PEER_GB.items():
        print(f"peer: {name}: {gb:.2f} GB")


if __name__ == "__main__":
    main()
