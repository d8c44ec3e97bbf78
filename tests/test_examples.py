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


def _readme_yaml_blocks() -> list[tuple[str, str]]:
    """(where, text) of every ```yaml block in the README and the examples' READMEs."""
    import re

    readmes = [REPO / "README.md", *sorted((REPO / "examples").rglob("*.md"))]
    return [(f"{path.relative_to(REPO)}#{number}", block) for path in readmes
            for number, block in enumerate(re.findall(r"```yaml\n(.*?)```", path.read_text(encoding="utf-8"), re.S))]


def test_the_readme_shows_a_config():
    assert any(where.startswith("README.md") for where, _ in _readme_yaml_blocks())


@pytest.mark.parametrize("where, block", _readme_yaml_blocks(), ids=[where for where, _ in _readme_yaml_blocks()])
def test_readme_config_snippet_is_valid_under_the_schema(where, block):
    import yaml

    from tunesmith.config import validate_config
    from tunesmith.config.migrate import old_spellings

    raw = yaml.safe_load(block)
    assert old_spellings(raw) == [], f"{where} uses the old layout"
    validate_config(raw, source=where)
