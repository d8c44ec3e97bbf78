"""The export's model card (README.md): where the model came from, how it was trained, how it ended."""

from __future__ import annotations

import shutil
from pathlib import Path

from tunesmith.config.schema import RunConfig
from tunesmith.run_card import front_matter, results, training_table
from tunesmith.run_folder import CARD_FILE, PLOT_FILE


def write_model_card(folder: Path, title: str, run_dir: Path, config: RunConfig, files: dict[str, int]) -> Path:
    """README.md in `folder`; `files` maps each exported file to its size in bytes."""
    if (run_dir / PLOT_FILE).is_file():
        shutil.copy(run_dir / PLOT_FILE, folder / PLOT_FILE)
    sections = [
        front_matter(config),
        f"# {title}\n\nFine-tuned from `{config.model.path}` with tunesmith "
        f"({config.stage.kind} stage, {config.method.kind} method).",
        "## Training\n\n" + training_table(config),
        "## Results\n\n" + results(run_dir),  # its loss.png link holds here too: the plot is copied beside
        "## Files\n\n" + "\n".join(f"- `{name}` ({_human(size)})" for name, size in sorted(files.items())),
        _usage(files),
    ]
    path = folder / CARD_FILE
    path.write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    return path


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
