"""Sums and gathers over the processes of a run, so that statistics a single process takes over its whole batch
come out the same when the batch is split over processes. On one process each is the identity, with no
device round trip."""

from __future__ import annotations

import torch


def global_sums(accelerator, *local: int) -> tuple[int, ...]:
    """Each count summed over all processes, in one all-reduce."""
    if accelerator.num_processes == 1:
        return local
    totals = accelerator.reduce(torch.tensor(local, device=accelerator.device), reduction="sum")
    return tuple(int(total) for total in totals.tolist())


def global_tensor_sum(accelerator, value: torch.Tensor) -> torch.Tensor:
    if accelerator.num_processes == 1:
        return value
    return accelerator.reduce(value, reduction="sum")


def gradient_scale(accelerator, global_units: int) -> float:
    """The factor that turns a process's summed loss into its share of the mean over `global_units`.

    DDP and DeepSpeed average gradients over processes (hence * num_processes), and accelerate (or DeepSpeed
    itself) divides each backward by the accumulation steps (hence * gradient_accumulation_steps): what is left
    is sum of all processes' losses / global_units, exact for any split of the units.
    """
    return accelerator.num_processes * accelerator.gradient_accumulation_steps / max(global_units, 1)


def gather_rows(accelerator, tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], slice]:
    """(every process's rows of `tensors`, in rank order; the slice of those rows that is this process's).

    Each tensor is [rows, ...]; the number of rows and the later sizes may differ by process: later
    dimensions are right-padded with zeros to the largest size, so masks stay 0 past each row's end.
    """
    rows = next(iter(tensors.values())).shape[0]
    if accelerator is None or accelerator.num_processes == 1:
        return tensors, slice(0, rows)
    counts = accelerator.gather(torch.tensor([rows], device=accelerator.device)).tolist()
    start, most = sum(counts[: accelerator.process_index]), max(counts)
    gathered = {}
    for key, value in tensors.items():
        for dim in range(value.dim()):
            value = accelerator.pad_across_processes(value, dim=dim)
        everyone = accelerator.gather(value)  # [num_processes * most, ...]: each process's rows, padded to most
        gathered[key] = torch.cat([everyone[rank * most : rank * most + n] for rank, n in enumerate(counts)])
    return gathered, slice(start, start + rows)
