"""The run folder: what train writes into it (config, metrics, plot, our model card, weights) and how it is read."""

from __future__ import annotations

import json
import re

import pytest

from conftest import tiny_run_config
from tunesmith.errors import TunesmithError
from tunesmith.run_folder import final_metrics, has_weights, is_adapter, read_metrics, read_run_config


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir):
    from conftest import LF_DATA
    from tunesmith.config import validate_config
    from tunesmith.train.run import train

    root = tmp_path_factory.mktemp("run-folder")
    (root / "identity.json").write_bytes((LF_DATA / "identity.json").read_bytes())
    (root / "dataset_info.json").write_text(json.dumps({"identity": {"file_name": "identity.json"}}))
    return train(validate_config(tiny_run_config(tiny_model_dir, root, root / "run", train={"max_steps": 2})))


def test_readers_see_what_train_wrote(lora_run, tiny_model_dir):
    assert is_adapter(lora_run) and has_weights(lora_run)
    assert read_run_config(lora_run).model.path == str(tiny_model_dir)
    losses = [record["loss"] for record in read_metrics(lora_run) if "loss" in record]
    assert len(losses) == 2 and final_metrics(lora_run)["loss"] == losses[-1]


def test_a_folder_without_config_is_refused_naming_the_option(tmp_path):
    with pytest.raises(TunesmithError, match=r"not a tunesmith run folder \(no config.yaml\); check --run"):
        read_run_config(tmp_path)
    assert not has_weights(tmp_path) and read_metrics(tmp_path) == []


def test_run_card_is_ours_not_the_empty_peft_template(lora_run, tiny_model_dir):
    card = (lora_run / "README.md").read_text()
    front = card.split("---")[1]
    assert re.search(rf"^base_model: {re.escape(str(tiny_model_dir))}$", front, re.M)  # as the config names it
    assert "More Information Needed" not in card  # peft's template filler
    final = [record["loss"] for record in read_metrics(lora_run) if "loss" in record][-1]
    for expected in ("sft stage", "lora method", "identity", "rank 4", f"final loss: {final:.4f}",
                     "- steps: 2", "![loss curve](loss.png)", f"tunesmith chat --run {lora_run}",
                     f"tunesmith export --run {lora_run}"):
        assert expected in card
    assert (lora_run / "loss.png").is_file()
