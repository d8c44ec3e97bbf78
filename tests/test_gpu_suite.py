"""bench/gpu_suite.py --smoke: the GPU suite's own code, run on CPU with a tiny model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tunesmith.model.cpu_attention import NAME as CPU_ATTENTION

REPO = Path(__file__).resolve().parents[1]


def test_smoke_run_prints_the_checks_and_one_table(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_suite.py"), "--smoke", "--steps", "3",
                           "--warmup", "1", "--work", str(tmp_path / "work")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    # On a CPU the trained model's sdpa is model/cpu_attention.py's (grouped K/V kept as they are)
    for line in ("all params: float32", "trainable: float32", f"attention: {CPU_ATTENTION}", "fused=True"):
        assert line in out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| tunesmith") or line.startswith("| trl")]
    assert len(rows) == 8
    for row in rows:
        case, speed, moved, note = row[0], float(row[1].replace(",", "")), row[5], row[6]
        if "liger" in case:
            assert "refused" in note and "CUDA GPU" in note  # Triton kernels: GPU only
        elif case.startswith("| tunesmith"):
            assert speed > 0 and moved == "ok", row
        else:
            assert speed > 0 or "skipped" in note, row
