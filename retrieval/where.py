"""Chroma's `where` metadata filter, evaluated in Python for sources that do not live in Chroma.

The co-occurrence source ranks items with numpy, yet must honour the same filters as the Chroma-backed
sources (`{"genre_Comedy": True}`, `{"year": {"$gte": 1980}}`), or fused candidate lists would mix
filtered and unfiltered items. The semantics follow what Chroma 1.x does (checked against a real
collection in tests/test_cooccurrence.py), including its less obvious choices:

- `$ne` and `$nin` match records that lack the key (that is how `{genre_key("Horror"): {"$ne": True}}`
  excludes a genre whose flag is only stored when True);
- every other operator needs the key to be present;
- booleans and numbers never compare equal (`True` does not match `1`), ints and floats do (`1 == 1.0`);
- `$gt/$gte/$lt/$lte` compare numbers only (a string field never matches).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reasonrec.errors import ConfigError

from .types import MetaValue

COMPARISONS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin")
LOGICAL = ("$and", "$or")
_SCALAR = (str, int, float, bool)


def validate_where(where: Mapping[str, Any]) -> None:
    """Check a filter against Chroma's grammar, so a mistake fails the same way in every source.

    Args:
        where: e.g. {"$and": [{"genre_Comedy": True}, {"year": {"$lt": 1990}}]}.

    Raises:
        ConfigError: not a one-key dict, an unknown `$` operator (named in the message), a bad operand;
            the message starts "invalid `where` filter", as the Chroma store's own check does.
    """
    try:
        _validate(where)
    except ConfigError as e:
        raise ConfigError(f"invalid `where` filter: {e}") from None


def _validate(where: Any) -> None:
    if not isinstance(where, Mapping) or len(where) != 1:
        raise ConfigError(f"`where` must be a non-empty dict with exactly one key, got {where!r}")
    ((key, value),) = where.items()
    if not isinstance(key, str):
        raise ConfigError(f"`where` keys must be strings, got {key!r}")
    if key in LOGICAL:
        if not isinstance(value, list) or len(value) < 2:
            raise ConfigError(f"`{key}` expects a list of at least two filters, got {value!r}")
        for sub in value:
            _validate(sub)
        return
    if key.startswith("$"):
        raise ConfigError(
            f"unknown `where` operator {key!r} at the top level; use one of {', '.join(LOGICAL)} or a "
            "metadata field name"
        )
    if isinstance(value, Mapping):
        if len(value) != 1:
            raise ConfigError(f"the condition on {key!r} must have exactly one operator, got {dict(value)!r}")
        ((op, operand),) = value.items()
        _check_operand(key, op, operand)
    elif not isinstance(value, _SCALAR):
        raise ConfigError(f"`where` value of {key!r} must be a str, int, float or bool, got {value!r}")


def matches(where: Mapping[str, Any] | None, metadata: Mapping[str, MetaValue]) -> bool:
    """Whether a record with this metadata passes the filter (None passes everything).

    Args:
        where: a Chroma filter; it is validated first.
        metadata: the record's metadata, e.g. `item_metadata(item)`.

    Raises:
        ConfigError: the filter is malformed (see `validate_where`).
    """
    if where is None:
        return True
    validate_where(where)
    return _eval(where, metadata)


def compile_where(where: Mapping[str, Any] | None) -> Any:
    """Validate once, then return a predicate `metadata -> bool` (for filtering many records).

    Raises:
        ConfigError: the filter is malformed.
    """
    if where is None:
        return lambda _meta: True
    validate_where(where)
    return lambda meta: _eval(where, meta)


def _check_operand(key: str, op: Any, operand: Any) -> None:
    if op not in COMPARISONS:
        raise ConfigError(f"unknown `where` operator {op!r} on field {key!r}; supported: {', '.join(COMPARISONS)}")
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if isinstance(operand, bool) or not isinstance(operand, (int, float)):
            raise ConfigError(f"`{op}` on {key!r} needs a number, got {operand!r}")
    elif op in ("$in", "$nin"):
        if not isinstance(operand, list) or not operand:
            raise ConfigError(f"`{op}` on {key!r} needs a non-empty list, got {operand!r}")
        kinds = {_kind(v) for v in operand}
        if None in kinds or len(kinds) != 1:
            raise ConfigError(f"`{op}` on {key!r} needs values of one scalar type, got {operand!r}")
    elif not isinstance(operand, _SCALAR):
        raise ConfigError(f"`{op}` on {key!r} needs a str, int, float or bool, got {operand!r}")


def _kind(v: Any) -> str | None:
    """Chroma's type classes: bool, number (int and float alike) and str."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "str"
    return None


def _equal(a: Any, b: Any) -> bool:
    return _kind(a) == _kind(b) and a == b


def _eval(where: Mapping[str, Any], meta: Mapping[str, MetaValue]) -> bool:
    ((key, value),) = where.items()
    if key == "$and":
        return all(_eval(sub, meta) for sub in value)
    if key == "$or":
        return any(_eval(sub, meta) for sub in value)
    op, operand = next(iter(value.items())) if isinstance(value, Mapping) else ("$eq", value)
    present = key in meta and meta[key] is not None
    if op == "$ne":
        return not (present and _equal(meta[key], operand))
    if op == "$nin":
        return not (present and any(_equal(meta[key], v) for v in operand))
    if not present:
        return False
    got = meta[key]
    if op == "$eq":
        return _equal(got, operand)
    if op == "$in":
        return any(_equal(got, v) for v in operand)
    if _kind(got) != "number":  # comparisons are numeric only
        return False
    if op == "$gt":
        return got > operand
    if op == "$gte":
        return got >= operand
    if op == "$lt":
        return got < operand
    return got <= operand  # $lte
