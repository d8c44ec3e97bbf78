"""Every source format becomes the typed records the stages expect; checked against the raw files."""

from __future__ import annotations

import json

import pytest

from conftest import LF_DATA
from tunesmith.config.schema import DataConfig
from tunesmith.data.dataset import load_records
from tunesmith.data.records import Conversation, KtoExample, Preference, Text


def records(datasets, dataset_dir=LF_DATA, kind="conversation", **options):
    return load_records(DataConfig(datasets=datasets, dataset_dir=str(dataset_dir), **options), kind)


def registry_entries():
    info = json.loads((LF_DATA / "dataset_info.json").read_text())
    return {name: entry for name, entry in info.items() if (LF_DATA / entry.get("file_name", "-")).exists()}


@pytest.mark.parametrize("name", sorted(registry_entries()))
def test_every_local_llamafactory_dataset_loads_through_its_registry(name):
    entry = registry_entries()[name]
    columns = entry.get("columns", {})
    kind = ("preference" if entry.get("ranking") else "kto" if "kto_tag" in columns
            else "text" if columns.get("prompt") == "text" else "conversation")
    loaded = records([name], kind=kind)
    path = LF_DATA / entry["file_name"]
    if path.suffix == ".json":
        expected = len(json.loads(path.read_text()))
    else:
        expected = sum(1 for line in path.read_text().splitlines() if line.strip())
    assert len(loaded) == expected
    record_type = {"preference": Preference, "kto": KtoExample, "text": Text, "conversation": Conversation}[kind]
    assert all(isinstance(record, record_type) for record in loaded)


def test_alpaca_with_system_history_and_input(tmp_path):
    row = {"instruction": "Add", "input": "2 and 3", "output": "5", "system": "Be brief.",
           "history": [["Hi", "Hello"]]}
    (tmp_path / "a.json").write_text(json.dumps([row]))
    (conversation,) = records(["a.json"], tmp_path)
    assert conversation.messages == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Add\n2 and 3"},
        {"role": "assistant", "content": "5"},
    ]


def test_identity_placeholders_are_filled():
    raw = json.loads((LF_DATA / "identity.json").read_text())[0]["output"]
    reply = records(["identity"], vars={"name": "Tuna", "author": "Acme"})[0].messages[-1]["content"]
    assert reply == raw.replace("{{name}}", "Tuna").replace("{{author}}", "Acme").strip()


def test_sharegpt_function_calls_and_observations_become_tool_messages():
    raw = json.loads((LF_DATA / "glaive_toolcall_en_demo.json").read_text())[0]
    conversation = records(["glaive_toolcall_en_demo"], max_samples=1)[0]
    roles = {"human": "user", "gpt": "assistant", "function_call": "assistant", "observation": "tool"}
    assert [m["role"] for m in conversation.messages] == [roles[t["from"]] for t in raw["conversations"]]
    call = next(m for m in conversation.messages if m.get("tool_calls"))["tool_calls"][0]["function"]
    source = json.loads(next(t["value"] for t in raw["conversations"] if t["from"] == "function_call"))
    assert call == {"name": source["name"], "arguments": source["arguments"]}
    assert [tool["function"] for tool in conversation.tools] == json.loads(raw["tools"])


def test_sharegpt_preference_and_kto():
    raw = json.loads((LF_DATA / "dpo_en_demo.json").read_text())[0]
    pair = records(["dpo_en_demo"], kind="preference", max_samples=1)[0]
    assert pair.prompt[-1] == {"role": "user", "content": raw["conversations"][-1]["value"].strip()}
    assert pair.chosen["content"] == raw["chosen"]["value"].strip()
    assert pair.rejected["content"] == raw["rejected"]["value"].strip()
    raw_kto = json.loads((LF_DATA / "kto_en_demo.json").read_text())[:5]
    kto = records(["kto_en_demo"], kind="kto", max_samples=5)
    assert [example.desirable for example in kto] == [row["label"] for row in raw_kto]
    assert kto[0].completion["content"] == raw_kto[0]["messages"][-1]["content"].strip()


def test_alpaca_preference_form(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps([{"instruction": "Q", "input": "", "chosen": "good", "rejected": "bad"}]))
    (tmp_path / "dataset_info.json").write_text(json.dumps(
        {"p": {"file_name": "p.json", "ranking": True, "columns": {"chosen": "chosen", "rejected": "rejected"}}}))
    (pair,) = records(["p"], tmp_path, kind="preference")
    assert pair.prompt == [{"role": "user", "content": "Q"}]
    assert (pair.chosen["content"], pair.rejected["content"]) == ("good", "bad")


def test_openai_messages_jsonl_given_by_path_is_detected(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                          {"role": "assistant", "content": "A"}]}]
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    (conversation,) = records([str(path)], tmp_path)
    assert conversation.messages == rows[0]["messages"]


def test_text_from_jsonl_and_txt():
    c4 = [json.loads(line)["text"] for line in (LF_DATA / "c4_demo.jsonl").read_text().splitlines()]
    assert [record.text for record in records(["c4_demo"], kind="text")] == c4
    wiki = [line for line in (LF_DATA / "wiki_demo.txt").read_text().splitlines() if line.strip()]
    assert [record.text for record in records(["wiki_demo"], kind="text")] == wiki


@pytest.mark.parametrize("suffix", ["csv", "parquet", "arrow"])
def test_tabular_files_and_folders(tmp_path, suffix):
    import pyarrow as pa
    from pyarrow import csv, ipc, parquet

    rows = json.loads((LF_DATA / "alpaca_en_demo.json").read_text())[:6]
    table = pa.Table.from_pylist(rows)
    folder = tmp_path / "data"
    folder.mkdir()
    for part in range(2):
        path = folder / f"part{part}.{suffix}"
        piece = table.slice(part * 3, 3)
        if suffix == "csv":
            csv.write_csv(piece, path)
        elif suffix == "parquet":
            parquet.write_table(piece, path)
        else:
            with ipc.new_stream(str(path), piece.schema) as writer:
                writer.write_table(piece)
    loaded = records(["data"], tmp_path)
    assert [c.messages[-1]["content"] for c in loaded] == [row["output"].strip() for row in rows]


def test_mixing_and_max_samples():
    loaded = records(["identity", "alpaca_en_demo"], max_samples=4)
    identity = json.loads((LF_DATA / "identity.json").read_text())[:4]
    alpaca = json.loads((LF_DATA / "alpaca_en_demo.json").read_text())[:4]
    assert [c.messages[-1]["content"] for c in loaded] == [row["output"].strip() for row in identity + alpaca]


def test_sharegpt_preference_used_for_sft_is_an_error():
    from tunesmith.errors import TunesmithError

    with pytest.raises(TunesmithError, match="preference dataset"):
        records(["dpo_en_demo"])
