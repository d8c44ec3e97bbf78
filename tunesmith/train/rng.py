"""Every random number generator a run draws from, as plain tensors and tuples, one state per process.

The state is built only from types `torch.load(weights_only=True)` accepts (numpy's key array becomes a
tensor), so restoring it never unpickles arbitrary objects. On a GPU only the current device's generator is
saved: each process drives one GPU, and touching every visible one would tie a checkpoint to their number.
Under DDP each process draws its own dropout masks, so each rank's state is saved and restored as its own.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def get_rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()  # the current device's: this process's GPU
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, list):  # written by get_rng_state_all (every device) before states were per process
            cuda = cuda[torch.cuda.current_device()] if torch.cuda.current_device() < len(cuda) else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)


def gather_rng_states() -> list[dict]:
    """Every process's state in rank order on rank 0 (others get []); a collective, so every process calls it."""
    state = get_rng_state()
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [state]
    rank, size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    states = [None] * size if rank == 0 else None
    torch.distributed.gather_object(state, states, dst=0)
    return states or []


def process_rng_state(saved: dict, rank: int) -> dict | None:
    """This process's state from a saved checkpoint's; None when the run that saved it had fewer processes
    (that process then keeps its freshly seeded state)."""
    if "processes" not in saved:
        return saved  # one state for every process, as written before states were per process
    states = saved["processes"]
    return states[rank] if rank < len(states) else None
