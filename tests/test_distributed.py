"""Distributed training on CPU: 2 processes over gloo reach the same losses as 1 process with the same
global batch, under DDP and DeepSpeed ZeRO, with gradient accumulation, and for PPO; runs resume on the same
trajectory (DeepSpeed from its sharded states) and DeepSpeed checkpoints hold whole weights; generated DeepSpeed
configs pass DeepSpeed's own validation; FSDP is refused on CPU for the reason accelerate gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from tests.conftest import tiny_run_config
from tunesmith.config.schema import DeepSpeedConfig, DistConfig, TrainConfig
from tunesmith.dist.deepspeed import deepspeed_config
from tunesmith.dist.launch import torchrun_command
from tunesmith.errors import TunesmithError
from tunesmith.train.metrics import read_metrics


def train_process(tmp_path, config: dict, *overrides: str) -> list[dict]:
    """Run `python -m tunesmith train` in a fresh process (as a user would) and return its metrics."""
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    # Its own process group: a run that hangs is killed with its workers (they would hold ports and cores).
    process = subprocess.Popen([sys.executable, "-m", "tunesmith", "train", str(path), *overrides],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        pytest.fail(f"the run hung for 600 s: {stderr[-3000:]}")
    # the ranks' own errors first: the launcher's traceback after them is the same every time
    rank_errors = [line for line in stderr.splitlines() if line.startswith("[rank") and "Error" in line]
    assert process.returncode == 0, "\n".join(rank_errors[-10:]) + "\n" + stderr[-3000:]
    out = config["train"]["output_dir"]
    for item in overrides:
        if item.startswith("train.output_dir="):
            out = item.split("=", 1)[1]
    lines = (tmp_path / out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if "loss" in json.loads(line)]


def assert_same_weights(reference_dir, other_dir, files=("model.safetensors",)):
    from safetensors.torch import load_file

    for name in files:
        reference, weights = load_file(reference_dir / name), load_file(other_dir / name)
        assert weights.keys() == reference.keys()
        assert all(weights[k].allclose(reference[k], rtol=1e-4, atol=1e-5) for k in reference), name


@pytest.fixture(scope="module")
def dataset_folder(tmp_path_factory):
    """A folder with LLaMA-Factory's identity.json registered; runs write their output folders beside it."""
    from tests.conftest import LF_DATA

    folder = tmp_path_factory.mktemp("dist")
    (folder / "identity.json").write_bytes((LF_DATA / "identity.json").read_bytes())
    (folder / "dataset_info.json").write_text(json.dumps({"identity": {"file_name": "identity.json"}}))
    return folder


@pytest.fixture(scope="module")
def single_process_losses(dataset_folder, tiny_model_dir):
    folder = dataset_folder
    config = tiny_run_config(tiny_model_dir, folder, folder / "one", method={"kind": "full"},
                             train={"max_steps": 3, "batch_size": 4})
    return folder, config, [r["loss"] for r in train_process(folder, config)]


@pytest.mark.parametrize("engine", ["ddp", "deepspeed"])
def test_two_processes_match_one_with_the_same_global_batch(single_process_losses, engine):
    """DeepSpeed runs ZeRO-3, so the final weights are also gathered from shards into a plain model."""
    folder, config, expected = single_process_losses
    config = {**config, "train": {**config["train"], "batch_size": 2, "output_dir": str(folder / engine)}}

    losses = [r["loss"] for r in train_process(folder, config, "dist.nproc_per_node=2", f"dist.engine={engine}",
                                               "dist.deepspeed.stage=3")]

    assert losses == pytest.approx(expected, rel=1e-4)
    assert_same_weights(folder / "one", folder / engine)


