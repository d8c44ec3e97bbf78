"""The shipped example configs stay runnable: each validates against the schema and its datasets load as the
records its stage trains on (paths in them are relative to the repository root, where the README runs them)."""

from __future__ import annotations

import pytest

from conftest import REPO

EXAMPLES = sorted(path for path in (REPO / "examples").rglob("*.yaml") if "kubernetes" not in path.parts)


def test_every_example_config_is_found():
    names = {str(path.relative_to(REPO / "examples")) for path in EXAMPLES}
    assert {"quickstart.yaml", "rlhf/sft.yaml", "rlhf/rm.yaml", "rlhf/ppo.yaml", "rlhf/dpo.yaml",
            "dist/zero3_lora.yaml", "dist/fsdp_full.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: str(path.relative_to(REPO / "examples")))
def test_example_config_validates_and_its_data_loads(path, monkeypatch):
    from tunesmith.config import load_config
    from tunesmith.data.dataset import load_records
    from tunesmith.train.stages import get_stage

    monkeypatch.chdir(REPO)
    config = load_config(path)
    stage = get_stage(config.stage.kind, config.stage)

    records = load_records(config.data, stage.record_kind)

    assert records, f"{path.name}: no records from {config.data.datasets}"
