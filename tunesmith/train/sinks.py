"""Optional metric sinks: TensorBoard, Weights & Biases, MLflow. Each is used only when asked for and installed."""

from __future__ import annotations

from pathlib import Path

from tunesmith.errors import TunesmithError


def _require(module: str, package: str, sink: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise TunesmithError(
            f"train.report_to includes {sink} but {package} is not installed; pip install {package} "
            f"or remove {sink} from train.report_to"
        ) from None


def _numbers(record: dict) -> dict[str, float]:
    return {key: value for key, value in record.items() if key != "step" and isinstance(value, (int, float))}


class TensorBoardSink:
    def __init__(self, run_dir: Path, config: dict):
        _require("tensorboard", "tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def write(self, record: dict, step: int) -> None:
        for key, value in _numbers(record).items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, run_dir: Path, config: dict):
        self.wandb = _require("wandb", "wandb", "wandb")
        self.run = self.wandb.init(dir=str(run_dir), name=Path(run_dir).name, config=config)

    def write(self, record: dict, step: int) -> None:
        self.run.log(_numbers(record), step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowSink:
    def __init__(self, run_dir: Path, config: dict):
        self.mlflow = _require("mlflow", "mlflow", "mlflow")
        self.mlflow.start_run(run_name=Path(run_dir).name)
        self.mlflow.log_params({key: str(value)[:250] for key, value in _flatten(config).items()})

    def write(self, record: dict, step: int) -> None:
        self.mlflow.log_metrics(_numbers(record), step=step)

    def close(self) -> None:
        self.mlflow.end_run()


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


SINKS = {"tensorboard": TensorBoardSink, "wandb": WandbSink, "mlflow": MlflowSink}


def build_sinks(names: list[str], run_dir: Path, config: dict) -> list:
    return [SINKS[name](run_dir, config) for name in names]
