"""The loss curve as a PNG in the run folder."""

from __future__ import annotations

from pathlib import Path

from tunesmith.run_folder import PLOT_FILE, read_metrics


def plot_loss(run_dir: Path) -> Path | None:
    records = read_metrics(run_dir)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    axes.plot(*zip(*train), label="train loss", color="#3b6fb6", linewidth=1.2)
    if evals:
        axes.plot(*zip(*evals), "o-", label="eval loss", color="#d0632a")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(f"loss — {Path(run_dir).name}")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = Path(run_dir) / PLOT_FILE
    figure.savefig(path)
    plt.close(figure)
    return path
