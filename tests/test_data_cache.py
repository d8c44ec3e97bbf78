"""The tokenization cache: a second run skips tokenization; a crashed run keeps its finished shards."""

from __future__ import annotations

import json

import pytest

from conftest import LF_DATA
from tunesmith.config.schema import DataConfig
from tunesmith.data import encoding
from tunesmith.data.cache import encoder_fingerprint
from tunesmith.data.dataset import prepare_data
from tunesmith.data.template import ChatTemplate


@pytest.fixture(scope="module")
def template(smollm2_dir):
    from transformers import AutoTokenizer

    return ChatTemplate(AutoTokenizer.from_pretrained(smollm2_dir))


class CountingEncoder:
    """template.encode_many that counts the records it encodes and can crash on every record from one on."""

    def __init__(self, template, crash_from: int | None = None):
        self.template, self.calls = template, 0
        self.crashing = [] if crash_from is None else _records()[crash_from:]

    def __call__(self, records):
        if any(record in self.crashing for record in records):
            raise KeyboardInterrupt("simulated crash")
        self.calls += len(records)
        return self.template.encode_many(records)


def config(tmp_path, **options) -> DataConfig:
    options = {"max_length": 64, **options}
    return DataConfig(datasets=["identity"], dataset_dir=str(LF_DATA), cache_dir=str(tmp_path / "cache"), **options)


def as_lists(prepared):
    return [(sample.input_ids, sample.labels) for sample in prepared.train]


def test_second_run_reads_the_cache_and_matches(tmp_path, template):
    first_encoder, second_encoder = CountingEncoder(template), CountingEncoder(template)
    fingerprint = encoder_fingerprint(template, "sft")
    first = prepare_data(config(tmp_path), first_encoder, "conversation", 0, fingerprint)
    second = prepare_data(config(tmp_path), second_encoder, "conversation", 0, fingerprint)
    assert (first_encoder.calls, second_encoder.calls) == (91, 0)
    assert as_lists(second) == as_lists(first)
    assert (second.truncated, second.dropped) == (first.truncated, first.dropped)
    cut = [(e.input_ids[:64], e.labels[:64]) for e in map(template.encode, _records())]
    assert as_lists(first) == [(ids, labels) for ids, labels in cut if any(label != -100 for label in labels)]
    changed = prepare_data(config(tmp_path, max_length=96), CountingEncoder(template), "conversation", 0, fingerprint)
    assert len(changed.train[0].input_ids) != len(first.train[0].input_ids) or changed.truncated != first.truncated


def _records():
    from tunesmith.data.dataset import load_records

    return load_records(DataConfig(datasets=["identity"], dataset_dir=str(LF_DATA)))


def test_crashed_run_resumes_from_finished_shards(tmp_path, template, monkeypatch):
    monkeypatch.setattr(encoding, "SHARD_SIZE", 20)
    fingerprint = encoder_fingerprint(template, "sft")
    with pytest.raises(KeyboardInterrupt):
        prepare_data(config(tmp_path), CountingEncoder(template, crash_from=44), "conversation", 0, fingerprint)
    resumed_encoder = CountingEncoder(template)
    resumed = prepare_data(config(tmp_path), resumed_encoder, "conversation", 0, fingerprint)
    assert resumed_encoder.calls == 91 - 40  # shards 0 and 1 (records 1-40) survived the crash
    fresh = prepare_data(config(tmp_path / "fresh"), CountingEncoder(template), "conversation", 0, fingerprint)
    assert as_lists(resumed) == as_lists(fresh)


def test_multi_process_tokenization_matches_one_process(tmp_path, template, monkeypatch):
    monkeypatch.setattr(encoding, "SHARD_SIZE", 25)
    one = prepare_data(config(tmp_path / "one", cache=False), template.encode_many, "conversation", 0)
    two = prepare_data(config(tmp_path / "two", num_proc=2), template.encode_many, "conversation", 0,
                       encoder_fingerprint(template, "sft"))
    assert as_lists(one) == as_lists(two)
    manifest = json.loads(next((tmp_path / "two" / "cache").glob("*/manifest.json")).read_text())
    assert manifest["shards"] == 4 and manifest["stats"]["records"] == 91


def test_default_cache_folder_follows_xdg_cache_home(tmp_path, template, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    data = DataConfig(datasets=["identity"], dataset_dir=str(LF_DATA), max_length=64)
    prepare_data(data, CountingEncoder(template), "conversation", 0, encoder_fingerprint(template, "sft"))
    (key_folder,) = (tmp_path / "xdg" / "tunesmith" / "data").iterdir()
    assert (key_folder / "manifest.json").is_file()


def test_a_change_in_the_encoding_code_misses_the_old_cache(tmp_path, template, monkeypatch):
    from tunesmith.data import cache

    fingerprint = encoder_fingerprint(template, "sft")
    prepare_data(config(tmp_path), CountingEncoder(template), "conversation", 0, fingerprint)
    monkeypatch.setattr(cache, "encoding_code_version", lambda: "edited encoder")
    after_edit = CountingEncoder(template)
    prepare_data(config(tmp_path), after_edit, "conversation", 0, fingerprint)
    assert after_edit.calls == 91
