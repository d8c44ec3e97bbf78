"""Misleading log lines of libraries below tunesmith are held back; everything else they log passes."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from tunesmith.third_party_logs import BITSANDBYTES_CPU_LOGGER, HUB_KERNEL_NOTICE


def test_bitsandbytes_hub_kernel_notice_is_held_back_and_other_records_pass(caplog):
    import tunesmith  # noqa: F401  installs the filter

    logger = logging.getLogger(BITSANDBYTES_CPU_LOGGER)
    with caplog.at_level(logging.WARNING, logger=BITSANDBYTES_CPU_LOGGER):
        logger.warning(HUB_KERNEL_NOTICE + ": %s. Please make sure you already `pip install kernels`", "no module")
        logger.warning("some other bitsandbytes warning")
    assert [record.getMessage() for record in caplog.records] == ["some other bitsandbytes warning"]


def _import_stderr(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_importing_peft_after_tunesmith_prints_no_hub_kernel_notice():
    if HUB_KERNEL_NOTICE not in _import_stderr("import peft"):
        pytest.skip("bitsandbytes logs the notice only on CPUs with AVX512-BF16; this one has none to hold back")
    assert HUB_KERNEL_NOTICE not in _import_stderr("import tunesmith, peft")
