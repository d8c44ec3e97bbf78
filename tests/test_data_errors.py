"""Bad input: each problem is an error naming the file, the record and the problem."""

from __future__ import annotations

import json

import pytest

from tunesmith.config.schema import DataConfig
from tunesmith.data.dataset import load_records
from tunesmith.errors import TunesmithError


def load(tmp_path, name, content, kind="conversation"):
    (tmp_path / name).write_text(content)
    return load_records(DataConfig(datasets=[name], dataset_dir=str(tmp_path)), kind)


def sharegpt(*turns):
    return json.dumps([{"conversations": [{"from": role, "value": text} for role, text in turns]}])


@pytest.mark.parametrize("name, content, expected", [
    ("bad.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "c", "output"\n',
     r"bad\.jsonl: record 2 \(line 2\) is not valid JSON"),
    ("missing.json", json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "c"}]),
     r"missing\.json: record 2: missing column 'output'"),
    ("role.json", sharegpt(("human", "hi"), ("robot", "hello")),
     r"role\.json: record 1: message 2 has unknown role 'robot'"),
    ("order.json", sharegpt(("human", "hi"), ("human", "again"), ("gpt", "hello")),
     r"order\.json: record 1: message 2 \('user'\) follows a 'user' message"),
    ("open.json", sharegpt(("gpt", "hello"), ("human", "hi"), ("gpt", "x")),
     r"open\.json: record 1: message 1 \('assistant'\) follows the start"),
    ("ends.json", sharegpt(("human", "hi"), ("gpt", "hello"), ("human", "bye")),
     r"ends\.json: record 1: the conversation must end with an assistant turn"),
    ("empty.json", "", r"empty\.json: the file is empty"),
    ("empty.jsonl", "\n\n", r"empty\.jsonl: the file is empty"),
    ("list.json", json.dumps([{"instruction": "a", "output": "b"}, 3]), r"list\.json: record 2 is int"),
])
def test_bad_input_names_file_record_and_problem(tmp_path, name, content, expected):
    with pytest.raises(TunesmithError, match=expected):
        load(tmp_path, name, content)


def test_wrong_dataset_name_lists_the_known_ones(tmp_path):
    (tmp_path / "dataset_info.json").write_text(json.dumps({"mine": {"file_name": "mine.json"}}))
    with pytest.raises(TunesmithError, match=r"dataset 'minne' is neither in .*dataset_info\.json.*known datasets: mine"):
        load_records(DataConfig(datasets=["minne"], dataset_dir=str(tmp_path)))


def test_kto_without_tag_column_is_an_error(tmp_path):
    with pytest.raises(TunesmithError, match="no 'kto_tag' column"):
        load(tmp_path, "a.json", json.dumps([{"instruction": "a", "output": "b"}]), kind="kto")


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(TunesmithError, match="holds no data files"):
        load_records(DataConfig(datasets=["folder"], dataset_dir=str(tmp_path)))
