"""The export's model card (README.md): where the model came from, how it was trained, how it ended."""

from __future__ import annotations

import shutil
from pathlib import Path

from tunesmith.config.schema import RunConfig
from tunesmith.train.metrics import read_metrics
from tunesmith.train.plot import PLOT_FILE

_HYPERPARAMETERS = ("epochs", "max_steps", "batch_size", "grad_accum", "lr", "scheduler", "warmup_ratio",
                    "weight_decay", "max_grad_norm", "precision", "seed")


def write_model_card(folder: Path, title: str, run_dir: Path, config: RunConfig, files: dict[str, int]) -> Path:
    """README.md in `folder`; `files` maps each exported file to its size in bytes."""
    has_plot = (run_dir / PLOT_FILE).is_file()
    if has_plot:
        shutil.copy(run_dir / PLOT_FILE, folder / PLOT_FILE)
    sections = [
        _front_matter(config),
        f"# {title}\n\nFine-tuned from `{config.model.path}` with tunesmith "
        f"({config.stage.kind} stage, {config.method.kind} method).",
        "## Training\n\n" + _training_table(config),
        "## Results\n\n" + _results(run_dir) + (f"\n\n![loss curve]({PLOT_FILE})" if has_plot else ""),
        "## Files\n\n" + "\n".join(f"- `{name}` ({_human(size)})" for name, size in sorted(files.items())),
        _usage(files),
    ]
    path = folder / "README.md"
    path.write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    return path


def _front_matter(config: RunConfig) -> str:
    lines = ["---", "library_name: transformers", f"base_model: {config.model.path}", "tags:", "- tunesmith",
             f"- {config.stage.kind}", f"- {config.method.kind}", "datasets:"]
    lines += [f"- {name}" for name in config.data.datasets]
    return "\n".join(lines + ["---"])


def _training_table(config: RunConfig) -> str:
    rows = [("base model", config.model.path), ("chat template", config.model.template),
            ("method", config.method.kind), ("stage", config.stage.kind),
            ("data", ", ".join(config.data.datasets)), ("max length", config.data.max_length)]
    if config.method.kind in ("lora", "qlora"):
        lora = config.method.lora
        rows.append(("lora", f"rank {lora.rank}, alpha {lora.alpha}, dropout {lora.dropout}, targets {lora.targets}"))
    if config.method.kind == "freeze":
        rows.append(("trained layers", f"last {config.method.freeze.layers}"))
    train = config.train.model_dump()
    rows += [(name.replace("_", " "), train[name]) for name in _HYPERPARAMETERS if train.get(name) is not None]
    return "| setting | value |\n|---|---|\n" + "\n".join(f"| {key} | `{value}` |" for key, value in rows)


def _results(run_dir: Path) -> str:
    records = read_metrics(run_dir)
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    if not train:
        return "No metrics were logged."
    lines = [f"- steps: {train[-1]['step']}", f"- final train loss: {train[-1]['loss']:.4f}"]
    if evals:
        lines.append(f"- final eval loss: {evals[-1]['eval_loss']:.4f}")
    return "\n".join(lines)


def _usage(files: dict[str, int]) -> str:
    text = ("## Use\n\n```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")\n'
            'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")\n```')
    if "gguf/Modelfile" in files:
        text += "\n\nWith Ollama: `cd gguf && ollama create my-model -f Modelfile && ollama run my-model`."
    return text


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"
