"""dataset_info.json entries on the Hugging Face Hub (hf_hub_url with subset, split, folder, num_samples) load
through `datasets.load_dataset`; a local folder laid out like a hub repository stands in for the hub, and the
`datasets` cache is a tmp folder. Offline, a dataset missing from the cache is one error saying what to do."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest

from conftest import LF_DATA
from tunesmith.config.schema import DataConfig
from tunesmith.data.dataset import load_records
from tunesmith.errors import TunesmithError

README = """---
configs:
- config_name: en
  data_files:
  - split: train
    path: en/train.json
  - split: test
    path: en/test.json
- config_name: zh
  data_files: zh/train.json
---
"""


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """`datasets` writes its Arrow cache under tmp, never the user's home."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets")
    return tmp_path / "hf_datasets"


@pytest.fixture
def hub_repo(tmp_path):
    """A dataset repository with subsets en (train and test splits) and zh, and a kto folder of its own."""
    repo = tmp_path / "repo"
    english = json.loads((LF_DATA / "alpaca_en_demo.json").read_text(encoding="utf-8"))
    chinese = json.loads((LF_DATA / "alpaca_zh_demo.json").read_text(encoding="utf-8"))
    files = {"en/train.json": english[:6], "en/test.json": english[6:9], "zh/train.json": chinese[:4]}
    for relative, rows in files.items():
        (repo / relative).parent.mkdir(parents=True, exist_ok=True)
        (repo / relative).write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    (repo / "README.md").write_text(README, encoding="utf-8")
    return repo


def records(tmp_path, entries: dict, name: str, **data) -> list:
    dataset_dir = tmp_path / "data"
    dataset_dir.mkdir(exist_ok=True)
    (dataset_dir / "dataset_info.json").write_text(json.dumps(entries), encoding="utf-8")
    return load_records(DataConfig(datasets=[name], dataset_dir=str(dataset_dir), **data))


@pytest.mark.parametrize("subset, split, rows", [("en", "train", slice(0, 6)), ("en", "test", slice(6, 9))])
def test_subset_and_split_load_the_rows_a_local_file_gives(hub_repo, tmp_path, subset, split, rows):
    english = json.loads((LF_DATA / "alpaca_en_demo.json").read_text(encoding="utf-8"))[rows]
    (tmp_path / "local.json").write_text(json.dumps(english), encoding="utf-8")
    local = load_records(DataConfig(datasets=[str(tmp_path / "local.json")]))

    hub = records(tmp_path, {"demo": {"hf_hub_url": str(hub_repo), "subset": subset, "split": split}}, "demo")

    assert [r.messages for r in hub] == [r.messages for r in local] and len(hub) == rows.stop - rows.start


def test_folder_and_num_samples(hub_repo, tmp_path):
    (hub_repo / "kto").mkdir()
    shutil.copy(LF_DATA / "kto_en_demo.json", hub_repo / "kto" / "data.json")
    entry = {"hf_hub_url": str(hub_repo), "folder": "kto", "num_samples": 3, "formatting": "sharegpt",
             "columns": {"messages": "messages", "kto_tag": "label"},
             "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}
    expected = json.loads((LF_DATA / "kto_en_demo.json").read_text(encoding="utf-8"))[:3]

    loaded = records(tmp_path, {"kto": entry}, "kto")

    assert [r.messages[-1]["content"] for r in loaded] == [row["messages"][-1]["content"] for row in expected]


def test_the_rows_are_read_from_the_datasets_cache(hub_repo, tmp_path, datasets_cache):
    from tunesmith.data.registry import resolve_datasets

    (tmp_path / "data").mkdir()
    entry = {"hf_hub_url": str(hub_repo), "subset": "zh"}
    (tmp_path / "data" / "dataset_info.json").write_text(json.dumps({"zh": entry}))

    spec = resolve_datasets(["zh"], tmp_path / "data")[0]

    assert spec.path.is_relative_to(datasets_cache) and spec.path.suffix == ".arrow"
    assert len(records(tmp_path, {"zh": entry}, "zh")) == 4


def test_an_unknown_subset_names_the_ones_there_are(hub_repo, tmp_path):
    with pytest.raises(TunesmithError, match="dataset 'demo'.*subset 'fr'.*'en', 'zh'"):
        records(tmp_path, {"demo": {"hf_hub_url": str(hub_repo), "subset": "fr"}}, "demo")


def test_offline_a_dataset_missing_from_the_cache_says_what_to_download_and_where(tmp_path, monkeypatch,
                                                                                   datasets_cache):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    entry = {"hf_hub_url": "llamafactory/DPO-En-Zh-20k", "subset": "en", "ranking": True, "formatting": "sharegpt"}

    with pytest.raises(TunesmithError) as err:
        records(tmp_path, {"dpo_mix_en": entry}, "dpo_mix_en")

    message = str(err.value)
    assert "dataset 'dpo_mix_en' lives on the Hugging Face Hub (llamafactory/DPO-En-Zh-20k (subset 'en'" in message
    assert f"not in the datasets cache ({datasets_cache})" in message
    assert "datasets.load_dataset('llamafactory/DPO-En-Zh-20k', 'en', split='train')" in message
    assert "hf download --repo-type dataset llamafactory/DPO-En-Zh-20k --local-dir DIR" in message
    assert not datasets_cache.exists() or not any(datasets_cache.rglob("*.arrow"))


def test_a_modelscope_only_entry_says_to_download_it(tmp_path):
    with pytest.raises(TunesmithError, match="ModelScope / Modelers dataset.*set file_name"):
        records(tmp_path, {"ms": {"ms_hub_url": "AI-ModelScope/alpaca-gpt4-data-en"}}, "ms")


def test_a_split_in_several_arrow_files_is_read_from_all_of_them(hub_repo, tmp_path, monkeypatch):
    """`datasets` shards a large split into several Arrow files, lying beside other splits' files: the spec
    points at a folder linking to exactly the split's files."""
    import datasets

    from tunesmith.data import hub
    from tunesmith.data.files import data_files, read_rows

    train, test = (datasets.load_dataset(str(hub_repo), "en", split=split) for split in ("train", "test"))
    sharded = SimpleNamespace(cache_files=train.cache_files + test.cache_files)  # one split's shards, as it were
    monkeypatch.setattr(hub, "_load", lambda source: sharded)

    path = hub.hub_data_path(hub.HubSource("demo", str(hub_repo), "en"))

    assert path.is_dir() and len(data_files(path)) == 2
    assert sum(len(read_rows(file)) for file in data_files(path)) == 6 + 3
    assert hub.hub_data_path(hub.HubSource("demo", str(hub_repo), "en")) == path  # made once, then reused
