"""Whether a parameter is one process's shard of a weight (ZeRO-3, FSDP) rather than the whole weight."""

from __future__ import annotations

import torch


def is_sharded(parameter: torch.Tensor) -> bool:
    """Sharded weights are whole only while their module's own forward or backward runs (the engine gathers
    them there): code that reads one at another time must not rely on its values."""
    return (type(parameter.data) is not torch.Tensor  # FSDP2 keeps DTensors
            or getattr(parameter, "_fsdp_flattened", False)  # FSDP1
            or hasattr(parameter, "ds_id"))  # ZeRO-3
