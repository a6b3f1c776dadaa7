"""Prompt templates (package data) and their renderer; imports nothing of ours but reasonrec.errors."""

from reasonrec.prompts.loader import (
    ANSWER_PREFIX,
    RANK_TEMPLATE,
    REASON_TEMPLATE,
    TEMPLATE_VERSION,
    PromptConfig,
    clean_text,
    default_labels,
    render_rank_messages,
    render_reason_messages,
    template_version,
)

__all__ = [
    "ANSWER_PREFIX",
    "RANK_TEMPLATE",
    "REASON_TEMPLATE",
    "TEMPLATE_VERSION",
    "PromptConfig",
    "clean_text",
    "default_labels",
    "render_rank_messages",
    "render_reason_messages",
    "template_version",
]
