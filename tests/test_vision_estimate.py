"""`tunesmith estimate` for vision-language models: the meta-built model counts the vision tower and projector
too, so its parameter counts equal the real tiny model's, loaded and prepared by the same method."""

from __future__ import annotations

import pytest

from tunesmith.config import validate_config
from tunesmith.config.method_kinds import parse_method
from tunesmith.config.schema import ModelConfig
from tunesmith.model.estimate import estimate_memory
from vision_models import llava_dir, vl_dir  # noqa: F401 (fixtures)

METHODS = [{"kind": "lora", "rank": 4}, {"kind": "lora", "rank": 4, "vision": {"train_tower": True}},
           {"kind": "full", "vision": {"train_projector": True}}]


@pytest.mark.parametrize("family", ["vl_dir", "llava_dir"])
def test_estimated_parameter_counts_equal_the_real_models(family, request):
    from tunesmith.model.load import load_model
    from tunesmith.model.methods import apply_method, count_parameters

    folder = request.getfixturevalue(family)
    for method in METHODS:
        config = validate_config({"model": {"path": str(folder), "dtype": "float32"}, "method": method,
                                  "data": {"datasets": ["unused"], "max_length": 64},
                                  "train": {"batch_size": 2, "precision": "fp32"}})
        estimate = estimate_memory(config)
        real = apply_method(load_model(ModelConfig(path=str(folder), dtype="float32")), parse_method(method))
        assert estimate.params == count_parameters(real)
        assert estimate.weights == sum(param.numel() * 4 for param in real.parameters())
        assert estimate.peak > estimate.weights
