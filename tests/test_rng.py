"""RNG states are per process: under DDP each rank resumes its own stream, not rank 0's."""

from __future__ import annotations

import json
import random

import numpy as np
import torch
import torch.multiprocessing as mp

from tunesmith.train.rng import gather_rng_states, get_rng_state, process_rng_state, set_rng_state

WORLD = 2


def draws() -> list[float]:
    """One number from each generator a run draws from."""
    return [random.random(), float(np.random.rand()), float(torch.rand(()))]


def rank_resumes_its_own_stream(rank: int, folder: str) -> None:
    """One process of the test: diverge, save every rank's state on rank 0, draw, scramble, restore, draw again."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank,
                                         world_size=WORLD)
    random.seed(rank)
    np.random.seed(rank)
    torch.manual_seed(rank)
    torch.rand(3 + rank)  # ranks draw different amounts, as dropout on different batch shapes does
    states = gather_rng_states()
    if rank == 0:
        torch.save({"processes": states}, f"{folder}/rng_state.pt")  # the checkpoint's layout
    torch.distributed.barrier()
    expected = draws()
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    saved = torch.load(f"{folder}/rng_state.pt", map_location="cpu", weights_only=True)
    set_rng_state(process_rng_state(saved, rank))
    resumed = draws()
    with open(f"{folder}/rank{rank}.json", "w") as file:
        json.dump({"expected": expected, "resumed": resumed, "gathered": len(states)}, file)
    torch.distributed.destroy_process_group()


def test_each_rank_resumes_its_own_stream_over_gloo(tmp_path):
    mp.spawn(rank_resumes_its_own_stream, args=(str(tmp_path),), nprocs=WORLD, join=True)

    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(WORLD)]
    assert [r["gathered"] for r in results] == [WORLD, 0]  # rank 0 holds all states, the others none
    for result in results:
        assert result["resumed"] == result["expected"]
    assert results[0]["expected"] != results[1]["expected"]


def test_a_state_saved_for_every_process_before_per_rank_states_still_loads():
    before = get_rng_state()
    expected = draws()
    set_rng_state(process_rng_state(before, rank=1))  # the old layout: one state, not {"processes": [...]}
    assert draws() == expected


def test_a_rank_the_checkpoint_has_no_state_for_keeps_its_own():
    assert process_rng_state({"processes": [get_rng_state()]}, rank=1) is None
