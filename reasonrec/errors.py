"""One small error hierarchy for the whole package.

Every error a user can cause (bad option, missing file, unknown user, malformed data) or that a model
can cause (unparseable output) is a `ReasonRecError`. The CLI prints such errors as one readable line
and exits non-zero; the HTTP server maps them to status codes through `http_status`. Anything else
escaping is a bug in reasonrec, not the user's fault.

Messages name the argument, the value received and the fix, e.g. "`k` must be >= 1, got 0".
"""

from __future__ import annotations


class ReasonRecError(Exception):
    """Base class of every error reasonrec raises on purpose."""

    http_status: int = 400


class ConfigError(ReasonRecError):
    """A configuration value or option is invalid."""


class DataError(ReasonRecError):
    """Input data (catalogue, interactions, a file path) is missing or malformed."""


class UnknownUserError(DataError):
    """A user id that the interactions do not contain."""

    http_status = 404


class UnknownItemError(DataError):
    """An item id that the catalogue does not contain."""

    http_status = 404


class UnknownSessionError(DataError):
    """A chat session id that the session store does not hold."""

    http_status = 404


class SessionConflictError(DataError):
    """A chat session took another turn while this one ran (a second server process answered a message to
    it); this turn was not stored. Send the message again."""

    http_status = 409


class NotEnoughItemsError(DataError):
    """Fewer unseen items match (filter, exclusions, history) than the `k` asked for: valid, not satisfiable."""

    http_status = 409


class RetrievalError(ReasonRecError):
    """The vector store or candidate generation failed."""

    http_status = 503


class ModelError(ReasonRecError):
    """A model or adapter could not be loaded or run."""

    http_status = 503


class ParseError(ReasonRecError):
    """Model output could not be turned into a ranked list (the ranker then falls back)."""

    http_status = 502


class TrainError(ReasonRecError):
    """Fine-tuning failed (bad data, bad config, unusable checkpoint)."""
