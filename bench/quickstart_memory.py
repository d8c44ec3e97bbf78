"""Peak RSS and speed of the quickstart (SmolLM2-135M-Instruct, LoRA r16, batch 8, length 256, fp32 on CPU).

    python bench/quickstart_memory.py [--steps 4] [--repeats 1] [--variants default checkpointing offload]
                                      [--malloc NAME=VALUE ...] [--lf-venv /work/lf-venv]

Each run is a fresh `tunesmith train examples/quickstart.yaml` process, launched as scripts/quickstart.sh
launches it (its glibc malloc settings) with train.max_steps set; peak RSS is the child's ru_maxrss from start
to exit (wait4), speed the median target tokens/s over steps 2..N by the wall clock and by the process CPU
clock (bench/train_step_clock.py; on a machine shared with other work the CPU clock is the fairer one).
`--malloc` replaces the script's glibc malloc settings (e.g. `--malloc MALLOC_MMAP_THRESHOLD_=1048576` for the
earlier ones) to weigh their memory against their speed.

With `--lf-venv`, LLaMA-Factory (its own venv) runs the same configuration beside each variant, interleaved,
in the same environment (malloc settings included): the same model folder, the identity data with the same
names filled in, LoRA r16/alpha 32 on all linear layers, batch 8, cutoff 256, lr 1e-3 cosine with 5% warm-up,
fp32; its gradient checkpointing on for `checkpointing`, off for `default` (`offload` has no peer). Without it,
the figures the lead measured once are printed (CLARIFICATIONS #13: 3.06 GB with LLaMA-Factory 0.9.5's default
checkpointing, 7.32 GB without; their malloc settings were not recorded).
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
from train_throughput import is_malloc_setting, run_child, smollm2_dir  # noqa: E402

from tunesmith.train.glibc_heap import GLIBC_SETTINGS  # noqa: E402  (as scripts/quickstart.sh exports them)

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"default": {}, "checkpointing": {"gradient_checkpointing": True},
            "offload": {"gradient_checkpointing": "offload"}}
PEER_GB = {"LLaMA-Factory 0.9.5, its default checkpointing": 3.06, "LLaMA-Factory 0.9.5, no checkpointing": 7.32}
PEER_CHECKPOINTING = {"default": False, "checkpointing": True}  # offload has no LLaMA-Factory equivalent


def measure(variant: str, steps: int, work: Path, malloc: dict[str, str]) -> dict:
    config = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    config["train"].update(max_steps=steps, output_dir=str(work / variant), **VARIANTS[variant])
    ticks, rss_mib = _run(sys.executable, "ts", config, work / variant, malloc)
    records = [json.loads(line) for line in (work / variant / "metrics.jsonl").read_text().splitlines()]
    units = {r["step"]: r["units"] for r in records if "loss" in r}
    return _result(rss_mib, ticks, lambda step: units[step + 1])


def measure_peer(variant: str, steps: int, work: Path, malloc: dict[str, str], lf_venv: Path) -> dict:
    """LLaMA-Factory on the quickstart's configuration (see the module docstring)."""
    quickstart = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    data = work / "lf-data"
    if not data.is_dir():  # the identity records with the quickstart's names filled in, as tunesmith fills them
        data.mkdir()
        text = (REPO / "examples" / "data" / "identity.json").read_text(encoding="utf-8")
        for key, value in quickstart["data"]["vars"].items():
            text = text.replace("{{" + key + "}}", value)
        (data / "identity.json").write_text(text, encoding="utf-8")
        (data / "dataset_info.json").write_text(json.dumps({"identity": {"file_name": "identity.json"}}))
    method, train = quickstart["method"], quickstart["train"]
    out = work / f"lf-{variant}"
    config = {
        "model_name_or_path": str(smollm2_dir()), "stage": "sft", "do_train": True, "finetuning_type": "lora",
        "lora_rank": method["rank"], "lora_alpha": method["alpha"], "lora_dropout": method["dropout"],
        "lora_target": "all", "dataset": "identity", "dataset_dir": str(data),
        "cutoff_len": quickstart["data"]["max_length"], "overwrite_cache": True, "output_dir": str(out),
        "overwrite_output_dir": True, "per_device_train_batch_size": train["batch_size"],
        "gradient_accumulation_steps": 1, "learning_rate": train["lr"], "lr_scheduler_type": "cosine",
        "warmup_ratio": train["warmup_ratio"], "max_steps": steps, "logging_steps": 1, "save_strategy": "no",
        "report_to": "none", "seed": train["seed"], "bf16": False, "fp16": False, "dataloader_num_workers": 0,
        "disable_gradient_checkpointing": not PEER_CHECKPOINTING[variant],
    }
    ticks, rss_mib = _run(str(lf_venv / "bin" / "python"), "lf", config, out, malloc)
    return _result(rss_mib, ticks, lambda step: ticks[step][2] - ticks[step - 1][2])


def _run(python: str, framework: str, config: dict, out: Path, malloc: dict[str, str]) -> tuple[list, float]:
    config_path, clock_path = out.with_suffix(".yaml"), out.with_suffix(".clock.json")
    config_path.write_text(yaml.safe_dump(config))
    env = {**{key: value for key, value in os.environ.items() if not is_malloc_setting(key)}, **malloc,
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "DISABLE_VERSION_CHECK": "1"}
    argv = [python, str(REPO / "bench" / "train_step_clock.py"), framework, str(config_path), str(clock_path)]
    rss_mib = run_child(argv, env, out.with_suffix(".log"))
    return json.loads(clock_path.read_text()), rss_mib


def _result(rss_mib: float, ticks: list, targets) -> dict:
    """Peak RSS and the median target tok/s over steps 2..N; `targets(step)`: the targets of step + 1."""
    speed = {clock: statistics.median(targets(step) / (ticks[step][clock] - ticks[step - 1][clock])
                                      for step in range(1, len(ticks))) for clock in (0, 1)}
    return {"rss_gb": rss_mib * 1024**2 / 1e9, "tok_s": speed[0], "cpu_tok_s": speed[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--malloc", nargs="+", metavar="NAME=VALUE", help="glibc settings instead of the script's")
    parser.add_argument("--lf-venv", type=Path, help="run LLaMA-Factory from this venv beside each variant")
    args = parser.parse_args()
    malloc = dict(item.split("=", 1) for item in args.malloc) if args.malloc else GLIBC_SETTINGS
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for variant in args.variants:
                runs = [("tunesmith", lambda: measure(variant, args.steps, Path(folder), malloc))]
                if args.lf_venv and variant in PEER_CHECKPOINTING:
                    runs.append(("LLaMA-Factory", lambda: measure_peer(variant, args.steps, Path(folder), malloc,
                                                                       args.lf_venv)))
                for name, run in runs:
                    result = run()
                    print(f"[{repeat + 1}/{args.repeats}] SmolLM2-135M quickstart {variant}, {name}: peak RSS "
                          f"{result['rss_gb']:.2f} GB; median target tok/s over steps 2..N: {result['tok_s']:.0f} by "
                          f"the wall clock, {result['cpu_tok_s']:.0f} by the process CPU clock", flush=True)
    if not args.lf_venv:
        for name, gb in PEER_GB.items():
            print(f"peer, measured once: {name}: {gb:.2f} GB")


if __name__ == "__main__":
    main()
