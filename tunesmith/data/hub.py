"""Datasets that live on the Hugging Face Hub (dataset_info.json's hf_hub_url), loaded with `datasets.load_dataset`.

`datasets` downloads the repository once and keeps it as Arrow files in its cache (HF_DATASETS_CACHE); the
rest of tunesmith reads those Arrow files like any local data file, so a hub dataset is cached, split, hashed
for the token cache and limited to num_samples exactly as a local one is. Offline, a dataset that is not in the
cache is one error saying what to download and where to put it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import TunesmithError


@dataclass(frozen=True)
class HubSource:
    """Where a registry entry's rows are on the hub: a repository, and within it a subset, a split, a folder."""

    dataset: str  # dataset_info.json's name for it
    repo: str  # hf_hub_url: a repository id (or a local folder laid out like one)
    subset: str | None = None
    split: str = "train"
    folder: str | None = None

    def where(self) -> str:
        parts = [f"subset '{self.subset}'" if self.subset else "", f"folder '{self.folder}'" if self.folder else "",
                 f"split '{self.split}'"]
        return f"{self.repo} ({', '.join(part for part in parts if part)})"


def hub_data_path(source: HubSource) -> Path:
    """The Arrow files holding the source's rows (downloaded and converted by `datasets` on first use): one
    file, or a folder linking to the split's files, which lie beside those of other splits."""
    dataset = _load(source)
    files = [Path(entry["filename"]) for entry in dataset.cache_files]
    if len(files) == 1:
        return files[0]
    digest = hashlib.sha256("\0".join(map(str, files)).encode()).hexdigest()[:16]
    links = files[0].parent / f"tunesmith-{source.split}-{digest}"
    if not links.is_dir():
        staging = links.with_name(links.name + ".partial")
        staging.mkdir(exist_ok=True)
        for file in files:
            link = staging / file.name
            if not link.is_symlink():
                link.symlink_to(file)
        staging.rename(links)
    return links


def _load(source: HubSource):
    import datasets

    try:
        return datasets.load_dataset(source.repo, name=source.subset, data_dir=source.folder, split=source.split)
    except (ConnectionError, FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as err:
        if not datasets.config.HF_HUB_OFFLINE:
            raise TunesmithError(f"dataset '{source.dataset}': {source.where()} could not be loaded from the Hugging "
                                 f"Face Hub: {err}") from None
        raise TunesmithError(offline_message(source, datasets.config.HF_DATASETS_CACHE)) from None
    except ValueError as err:  # an unknown subset or split: datasets names the ones there are
        raise TunesmithError(f"dataset '{source.dataset}': {source.where()}: {err}") from None


def offline_message(source: HubSource, cache: str | Path) -> str:
    subset = f", '{source.subset}'" if source.subset else ""
    folder = f", data_dir='{source.folder}'" if source.folder else ""
    return (f"dataset '{source.dataset}' lives on the Hugging Face Hub ({source.where()}) and is not in the datasets "
            f"cache ({cache}), and HF_HUB_OFFLINE is set. Where you are online, run: python -c \"import datasets; "
            f"datasets.load_dataset('{source.repo}'{subset}{folder}, split='{source.split}')\" (it fills that cache; "
            "set HF_DATASETS_CACHE to use another folder), or download the repository (hf download --repo-type "
            f"dataset {source.repo} --local-dir DIR) and set \"file_name\": \"DIR\" in the entry, relative to "
            "data.dataset_dir")
