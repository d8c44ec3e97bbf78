"""Relaunch `tunesmith train` under torchrun when the config asks for more than one process.

torchrun is PyTorch's own launcher: it sets RANK / WORLD_SIZE / MASTER_ADDR for every process and
accelerate reads them. A process that already runs under a launcher (torchrun, accelerate launch, or a
scheduler such as Slurm that sets WORLD_SIZE) is never relaunched.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tunesmith.config.schema import DistConfig
from tunesmith.errors import TunesmithError


def launched_by_a_launcher() -> bool:
    # The launchers' own contract: these variables are how they tell a process its place in the job.
    return "WORLD_SIZE" in os.environ or "LOCAL_RANK" in os.environ  # env-ok: torchrun's launch contract


def processes_per_node(dist: DistConfig) -> int:
    if dist.nproc_per_node != "auto":
        return dist.nproc_per_node
    import torch

    return max(1, torch.cuda.device_count())


def needs_launch(dist: DistConfig) -> bool:
    """True when this process must hand over to torchrun: several processes, several nodes, or an engine
    (DeepSpeed, FSDP) that needs a process group even for one process."""
    wanted = processes_per_node(dist) > 1 or dist.nnodes > 1 or dist.engine != "ddp"
    return wanted and not launched_by_a_launcher()


def torchrun_command(dist: DistConfig, train_args: list[str]) -> list[str]:
    """The argument list that runs `tunesmith train ARGS` in every process of this node."""
    return [
        sys.executable, "-m", "torch.distributed.run",
        f"--nproc_per_node={processes_per_node(dist)}",
        f"--nnodes={dist.nnodes}",
        f"--node_rank={dist.node_rank}",
        f"--master_addr={dist.master_addr}",
        f"--master_port={dist.master_port}",
        "-m", "tunesmith", "train", *train_args,
    ]


def launch(dist: DistConfig, train_args: list[str]) -> int:
    command = torchrun_command(dist, train_args)
    print(f"launching {processes_per_node(dist)} process(es) on node {dist.node_rank} of {dist.nnodes}: "
          + " ".join(command[1:]), flush=True)
    try:
        return subprocess.run(command, check=False).returncode
    except FileNotFoundError as err:
        raise TunesmithError(f"could not start torchrun ({err}); is torch installed in this Python?") from None
