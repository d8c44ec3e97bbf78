"""The loss curve as a PNG in the run folder; online stages (grpo, ppo) get a reward panel beside it."""

from __future__ import annotations

from pathlib import Path

from tunesmith.run_folder import PLOT_FILE, read_metrics


def plot_loss(run_dir: Path) -> Path | None:
    records = read_metrics(run_dir)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    rewards = [(r["step"], r["reward"]) for r in records if "reward" in r]
    eval_rewards = [(r["step"], r["eval_reward"]) for r in records if "eval_reward" in r]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    panels = 2 if rewards else 1
    figure, axes = plt.subplots(1, panels, figsize=(7 * panels, 4), dpi=100, squeeze=False)
    _panel(axes[0][0], "loss", train, evals, Path(run_dir).name)
    if rewards:
        _panel(axes[0][1], "reward", rewards, eval_rewards, Path(run_dir).name)
    figure.tight_layout()
    path = Path(run_dir) / PLOT_FILE
    figure.savefig(path)
    plt.close(figure)
    return path


def _panel(axes, quantity: str, train: list, evals: list, run_name: str) -> None:
    axes.plot(*zip(*train), label=f"train {quantity}", color="#3b6fb6", linewidth=1.2)
    if evals:
        axes.plot(*zip(*evals), "o-", label=f"eval {quantity}", color="#d0632a")
    axes.set_xlabel("step")
    axes.set_ylabel(quantity)
    axes.set_title(f"{quantity} — {run_name}")
    axes.grid(alpha=0.3)
    axes.legend()
