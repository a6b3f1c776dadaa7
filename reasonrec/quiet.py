"""Library notices that are not actionable for a reasonrec user, filtered at their source logger.

bitsandbytes (imported by peft whenever it is installed, so by every adapter load, `reasonrec train`
and `reasonrec evaluate`) looks for an optional CPU kernel package at import and logs a warning on
every CPU with AVX512-BF16 when it is missing. We never run 4-bit on CPU (`model.load_in_4bit` is
CUDA-only), so the line is noise. Only that one message is dropped; other bitsandbytes logs pass.
"""

from __future__ import annotations

import logging

_BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"  # the module that logs it (`logging.getLogger(__name__)`)
_CPU_KERNEL_NOTICE = "Failed to load CPU gemm_4bit_forward"


def _not_cpu_kernel_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(_CPU_KERNEL_NOTICE)


def drop_bitsandbytes_cpu_notice() -> None:
    """Install the filter (idempotent). A filter on the exact logger: parents' filters never see it."""
    logger = logging.getLogger(_BNB_CPU_LOGGER)
    if _not_cpu_kernel_notice not in logger.filters:
        logger.addFilter(_not_cpu_kernel_notice)
