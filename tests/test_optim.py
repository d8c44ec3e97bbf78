"""Optimizer choices: fused AdamW where the device has the kernel; paged 8-bit AdamW only on a GPU."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tunesmith.config.schema import TrainConfig
from tunesmith.errors import TunesmithError
from tunesmith.train.optim import build_optimizer


def test_adamw_is_fused_on_float32_cpu_parameters():
    optimizer = build_optimizer(torch.nn.Linear(4, 4), TrainConfig())
    assert optimizer.defaults["fused"] is True


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")
def test_paged_8bit_adamw_off_gpu_is_refused_with_what_to_use():
    with pytest.raises(TunesmithError, match="needs the model on a CUDA GPU; use adamw_8bit or adamw"):
        build_optimizer(torch.nn.Linear(4, 4), TrainConfig(optimizer="paged_adamw_8bit"))
