"""What a model card says about a run: its base model, data, method, stage, settings and final metrics.

The run folder's own README.md is written here; an export's card (export/card.py) reuses the same sections
and adds its files. The base model is named as the user named it in the config (a hub id, a path, a GGUF
package), never as the machine-local cache folder it resolved to.
"""

from __future__ import annotations

from pathlib import Path

from tunesmith.run_folder import CARD_FILE, PLOT_FILE, final_metrics

_HYPERPARAMETERS = ("epochs", "max_steps", "batch_size", "grad_accum", "lr", "scheduler", "warmup_ratio",
                    "weight_decay", "max_grad_norm", "precision", "seed")
_SKIPPED_METRICS = ("step", "epoch")  # shown as the step count, or not a result


def write_run_card(run_dir: Path, config) -> Path:
    """README.md in the run folder (replacing the empty template peft writes beside an adapter)."""
    run_dir = Path(run_dir)
    sections = [
        front_matter(config),
        f"# {run_dir.name}\n\nA tunesmith run: {base_model_name(config)} trained with the {config.stage.kind} "
        f"stage and the {config.method.kind} method.",
        "## Training\n\n" + training_table(config),
        "## Results\n\n" + results(run_dir),
        _usage(run_dir),
    ]
    path = run_dir / CARD_FILE
    path.write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    return path


def base_model_name(config) -> str:
    """The base model as the config names it: its path or hub id, with the GGUF file inside it if any."""
    model = config.model
    return f"`{model.path}`" + (f" (GGUF file `{model.gguf_file}`)" if model.gguf_file else "")


def front_matter(config) -> str:
    lines = ["---", "library_name: transformers", f"base_model: {config.model.path}", "tags:", "- tunesmith",
             f"- {config.stage.kind}", f"- {config.method.kind}", "datasets:"]
    lines += [f"- {name}" for name in config.data.datasets]
    return "\n".join(lines + ["---"])


def training_table(config) -> str:
    rows = [("base model", config.model.path), ("chat template", config.model.template),
            ("method", config.method.kind), ("stage", config.stage.kind),
            ("data", ", ".join(config.data.datasets)), ("max length", config.data.max_length)]
    if config.method.kind in ("lora", "qlora"):
        lora = config.method
        rows.append(("lora", f"rank {lora.rank}, alpha {lora.alpha}, dropout {lora.dropout}, targets {lora.targets}"))
    if config.method.kind == "freeze":
        rows.append(("trained layers", f"last {config.method.layers}"))
    train = config.train.model_dump()
    rows += [(name.replace("_", " "), train[name]) for name in _HYPERPARAMETERS if train.get(name) is not None]
    return "| setting | value |\n|---|---|\n" + "\n".join(f"| {key} | `{value}` |" for key, value in rows)


def results(run_dir: Path) -> str:
    """The last value of every logged metric, and the loss curve where the run plotted one."""
    final = final_metrics(run_dir)
    if "step" not in final:
        return "No metrics were logged."
    lines = [f"- steps: {final['step']}"]
    lines += [f"- final {name.replace('_', ' ')}: {_number(value)}" for name, value in final.items()
              if name not in _SKIPPED_METRICS and isinstance(value, (int, float))]
    plot = f"\n\n![loss curve]({PLOT_FILE})" if (Path(run_dir) / PLOT_FILE).is_file() else ""
    return "\n".join(lines) + plot


def _number(value: float) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _usage(run_dir: Path) -> str:
    return ("## Use\n\n"
            f"Chat with it: `tunesmith chat --run {run_dir}`\n\n"
            f"Serve it: `tunesmith api --run {run_dir}`\n\n"
            f"Export it (merged weights, optionally GGUF for llama.cpp / Ollama): "
            f"`tunesmith export --run {run_dir} --out DIR --gguf q8_0`")