@pytest.mark.parametrize(("engine", "zero"), [("ddp", 0), ("deepspeed", 2), ("deepspeed", 3)])
def test_two_processes_accumulating_match_one_with_the_same_global_batch(single_process_losses, engine, zero):
    """2 processes x 2 micro-batches of 1 see the reference's batches of 4; DeepSpeed divides each backward by
    its gradient_accumulation_steps and steps at the window's end, as accelerate does for DDP.

    The gradient norms are compared too: AdamW's steps hardly depend on the gradients' scale, so the losses
    alone would not show gradients scaled wrongly by the accumulation steps.
    """
    folder, config, expected = single_process_losses
    reference = read_metrics(folder / "one")
    out = folder / f"accumulating-{engine}-{zero}"
    config = {**config, "train": {**config["train"], "batch_size": 1, "grad_accum": 2, "output_dir": str(out)}}

    records = train_process(folder, config, "dist.nproc_per_node=2", f"dist.engine={engine}",
                            f"dist.deepspeed.stage={zero}")

    assert [r["loss"] for r in records] == pytest.approx(expected, rel=1e-4)
    assert [r["grad_norm"] for r in records] == pytest.approx([r["grad_norm"] for r in reference], rel=1e-4)
    assert [r["tokens"] for r in records] == [r["tokens"] for r in reference]  # counted over both processes
    assert_same_weights(folder / "one", out)


def test_users_deepspeed_json_must_accumulate_like_the_loop(tmp_path):
    (tmp_path / "ds.json").write_text(json.dumps({"gradient_accumulation_steps": 4}))
    settings = DeepSpeedConfig(config_file=str(tmp_path / "ds.json"))

    with pytest.raises(TunesmithError, match="train.grad_accum is 2"):
        deepspeed_config(settings, TrainConfig(grad_accum=2), "no")
    assert deepspeed_config(settings, TrainConfig(grad_accum=4), "no")["gradient_accumulation_steps"] == 4


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
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="stage 3"):
        DeepSpeedConfig(stage=2, offload_params=True)


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


ACCELERATE_FSDP_PROBE = """
import os, sys
from accelerate import Accelerator
from accelerate.utils import FullyShardedDataParallelPlugin
import torch

lines = []
for version in (1, 2):
    accelerator = Accelerator(cpu=True, fsdp_plugin=FullyShardedDataParallelPlugin(fsdp_version=version))
    model = accelerator.prepare(torch.nn.Linear(2, 2))
    lines.append(f"{version} {accelerator.distributed_type} {type(model).__name__}")
# One file per rank: the two processes' prints on a shared stdout can interleave mid-line.
with open(os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.txt"), "w") as out:
    out.write("\\n".join(lines))
"""


def test_accelerate_still_runs_no_fsdp_on_cpu(tmp_path):
    """Why dist.engine=fsdp is refused on CPU: accelerate ignores an FSDP plugin (v1 or v2) in CPU processes and
    wraps the model in DDP. When this fails, accelerate has learned CPU FSDP: lift the refusal."""
    (tmp_path / "probe.py").write_text(ACCELERATE_FSDP_PROBE)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           "--master_port=29613", str(tmp_path / "probe.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        lines = (tmp_path / f"rank{rank}.txt").read_text().splitlines()
        assert lines == [f"{version} DistributedType.MULTI_CPU DistributedDataParallel" for version in (1, 2)]


def test_online_stages_refuse_fsdp(tmp_path):
    """They generate with whole weights outside the engine's forward, which FSDP's sharded modules do not allow
    (ZeRO-3's shards are gathered for the rollout instead)."""
    from types import SimpleNamespace

    from tunesmith.config.stage_kinds import PpoStageConfig
    from tunesmith.train.stages.ppo import PpoStage

    stage = PpoStage(PpoStageConfig(reward_model=str(tmp_path)))
    with pytest.raises(TunesmithError, match="dist.engine=ddp"):
        stage.check(SimpleNamespace(dist=SimpleNamespace(engine="fsdp")), None)
    zero3 = SimpleNamespace(engine="deepspeed", deepspeed=SimpleNamespace(stage=3))
    with pytest.raises(TunesmithError, match="does not load under ZeRO-3 yet"):  # its rm folder's model
        stage.check(SimpleNamespace(dist=zero3, train=SimpleNamespace(grad_accum=1)), None)


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


@pytest.fixture(scope="module")
def greedy_policy_dir(tmp_path_factory, smollm2_dir):
    """The tiny model with larger weights: its greedy replies are words (the default tiny model's are only
    newlines, which leave the reward model an empty reply) and its top tokens are far apart (no near-ties that
    float noise could flip)."""
    from tests.conftest import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("greedy"), smollm2_dir, seed=1, initializer_range=0.2)


