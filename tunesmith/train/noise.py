"""NEFTune: uniform noise on the input embeddings while training (Jain et al., 2023, arXiv:2310.05914)."""

from __future__ import annotations

import math

import torch


def add_neftune_noise(model, alpha: float):
    """Register a forward hook on the input embeddings; returns the handle (call .remove() to undo).

    The noise is uniform in [-m, m] with m = alpha / sqrt(length * hidden), length being the batch's padded
    width, as in the paper and in transformers' trainer. It is added in training mode only.
    """

    def hook(module, args, output: torch.Tensor) -> torch.Tensor:
        if not module.training:
            return output
        magnitude = alpha / math.sqrt(output.size(-2) * output.size(-1))
        return output + torch.empty_like(output).uniform_(-magnitude, magnitude)

    return model.get_input_embeddings().register_forward_hook(hook)
