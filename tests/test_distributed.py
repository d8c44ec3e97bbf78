"""Distributed training on CPU: 2 processes over gloo reach the same losses as 1 process with the same
global batch, under DDP and DeepSpeed ZeRO; generated DeepSpeed configs pass DeepSpeed's own validation."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.conftest import tiny_run_config
from tunesmith.config.schema import DeepSpeedConfig, DistConfig, TrainConfig
from tunesmith.dist.deepspeed import deepspeed_config
from tunesmith.dist.launch import torchrun_command
from tunesmith.errors import TunesmithError


def train_process(tmp_path, config: dict, *overrides: str) -> list[dict]:
    """Run `python -m tunesmith train` in a fresh process (as a user would) and return its metrics."""
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run([sys.executable, "-m", "tunesmith", "train", str(path), *overrides],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = config["train"]["output_dir"]
    for item in overrides:
        if item.startswith("train.output_dir="):
            out = item.split("=", 1)[1]
    lines = (tmp_path / out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if "loss" in json.loads(line)]


@pytest.fixture(scope="module")
def single_process_losses(tmp_path_factory, tiny_model_dir):
    from tests.conftest import LF_DATA

    folder = tmp_path_factory.mktemp("dist")
    (folder / "identity.json").write_bytes((LF_DATA / "identity.json").read_bytes())
    (folder / "dataset_info.json").write_text(json.dumps({"identity": {"file_name": "identity.json"}}))
    config = tiny_run_config(tiny_model_dir, folder, folder / "one", method={"kind": "full"},
                             train={"max_steps": 3, "batch_size": 4})
    return folder, config, [r["loss"] for r in train_process(folder, config)]


@pytest.mark.parametrize("engine", ["ddp", "deepspeed"])
def test_two_processes_match_one_with_the_same_global_batch(single_process_losses, engine):
    """DeepSpeed runs ZeRO-3, so the final weights are also gathered from shards into a plain model."""
    from safetensors.torch import load_file

    folder, config, expected = single_process_losses
    config = {**config, "train": {**config["train"], "batch_size": 2, "output_dir": str(folder / engine)}}

    losses = [r["loss"] for r in train_process(folder, config, "dist.nproc_per_node=2", f"dist.engine={engine}",
                                               "dist.deepspeed.stage=3")]

    assert losses == pytest.approx(expected, rel=1e-4)
    reference, weights = load_file(folder / "one" / "model.safetensors"), load_file(folder / engine / "model.safetensors")
    assert weights.keys() == reference.keys()
    assert all(weights[k].allclose(reference[k], rtol=1e-4, atol=1e-5) for k in reference)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
@pytest.mark.parametrize("offload", [False, True])
def test_generated_deepspeed_configs_pass_deepspeed_validation(stage, offload):
    deepspeed_runtime = pytest.importorskip("deepspeed.runtime.config")
    settings = DeepSpeedConfig(stage=stage, offload_optimizer=offload, offload_params=offload and stage == 3)
    train = TrainConfig(batch_size=3, max_grad_norm=0.5)

    checked = deepspeed_runtime.DeepSpeedConfig(deepspeed_config(settings, train, "bf16"))

    assert checked.zero_optimization_stage == stage
    assert checked.train_micro_batch_size_per_gpu == 3
    assert checked.gradient_clipping == 0.5
    assert checked.bfloat16_config.enabled


def test_parameter_offload_needs_zero3():
    with pytest.raises(TunesmithError, match="stage 3"):
        deepspeed_config(DeepSpeedConfig(stage=2, offload_params=True), TrainConfig(), "no")


def test_users_deepspeed_json_is_used_as_is(tmp_path):
    own = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 1}}
    (tmp_path / "ds.json").write_text(json.dumps(own))
    assert deepspeed_config(DeepSpeedConfig(config_file=str(tmp_path / "ds.json")), TrainConfig(), "no") == own


def test_torchrun_command_is_an_argument_list_for_every_node_setting():
    dist = DistConfig(nproc_per_node=4, nnodes=2, node_rank=1, master_addr="10.1.2.3", master_port=29600)

    command = torchrun_command(dist, ["run.yaml", "train.lr=1e-4"])

    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert {"--nproc_per_node=4", "--nnodes=2", "--node_rank=1", "--master_addr=10.1.2.3",
            "--master_port=29600"} <= set(command)
    assert command[-5:] == ["-m", "tunesmith", "train", "run.yaml", "train.lr=1e-4"]


def test_fsdp_without_gpus_says_what_to_use_instead(tmp_path):
    from tunesmith.config import validate_config
    from tunesmith.dist.accelerator import make_accelerator

    config = validate_config(tiny_run_config("m", tmp_path, tmp_path / "o", dist={"engine": "fsdp"}))
    with pytest.raises(TunesmithError, match="ddp or deepspeed"):
        make_accelerator(config)


def test_two_process_run_resumes_on_the_same_trajectory(single_process_losses):
    folder, config, _ = single_process_losses
    config = {**config, "train": {**config["train"], "batch_size": 2, "max_steps": 4, "save_steps": 2,
                                  "output_dir": str(folder / "resumed")}}
    uninterrupted = [r["loss"] for r in train_process(folder, config, "dist.nproc_per_node=2")]
    assert [p.name for p in (folder / "resumed").glob("checkpoint-*")] == ["checkpoint-2"]

    # Run again from checkpoint-2: steps 3 and 4 are trained anew and must come out the same.
    resumed = [r["loss"] for r in train_process(folder, config, "dist.nproc_per_node=2", "train.resume=auto")]

    assert len(resumed) == 4
    assert resumed == pytest.approx(uninterrupted, rel=1e-6)
