"""Sampling draws: the inverse-CDF draw over a batch follows each row's distribution exactly."""

from __future__ import annotations

import torch

from tunesmith.infer.sampling import inverse_cdf


def test_evenly_spaced_uniforms_land_on_each_token_in_proportion_to_its_probability():
    probs = torch.tensor([[0.5, 0.0, 0.25, 0.25, 0.0], [0.0, 0.1, 0.0, 0.0, 0.9]])
    draws = 1000
    uniforms = (torch.arange(draws, dtype=torch.float64) + 0.5) / draws
    rows = torch.stack([inverse_cdf(probs, torch.full((2,), u.item(), dtype=torch.float64)) for u in uniforms])
    for row in range(2):
        counts = torch.bincount(rows[:, row], minlength=5).double() / draws
        assert torch.allclose(counts, probs[row].double(), atol=1 / draws)


def test_a_zero_probability_token_is_never_drawn_even_at_the_edges():
    probs = torch.tensor([[0.0, 1.0, 0.0]])
    edges = [0.0, 1e-12, 1 - 2**-53]
    assert [int(inverse_cdf(probs, torch.tensor([u], dtype=torch.float64))) for u in edges] == [1, 1, 1]
