"""What the Train tab's buttons do, kept apart from the widgets: build the config, launch, resume, report."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tunesmith.config import RunConfig, dump_config, load_saved_config, validate_config
from tunesmith.config.load import read_yaml
from tunesmith.errors import TunesmithError
from tunesmith.run_folder import CONFIG_FILE, config_path, is_run_folder
from tunesmith.webui.context import WebuiContext
from tunesmith.webui.jobs import Job, tunesmith_argv
from tunesmith.webui.tool_actions import refuse_reward_code
from tunesmith.config.paths import set_path
from tunesmith.webui.schema_fields import build_raw_config

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def run_dir_for(ctx: WebuiContext, run_name: str) -> Path:
    name = (run_name or "").strip()
    if not _RUN_NAME.match(name):
        raise TunesmithError(f"run name {run_name!r}: use letters, digits, '.', '_' and '-' (e.g. sft-identity-1)")
    return ctx.runs_dir / name


def build_run_config(ctx: WebuiContext, values: dict[str, Any], run_name: str) -> RunConfig:
    """The validated config for form `values` (by dotted path), with user-typed paths checked."""
    raw = build_raw_config(ctx.specs, values)
    set_path(raw, "model.path", ctx.guard.model(values.get("model.path")))
    set_path(raw, "data.dataset_dir", str(ctx.guard.existing(values.get("data.dataset_dir"), "dataset folder", "dir")))
    if not raw.get("data", {}).get("datasets"):
        raise TunesmithError("no dataset selected; pick at least one dataset from the dataset folder")
    set_path(raw, "train.output_dir", str(run_dir_for(ctx, run_name)))
    config = validate_config(raw, source="form")
    ctx.guard.check_config(config.model_dump(mode="json"), RunConfig)  # every path field, defaults included
    return config


def dataset_names(ctx: WebuiContext, dataset_dir: str) -> list[str]:
    """The datasets registered in dataset_dir/dataset_info.json."""
    folder = ctx.guard.existing(dataset_dir, "dataset folder", "dir")
    registry = folder / "dataset_info.json"
    if not registry.is_file():
        raise TunesmithError(f"{folder} has no dataset_info.json; pick a folder that registers its datasets")
    try:
        return sorted(json.loads(registry.read_text(encoding="utf-8")))
    except json.JSONDecodeError as err:
        raise TunesmithError(f"{registry}: not valid JSON (line {err.lineno}); fix the file") from None


def is_vision_model_path(ctx: WebuiContext, model_path: str | None) -> bool:
    """Whether `model_path` is a vision-language model folder inside the allowed roots (the Train tab offers
    method.vision for those only; a hub id or a GGUF file counts as text-only, as model loading treats it)."""
    from tunesmith.model.vision import vision_model_type

    try:
        location = ctx.guard.model(model_path)
    except TunesmithError:
        return False
    return vision_model_type(location) is not None


def train_argv(config_path: Path, *overrides: str) -> list[str]:
    return tunesmith_argv("train", str(config_path), *overrides)


def command_preview(config: RunConfig) -> tuple[str, str]:
    """(YAML of the config, the `tunesmith train` command that runs it) as the page shows them."""
    return dump_config(config), shlex.join(["tunesmith", "train", str(config_path(config.train.output_dir))])


def start_training(ctx: WebuiContext, config: RunConfig) -> Job:
    """Write the config into the run folder and launch `tunesmith train` on it."""
    run_dir = Path(config.train.output_dir)
    previous = [p.name for p in run_dir.iterdir() if p.name != CONFIG_FILE] if run_dir.is_dir() else []
    if previous and not config.train.overwrite:
        raise TunesmithError(
            f"run folder {run_dir} already holds a run; choose another run name, resume it, or tick Overwrite"
        )
    refuse_reward_code(config.stage.reward_funcs if config.stage.kind == "grpo" else [], "tunesmith train CONFIG")
    _refuse_if_busy(ctx)
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = config_path(run_dir)
    saved.write_text(dump_config(config), encoding="utf-8")
    return ctx.jobs.start("train", train_argv(saved), run_dir=run_dir)


def resume_training(ctx: WebuiContext, run_name: str) -> Job:
    """Continue the run in the named folder from its newest checkpoint."""
    from tunesmith.train.checkpoint import list_checkpoints

    run_dir = run_dir_for(ctx, run_name)
    if not is_run_folder(run_dir):
        raise TunesmithError(f"{run_dir} is not a run folder (no {CONFIG_FILE}); type the run name of an earlier run")
    if not list_checkpoints(run_dir):
        raise TunesmithError(f"{run_dir} has no checkpoint to resume from; runs save them every train.save_steps")
    saved = config_path(run_dir)
    stage = load_saved_config(saved).stage
    refuse_reward_code(stage.reward_funcs if stage.kind == "grpo" else [], f"tunesmith train {saved} "
                       "train.resume=auto")
    _refuse_if_busy(ctx)
    return ctx.jobs.start("train", train_argv(saved, "train.resume=auto"), run_dir=run_dir)


def _refuse_if_busy(ctx: WebuiContext) -> None:
    job = ctx.jobs.job
    if job is not None and job.running:
        raise TunesmithError(f"a {job.kind} job is already running; wait for it to finish or stop it first")


def save_arguments(ctx: WebuiContext, config: RunConfig, path: str) -> Path:
    """Write the config as a .yaml file inside the allowed roots, replacing only an earlier tunesmith config."""
    target = ctx.guard.writable(path, "arguments file")
    if target.suffix not in (".yaml", ".yml"):
        raise TunesmithError(f"arguments file {path}: save arguments as a .yaml file (e.g. my-run.yaml)")
    if target.exists() and not _is_tunesmith_config(target):
        raise TunesmithError(f"arguments file {path} exists and is not a tunesmith config; pick a new file name")
    target.write_text(dump_config(config), encoding="utf-8")
    return target


def _is_tunesmith_config(path: Path) -> bool:
    try:
        validate_config(read_yaml(path), source=str(path))
    except (TunesmithError, OSError, UnicodeDecodeError):
        return False
    return path.is_file()


def load_arguments(ctx: WebuiContext, path: str) -> dict:
    """A saved config (or a run folder's config.yaml), validated, as a plain dict for the form; its
    trust_remote_code is left off: ticking it is the user's own decision (config/trust.py)."""
    source = ctx.guard.existing(path, "arguments file", "file")
    loaded = load_saved_config(source).model_dump(mode="json")
    loaded["model"]["trust_remote_code"] = False
    return loaded


def estimate_memory(config: RunConfig) -> str:
    """The output of `tunesmith estimate` for the config."""
    with tempfile.TemporaryDirectory(prefix="tunesmith-webui-") as folder:
        path = config_path(folder)
        path.write_text(dump_config(config), encoding="utf-8")
        done = subprocess.run(tunesmith_argv("estimate", str(path)), capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise TunesmithError(lines[-1] if lines else f"tunesmith estimate failed (exit {done.returncode})")
    return f"```\n{done.stdout.strip()}\n```"
