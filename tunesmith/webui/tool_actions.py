"""The Evaluate and Export tabs' jobs: `tunesmith eval` and `tunesmith export` run as subprocesses.

The tabs' settings are the schema's `eval` and `export` groups. Evaluation passes them as the flags of the
same names (`--shots 5`); export writes the picked run's config with the export group filled in and runs
`tunesmith export CONFIG`. Where this tunesmith lacks a command the tab says so instead of failing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.webui.context import WebuiContext
from tunesmith.webui.jobs import Job, tunesmith_argv
from tunesmith.run_folder import CONFIG_FILE, config_path, is_adapter, is_run_folder

UI_SET_EVAL_FIELDS = ("run", "adapter", "out")  # set from the checkpoint picker and the runs folder, not typed
UI_SET_EXPORT_FIELDS = ("run",)  # the run is the one picked in the top bar
BENCHMARKS = ("mmlu", "ceval", "cmmlu")


def _model_args(ctx: WebuiContext, model: str | None, checkpoint: str | None) -> list[str]:
    """--run for a run folder, --model [--adapter] otherwise."""
    if checkpoint:
        chosen = ctx.guard.existing(checkpoint, "checkpoint", "dir")
        if is_run_folder(chosen):
            return ["--run", str(chosen)]
        if is_adapter(chosen):
            return ["--model", ctx.guard.model(model), "--adapter", str(chosen)]
        return ["--model", str(chosen)]
    if not model:
        raise TunesmithError("no model chosen; type a model path or pick a checkpoint")
    return ["--model", ctx.guard.model(model)]


def eval_argv(ctx: WebuiContext, model_args: list[str], options: dict, dataset_dir: str | None,
              datasets: list[str], out: Path) -> list[str]:
    """`tunesmith eval` flags: each eval field the user changed is passed as the flag of the same name."""
    task = options.get("task")
    if task in BENCHMARKS:
        data = ["--data", str(ctx.guard.existing(options.get("benchmark_dir"), "benchmark folder", "dir"))]
    else:
        if not datasets:
            raise TunesmithError(f"task {task} scores a dataset: pick one in the Train tab's dataset list")
        folder = ctx.guard.existing(dataset_dir, "dataset folder", "dir")
        data = ["--data", str(folder), "--dataset", ",".join(datasets)]
    flags = reward_flags(options.get("rewards") or [])
    for name, value in options.items():
        if name not in (*UI_SET_EVAL_FIELDS, "benchmark_dir", "rewards") and value is not None:  # folder: --data
            flags += [f"--{name.replace('_', '-')}", str(value)]
    return tunesmith_argv("eval", *model_args, *data, *flags, "--out", str(out))


def reward_flags(rewards: list[str]) -> list[str]:
    """`--rewards NAME ...`, none of them a Python file's function (see refuse_reward_code)."""
    refuse_reward_code(rewards, "tunesmith eval --rewards ...")
    return ["--rewards", *rewards] if rewards else []


def refuse_reward_code(rewards: list[str], command: str) -> None:
    """A reward named 'file.py:function' runs that file's code: the web UI runs none, whoever typed it or
    whichever run folder's config named it; the command line (`command`) does, when its user asks."""
    for name in rewards:
        if ".py:" in name:
            raise TunesmithError(f"reward {name!r} runs the code in that file; the web UI does not run reward code, "
                                 f"so run it from the command line: {command}")


def start_eval(ctx: WebuiContext, model: str | None, checkpoint: str | None, options: dict,
               dataset_dir: str | None, datasets: list[str]) -> Job:
    if not options.get("task"):
        raise TunesmithError("pick a task to evaluate")
    out = ctx.runs_dir / "eval" / f"{options['task']}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    argv = eval_argv(ctx, _model_args(ctx, model, checkpoint), options, dataset_dir, datasets, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return ctx.jobs.start("eval", argv, output=out)


def start_export(ctx: WebuiContext, checkpoint: str | None, options: dict) -> Job:
    """Write the run's config with the page's export group beside the runs and run `tunesmith export` on it."""
    from tunesmith.config import dump_config, load_saved_config, validate_config

    if not checkpoint:
        raise TunesmithError("pick a trained run in the checkpoint picker to export")
    run = ctx.guard.existing(checkpoint, "checkpoint", "dir")
    if not is_run_folder(run):
        raise TunesmithError(f"{run} is not a run folder; export takes a whole run, pick one without /checkpoint-N")
    out = _export_folder(ctx, options.get("out"))
    raw = load_saved_config(config_path(run)).model_dump(mode="json")
    raw["export"] = {**options, "run": str(run), "out": str(out)}
    config = validate_config(raw, source="export settings")
    export_file = ctx.runs_dir / "exports" / f"{run.name}-{time.strftime('%Y%m%d-%H%M%S')}.yaml"
    export_file.parent.mkdir(parents=True, exist_ok=True)
    export_file.write_text(dump_config(config), encoding="utf-8")
    return ctx.jobs.start("export", tunesmith_argv("export", str(export_file)), output=out)


def _export_folder(ctx: WebuiContext, typed: str | None) -> Path:
    """The export's `out`, refused where an overwriting export would destroy something: an allowed root, or a
    folder holding the runs, a run or a dataset."""
    out = ctx.guard.writable(typed, "export folder")
    if out in ctx.guard.roots or ctx.runs_dir == out or ctx.runs_dir.is_relative_to(out):
        raise TunesmithError(f"export folder {typed} holds your work (an allowed folder or the runs); "
                             "pick a new folder for the export, e.g. exports/my-model")
    for marker, what in ((CONFIG_FILE, "a run folder"), ("dataset_info.json", "a dataset folder")):
        if out.is_dir() and next(out.rglob(marker), None) is not None:
            raise TunesmithError(f"export folder {typed} holds {what}; pick a new folder for the export")
    return out


def result_rows(output: Path | None) -> list[list]:
    """[name, value] rows of every number or string in the JSON results an eval job wrote."""
    if output is None:
        return []
    files = sorted(output.glob("*.json")) if output.is_dir() else [output]
    rows: list[list] = []
    for file in (f for f in files if f.is_file()):
        try:
            _flatten(json.loads(file.read_text(encoding="utf-8")), "", rows)
        except json.JSONDecodeError:
            continue
    return rows


def _flatten(value, prefix: str, rows: list[list]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), rows)
    elif isinstance(value, (int, float, str, bool)):
        rows.append([prefix, value])
