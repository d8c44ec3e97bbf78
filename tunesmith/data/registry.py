"""Dataset registry: LLaMA-Factory's dataset_info.json, read as is, into `DatasetSpec`s."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.data.files import REGISTRY_FILE
from tunesmith.errors import TunesmithError


@dataclass
class DatasetSpec:
    """One dataset entry: where its file is and how its columns map onto a format."""

    name: str
    path: Path  # a data file or a folder of them
    formatting: str = "alpaca"  # alpaca | sharegpt | openai; "auto" (a path given directly) detects it
    ranking: bool = False
    columns: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    split: str = "train"
    num_samples: int | None = None


def resolve_datasets(names: list[str], dataset_dir: str | Path) -> list[DatasetSpec]:
    """A spec per name: an entry of dataset_dir/dataset_info.json, or a data file path given directly."""
    dataset_dir = Path(dataset_dir)
    registry = _read_registry(dataset_dir)
    return [_resolve(name, registry, dataset_dir) for name in names]


def _read_registry(dataset_dir: Path) -> dict:
    path = dataset_dir / REGISTRY_FILE
    if not path.is_file():
        return {}
    try:
        registry = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise TunesmithError(f"{path}: not valid JSON at line {err.lineno} column {err.colno} ({err.msg})") from None
    if not isinstance(registry, dict):
        raise TunesmithError(f"{path}: expected an object mapping dataset names to entries")
    return registry


def _resolve(name: str, registry: dict, dataset_dir: Path) -> DatasetSpec:
    if name in registry:
        return _spec_from_entry(name, registry[name], dataset_dir)
    direct = Path(name) if Path(name).exists() else dataset_dir / name
    if direct.exists():
        return DatasetSpec(name=name, path=direct, formatting="auto")
    where = dataset_dir / REGISTRY_FILE
    known = ", ".join(sorted(registry)) if registry else f"none ({where} not found)"
    raise TunesmithError(f"dataset '{name}' is neither in {where} nor a file or folder; known datasets: {known}")


def _spec_from_entry(name: str, entry: dict, dataset_dir: Path) -> DatasetSpec:
    if not isinstance(entry, dict):
        raise TunesmithError(f"dataset_info.json: entry '{name}' must be an object")
    return DatasetSpec(
        name=name,
        path=_entry_path(name, entry, dataset_dir),
        formatting=entry.get("formatting", "alpaca"),
        ranking=bool(entry.get("ranking", False)),
        columns=dict(entry.get("columns", {})),
        tags=dict(entry.get("tags", {})),
        split=entry.get("split", "train"),
        num_samples=entry.get("num_samples"),
    )


def _entry_path(name: str, entry: dict, dataset_dir: Path) -> Path:
    """The entry's local file_name, else its Hugging Face Hub dataset as `datasets` caches it."""
    file_name = entry.get("file_name")
    if file_name:
        path = dataset_dir / file_name
        if not path.exists():
            raise TunesmithError(f"dataset '{name}': file {path} does not exist; check data.dataset_dir")
        return path
    if entry.get("hf_hub_url"):
        from tunesmith.data.hub import HubSource, hub_data_path

        return hub_data_path(HubSource(name, entry["hf_hub_url"], entry.get("subset"), entry.get("split", "train"),
                                       entry.get("folder")))
    other = entry.get("ms_hub_url") or entry.get("om_hub_url")
    hint = (f" (it names {other}, a ModelScope / Modelers dataset, which tunesmith does not download: download "
            "it and set file_name to the downloaded file or folder)") if other else ""
    raise TunesmithError(f"dataset '{name}' has no file_name or hf_hub_url in dataset_info.json{hint}")
