"""Activation checkpointing, kept on the device or offloaded to host memory, trains exactly as without it."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_run_config

from tunesmith.config.load import validate_config
from tunesmith.errors import TunesmithError


def losses(model_dir, data_dir, out_dir, checkpointing) -> list[float]:
    from tunesmith.train.run import train

    config = tiny_run_config(model_dir, data_dir, out_dir, train={"max_steps": 3, "logging_steps": 1,
                                                                  "gradient_checkpointing": checkpointing})
    run_dir = train(validate_config(config))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [record["loss"] for record in records if "loss" in record]


def test_checkpointing_and_offloading_leave_the_losses_unchanged(tiny_model_dir, identity_dir, tmp_path):
    plain = losses(tiny_model_dir, identity_dir, tmp_path / "plain", False)
    assert len(plain) == 3 and plain[0] != plain[-1]  # the weights moved, so later losses test the gradients
    for mode in (True, "offload"):
        assert losses(tiny_model_dir, identity_dir, tmp_path / str(mode), mode) == pytest.approx(plain, rel=1e-5)


def test_offload_is_a_checkpointing_mode_and_other_words_are_refused(tiny_model_dir, identity_dir, tmp_path):
    config = tiny_run_config(tiny_model_dir, identity_dir, tmp_path, train={"gradient_checkpointing": "offload"})
    assert validate_config(config).train.gradient_checkpointing == "offload"
    config["train"]["gradient_checkpointing"] = "offlaod"
    with pytest.raises(TunesmithError, match="gradient_checkpointing"):
        validate_config(config)
