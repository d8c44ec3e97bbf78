"""Log lines of the libraries below tunesmith that mislead its users, held back at their source.

bitsandbytes, imported by peft in every run, logs on CPUs with AVX512-BF16 that it "failed to load CPU
gemm_4bit_forward from kernels-community" and asks for `pip install kernels`. That kernel would be fetched from the
Hugging Face Hub at import, and its bf16 path is the one tunesmith turns off for 4-bit layers on CPU
(model/quantize.py: keep_4bit_matmuls_in_compute_dtype), so the advice would only add a network fetch. Other
records of that logger pass.
"""

from __future__ import annotations

import logging

BITSANDBYTES_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
HUB_KERNEL_NOTICE = "Failed to load CPU gemm_4bit_forward from kernels-community"


class _DropHubKernelNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(HUB_KERNEL_NOTICE)


def hold_back_misleading_logs() -> None:
    """Install the filters (once; the logger may not exist yet: it is configured before bitsandbytes loads)."""
    logger = logging.getLogger(BITSANDBYTES_CPU_LOGGER)
    if not any(isinstance(existing, _DropHubKernelNotice) for existing in logger.filters):
        logger.addFilter(_DropHubKernelNotice())
