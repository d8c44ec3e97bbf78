"""Training throughput and peak memory, tunesmith side by side with LLaMA-Factory (its own venv), on a CPU.

    python bench/train_throughput.py [--methods lora full] [--repeats 3] [--steps 30] [--threads 1]

Same tiny Llama (hidden 256, 4 layers, 4/2 heads, intermediate 688, vocab 32k, fp32), same 2,000 alpaca
samples, max length 256, batch 8, LoRA r8 alpha16 on all linear layers, cosine lr 1e-4, 30 steps, gradient
checkpointing off in both. Every run is a fresh process; runs are interleaved across variants so that load
from other users of the machine spreads over all of them; the table gives the median and the spread.

Target tokens per second: tunesmith counts the target tokens it trained on (metrics.jsonl `units`);
LLaMA-Factory's are steps x batch x the mean target tokens per sample (same tokenizer and chat template).
Two clocks, read after every optimizer step by bench/train_step_clock.py, over steps 2..N (the first step warms
up): wall, and the process CPU time. The CPU figure is for machines shared with other work, where wall time
measures the neighbours; with --threads 1 (default) it is the work itself. Peak RSS is the child's maximum
resident set (getrusage via wait4).

The `+malloc` variants launch tunesmith with glibc's MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ set:
glibc reads them at process start, so they belong in the launch command, not in the package.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_assets import DATASET, build_assets  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BATCH, MAX_LEN, LR = 8, 256, 1e-4
# Large allocations (activations, logits) stay in the heap and are reused instead of being mmap'd and
# page-faulted anew every step; 32 MiB is the largest mmap threshold glibc accepts on 64-bit.
GLIBC_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024), "MALLOC_TRIM_THRESHOLD_": str(1024**3)}
VARIANTS = {  # name: (framework, data.packing, glibc malloc settings)
    "llamafactory": ("lf", False, False),
    "tunesmith": ("ts", False, False),
    "tunesmith+malloc": ("ts", False, True),
    "tunesmith+packing+malloc": ("ts", True, True),
}


def tunesmith_config(model: Path, data: Path, out: Path, method: str, steps: int, packing: bool) -> dict:
    lora = {"rank": 8, "alpha": 16, "dropout": 0.0, "targets": "all-linear"}
    return {
        "model": {"path": str(model)},
        "method": {"kind": method, **(lora if method == "lora" else {})},
        "stage": {"kind": "sft"},
        "data": {"datasets": [DATASET], "dataset_dir": str(data), "max_length": MAX_LEN, "packing": packing},
        "train": {"output_dir": str(out), "overwrite": True, "max_steps": steps, "batch_size": BATCH,
                  "lr": LR, "scheduler": "cosine", "precision": "fp32", "seed": 42, "logging_steps": 1},
    }


def llamafactory_config(model: Path, data: Path, out: Path, method: str, steps: int) -> dict:
    config = {
        "model_name_or_path": str(model), "stage": "sft", "do_train": True, "finetuning_type": method,
        "dataset": DATASET, "dataset_dir": str(data), "cutoff_len": MAX_LEN, "overwrite_cache": True,
        "output_dir": str(out), "overwrite_output_dir": True, "per_device_train_batch_size": BATCH,
        "gradient_accumulation_steps": 1, "learning_rate": LR, "lr_scheduler_type": "cosine",
        "max_steps": steps, "logging_steps": 1, "save_strategy": "no", "report_to": "none", "seed": 42,
        "bf16": False, "fp16": False, "disable_gradient_checkpointing": True, "dataloader_num_workers": 0,
    }
    if method == "lora":
        config.update(lora_rank=8, lora_alpha=16, lora_dropout=0.0, lora_target="all")
    return config


def run_child(argv: list[str], env: dict, log: Path) -> float:
    """Peak RSS in MiB of one child process; its output goes to `log`."""
    with log.open("wb") as handle:
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({process.returncode}); see {log}:\n{log.read_text()[-2000:]}")
    return usage.ru_maxrss / 1024


def mean_targets_per_sample(model: Path, data: Path) -> float:
    from tunesmith.config.load import validate_config
    from tunesmith.data.dataset import prepare_data
    from tunesmith.data.template import ChatTemplate
    from tunesmith.model.load import load_tokenizer
    from tunesmith.train.stages import get_stage

    config = validate_config(tunesmith_config(model, data, Path("unused"), "lora", 1, False))
    config.data.cache = False
    stage, template = get_stage("sft"), ChatTemplate(load_tokenizer(config.model), "auto")
    prepared = prepare_data(config.data, lambda records: stage.encode_many(records, template, config.data),
                            "conversation", 0)
    return statistics.fmean(sample.num_targets - (sample.labels[0] != -100) for sample in prepared.train)


def measure(variant: str, method: str, work: Path, steps: int, args, targets: float) -> dict:
    framework, packing, malloc = VARIANTS[variant]
    name = f"{variant}-{method}"
    out = work / "runs" / name
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1", "TOKENIZERS_PARALLELISM": "false"}
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    env.update(GLIBC_MALLOC if malloc else {})
    model, data = work / "model", work / "data"
    if framework == "lf":
        config = llamafactory_config(model, data, out, method, steps)
        python = args.lf_venv / "bin" / "python"
    else:
        config = tunesmith_config(model, data, out, method, steps, packing)
        python = Path(sys.executable)
    config_path, clock_path = work / f"{name}.yaml", work / f"{name}.clock.json"
    config_path.write_text(yaml.safe_dump(config))
    argv = [str(python), str(Path(__file__).parent / "train_step_clock.py"), framework, str(config_path),
            str(clock_path)]
    rss = run_child(argv, env, work / f"{name}.log")
    ticks = json.loads(clock_path.read_text())
    (wall_0, cpu_0), (wall_n, cpu_n) = ticks[0], ticks[-1]  # the first step (warm-up) is left out
    if framework == "lf":
        units = (len(ticks) - 1) * BATCH * targets
    else:
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        units = sum(r["units"] for r in records if "loss" in r and r["step"] > 1)
    timed = len(ticks) - 1
    return {"tok_s": units / (wall_n - wall_0), "s_step": (wall_n - wall_0) / timed,
            "cpu_tok_s": units / (cpu_n - cpu_0), "cpu_step": (cpu_n - cpu_0) / timed, "rss": rss}


def _spread(values: list[float], digits: int = 0) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def summarise(results: dict[tuple[str, str], list[dict]]) -> str:
    """Medians with (min-max) over the repeats; `x LF` is the median CPU-clock throughput over LLaMA-Factory's."""
    header = (f"{'method':6} {'variant':26} {'CPU tok/s':>20} {'CPU s/step':>20} {'wall tok/s':>18} "
              f"{'wall s/step':>20} {'peak RSS MiB':>18} {'x LF':>5}")
    lines = [header]
    for (method, variant), runs in results.items():
        pick = lambda key: [run[key] for run in runs]  # noqa: E731
        base = results.get((method, "llamafactory"))
        ratio = (statistics.median(pick("cpu_tok_s")) / statistics.median(r["cpu_tok_s"] for r in base)
                 if base else float("nan"))
        lines.append(f"{method:6} {variant:26} {_spread(pick('cpu_tok_s')):>20} {_spread(pick('cpu_step'), 3):>20} "
                     f"{_spread(pick('tok_s')):>18} {_spread(pick('s_step'), 3):>20} {_spread(pick('rss')):>18} "
                     f"{ratio:5.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="OMP threads per run; 0 leaves torch's default")
    parser.add_argument("--lf-venv", type=Path, default=REPO.parent / "lf-venv")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tunesmith-train-bench")
    args = parser.parse_args()
    if "llamafactory" in args.variants and not (args.lf_venv / "bin" / "llamafactory-cli").is_file():
        sys.exit(f"LLaMA-Factory not found in {args.lf_venv}; pass --lf-venv or leave out the llamafactory variant")
    model, data = build_assets(args.work)
    targets = mean_targets_per_sample(model, data)
    print(f"assets in {args.work}; mean target tokens per sample {targets:.1f}", flush=True)
    results: dict[tuple[str, str], list[dict]] = {(m, v): [] for m in args.methods for v in args.variants}
    for repeat in range(args.repeats):
        for method in args.methods:
            for variant in args.variants:
                result = measure(variant, method, args.work, args.steps, args, targets)
                results[(method, variant)].append(result)
                print(f"[{repeat + 1}/{args.repeats}] {method} {variant}: wall {result['tok_s']:.0f} target tok/s "
                      f"{result['s_step']:.3f} s/step; CPU {result['cpu_tok_s']:.0f} target tok/s "
                      f"{result['cpu_step']:.3f} s/step; {result['rss']:.0f} MiB peak RSS", flush=True)
    print(summarise(results))


if __name__ == "__main__":
    main()