@pytest.fixture(scope="module")
def ppo_one_process(dataset_folder, greedy_policy_dir, reward_run):
    # Raw scores (reward_norm none): normalised ones sum to 0 over the batch, so with equally long replies the
    # value head's bias gets a gradient of float noise, which AdamW turns into a step of +-lr.
    ppo = {"reward_model": str(reward_run), "sampling": {"max_new_tokens": 6}, "epochs": 2}
    config = tiny_run_config(greedy_policy_dir, dataset_folder, dataset_folder / "ppo-one", method={"kind": "full"},
                             stage={"kind": "ppo", **ppo}, data={"max_samples": 16},
                             # A small lr: AdamW's first steps move weights by ~lr whatever the size of a
                             # gradient, so float noise in near-zero gradients would grow with it.
                             train={"max_steps": 3, "batch_size": 4, "lr": 1e-4})
    return config, train_process(dataset_folder, config)


@pytest.mark.parametrize(("engine", "zero"), [("ddp", 0), ("deepspeed", 2)])
def test_ppo_two_processes_match_one_with_the_same_global_batch(dataset_folder, ppo_one_process, engine, zero):
    """Each process rolls out its own prompts, each reply sampled from its own stream (seed, step, prompt
    index), so the replies are those of one process; reward normalisation, whitened advantages, the loss and
    the logged stats are taken over both processes' replies, as one process does over the whole batch."""
    config, expected = ppo_one_process
    out = dataset_folder / f"ppo-two-{engine}"
    two = {**config, "train": {**config["train"], "batch_size": 2, "output_dir": str(out)}}

    records = train_process(dataset_folder, two, *engine_overrides(engine, zero))

    assert [r["step"] for r in records] == [r["step"] for r in expected] == [1, 2, 3]
    for record, reference in zip(records, expected):
        for key in ("reward", "kl", "reply_length", "loss", "policy_loss", "value_loss", "entropy", "clip_frac"):
            # abs: KL and the losses are sums of per-token terms that nearly cancel (log-probs of size ~10, KL
            # near 0 at step 1, a policy loss of ~-0.004), so they carry float32 rounding of ~1e-6 per token
            # whatever their own size; the batch split changes the order of those sums.
            assert record[key] == pytest.approx(reference[key], rel=1e-4, abs=2e-5), (record["step"], key)
    assert_same_weights(dataset_folder / "ppo-one", out, ("model.safetensors", "value_head.safetensors"))


CHECKPOINTED = {"batch_size": 2, "max_steps": 4, "save_steps": 2}  # keeps checkpoint-2, the middle of the run
LORA = {"kind": "lora", "rank": 4, "alpha": 8, "dropout": 0.1}  # dropout: RNG states must resume too


@pytest.fixture(scope="module")
def checkpointed_run(single_process_losses):
    """A factory of uninterrupted 2-process runs that keep checkpoint-2, each run once per module:
    (method, engine, zero) -> (run folder, logged losses)."""
    folder, config, _ = single_process_losses
    runs = {}

    def run(method: str, engine: str, zero: int = 0):
        if (method, engine, zero) not in runs:
            out = folder / f"checkpointed-{method}-{engine}-{zero}"
            settings = {**config, "method": LORA if method == "lora" else {"kind": "full"},
                        "train": {**config["train"], **CHECKPOINTED, "output_dir": str(out)}}
            records = train_process(folder, settings, *engine_overrides(engine, zero))
            assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
            runs[method, engine, zero] = out, settings, [r["loss"] for r in records]
        return runs[method, engine, zero]

    return run


