"""Regenerate tests/golden/*.json: the losses of the golden runs in tests/test_golden_losses.py.

Run after an intended change to data, templates, model loading, methods or the loop:
    HF_HUB_OFFLINE=1 python scripts/regen_golden.py [STAGE_METHOD ...]   (e.g. sft_lora; default: all)
and review the diff of tests/golden/ before committing it.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import SMOLLM2, build_tiny_model  # noqa: E402
from test_golden_losses import GOLDEN_DIR, METHODS, STAGES, golden_path, run_losses  # noqa: E402


def main(selected: list[str]) -> int:
    from tunesmith.config.schema import ModelConfig
    from tunesmith.model.load import resolve_source

    cases = [(stage, method) for stage in STAGES for method in METHODS
             if not selected or f"{stage}_{method}" in selected]
    GOLDEN_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        tokenizer_dir = Path(resolve_source(ModelConfig(**SMOLLM2)).location)
        model_dir = build_tiny_model(scratch / "tiny-llama", tokenizer_dir)
        for stage, method in cases:
            losses = run_losses(stage, method, model_dir, scratch / f"{stage}-{method}")
            golden_path(stage, method).write_text(json.dumps({"losses": losses}, indent=1) + "\n")
            print(f"{stage}_{method}: {losses}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
