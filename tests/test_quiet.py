"""Quiet runs: the bitsandbytes CPU-kernel notice is dropped, other messages are not; no FutureWarning
from our own use of the KV cache argument."""

import logging

import pytest

import reasonrec  # noqa: F401  (installs the filter)


@pytest.mark.parametrize(
    "message, shown",
    [
        ("Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'.", False),
        ("something else went wrong", True),
    ],
)
def test_bitsandbytes_cpu_notice_is_dropped(caplog, message, shown):
    # The logger's own level too: an in-process CLI run earlier in the session sets "bitsandbytes" to
    # ERROR, which would hide the message whatever the filter does.
    with caplog.at_level(logging.WARNING, logger="bitsandbytes.backends.cpu.ops"):
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning(message)
    assert (message in caplog.text) is shown


def test_cache_argument_name_is_the_current_one():
    from transformers.modeling_outputs import CausalLMOutputWithPast

    from reasonrec.agent.ranking.prefix import cache_field

    assert cache_field() in CausalLMOutputWithPast.__dataclass_fields__