def engine_overrides(engine: str, zero: int) -> list[str]:
    return ["dist.nproc_per_node=2", f"dist.engine={engine}", f"dist.deepspeed.stage={zero}",
            f"dist.master_port={free_port()}"]


def free_port() -> int:
    """A port no other job on a shared machine is using for its own process group."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def trained_weights_file(method: str) -> str:
    return "adapter_model.safetensors" if method == "lora" else "model.safetensors"


@pytest.mark.parametrize(("method", "zero"), [("full", 2), ("full", 3), ("lora", 3)])
def test_deepspeed_run_resumes_on_the_same_trajectory(checkpointed_run, tmp_path, method, zero):
    """Each process restores its own shard of DeepSpeed's states and its own RNG state from checkpoint-2, so steps
    3 and 4 are trained anew exactly as in the uninterrupted run."""
    import shutil

    from safetensors.torch import load_file

    out, config, uninterrupted = checkpointed_run(method, "deepspeed", zero)
    copy = tmp_path / "resumed"
    shutil.copytree(out / "checkpoint-2", copy / "checkpoint-2")  # only the checkpoint: nothing else to reuse

    resumed = train_process(tmp_path, {**config, "train": {**config["train"], "output_dir": str(copy)}},
                            *engine_overrides("deepspeed", zero), "train.resume=auto")

    assert [r["step"] for r in resumed] == [3, 4]
    assert [r["loss"] for r in resumed] == uninterrupted[2:]  # exact float equality, step for step
    expected, weights = (load_file(run / trained_weights_file(method)) for run in (out, copy))
    assert weights.keys() == expected.keys()
    assert all(weights[k].equal(expected[k]) for k in expected)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_zero3_checkpoint_weights_load_without_deepspeed(checkpointed_run, tiny_model_dir, method):
    """checkpoint-2 of a ZeRO-3 run holds the whole weights (gathered from every process's shard), loadable by
    plain transformers / peft, and equal to those of the same DDP run's checkpoint-2."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    zero3, _, _ = checkpointed_run(method, "deepspeed", 3)
    ddp, _, _ = checkpointed_run(method, "ddp")

    if method == "lora":
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        model = PeftModel.from_pretrained(base, zero3 / "checkpoint-2")
        reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                              ddp / "checkpoint-2")
    else:
        model = AutoModelForCausalLM.from_pretrained(zero3 / "checkpoint-2")
        reference = AutoModelForCausalLM.from_pretrained(ddp / "checkpoint-2")

    weights, expected = model.state_dict(), reference.state_dict()
    assert weights.keys() == expected.keys()
    for name, tensor in expected.items():
        assert weights[name].allclose(tensor, rtol=1e-4, atol=1e-5), name
    # The files themselves hold trained weights, not ZeRO-3's empty placeholders.
    saved = load_file(zero3 / "checkpoint-2" / trained_weights_file(method))
    assert saved.keys() == load_file(ddp / "checkpoint-2" / trained_weights_file(method)).keys()
    assert all(tensor.numel() > 0 for tensor in saved.values())


def fake_deepspeed_checkpoint(folder, processes: int):
    """The files that say who wrote a checkpoint: DeepSpeed's folder and one RNG state per process."""
    from tunesmith.train.checkpoint import ENGINE_FOLDER, STATE_FILE

    (folder / ENGINE_FOLDER).mkdir(parents=True)
    for rank in range(processes):
        (folder / f"rng_state_{rank}.pt").write_bytes(b"")
    (folder / STATE_FILE).write_text("{}")
    return folder


def test_a_deepspeed_checkpoint_resumes_only_with_as_many_processes(tmp_path):
    from types import SimpleNamespace

    from tunesmith.train.checkpoint import load_engine_checkpoint

    folder = fake_deepspeed_checkpoint(tmp_path / "checkpoint-2", processes=2)

    with pytest.raises(TunesmithError, match="written by 2 processes and this run has 4"):
        load_engine_checkpoint(SimpleNamespace(num_processes=4), folder, None, None)


def test_engines_refuse_each_others_checkpoints(tmp_path):
    from types import SimpleNamespace

    from tunesmith.train.checkpoint import STATE_FILE, load_checkpoint, load_engine_checkpoint

    deepspeed_folder = fake_deepspeed_checkpoint(tmp_path / "deepspeed" / "checkpoint-2", processes=2)
    ddp_folder = tmp_path / "ddp" / "checkpoint-2"
    ddp_folder.mkdir(parents=True)
    (ddp_folder / STATE_FILE).write_text("{}")

    with pytest.raises(TunesmithError, match="resume it with dist.engine=deepspeed"):
        load_checkpoint(deepspeed_folder, None, None, None)
    with pytest.raises(TunesmithError, match="not written by a DeepSpeed run"):
        load_engine_checkpoint(SimpleNamespace(num_processes=2), ddp_folder, None, None)


# (dataset, max_samples): enough records that at least 8 fit data.max_length 128 (most demo replies are longer).
STAGE_DATA = {"pt": ("c4_demo", 12), "rm": ("dpo_en_demo", 48), "dpo": ("dpo_en_demo", 48),
              "kto": ("kto_en_demo", 48)}
UNCOMPARED = {"step", "epoch", "lr", "tokens_per_s"}  # bookkeeping and speed, not what was trained


@pytest.mark.parametrize("stage", ["pt", "rm", "dpo", "kto"])
def test_stage_under_zero3_matches_one_process_with_the_same_global_batch(tmp_path, tiny_model_dir, stage):
    """Full weights partitioned by ZeRO-3 over 2 processes: the frozen reference of dpo and kto is copied before
    partitioning, the value head of rm trains and is saved with the gathered backbone, and statistics a stage
    takes over its whole batch (kto's KL reference point) are taken over both processes' rows."""
    from tests.conftest import LF_DATA

    dataset, samples = STAGE_DATA[stage]
    config = tiny_run_config(tiny_model_dir, LF_DATA, tmp_path / "one", method={"kind": "full"},
                             stage={"kind": stage},
                             data={"datasets": [dataset], "max_samples": samples, "max_length": 128,
                                   "cache_dir": str(tmp_path / "cache")},
                             # A small lr: AdamW's first steps move weights by ~lr whatever the size of a
                             # gradient, so float noise in near-zero gradients (rm: embedding rows of tokens whose
                             # effects on chosen and rejected rewards nearly cancel) would grow with it.
                             train={"max_steps": 3, "batch_size": 4, "lr": 1e-4})
    expected = train_process(tmp_path, config)
    two = {**config, "train": {**config["train"], "batch_size": 2, "output_dir": str(tmp_path / "two")}}

    records = train_process(tmp_path, two, *engine_overrides("deepspeed", 3))

    assert [r["step"] for r in records] == [r["step"] for r in expected] == [1, 2, 3]
    for record, reference in zip(records, expected):
        assert record.keys() == reference.keys()
        for key in reference.keys() - UNCOMPARED:
            # abs: dpo's first rewards and margins are float noise around 0 (the policy equals its reference);
            # kto's kl is a difference of reply log-prob sums in the tens, which one process (4 samples, one
            # padding-free row) and two (2 samples each) add up in different orders: ~1e-5 apart in float32.
            # dpo's rewards are beta (0.1) times such differences, and one process's float32 head runs fused
            # (train/fused_head.py) while ZeRO-3's partitioned head runs per chunk: ~1e-6 apart.
            tolerance = 1e-4 if key == "kl" else 1e-5 if key.startswith("rewards/") else 1e-6
            assert record[key] == pytest.approx(reference[key], rel=1e-4, abs=tolerance), (record["step"], key)
    weights = ("model.safetensors", "value_head.safetensors") if stage == "rm" else ("model.safetensors",)
    assert_same_weights(tmp_path / "one", tmp_path / "two", weights)
