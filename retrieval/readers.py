"""Rows and fields of the user's files: bytes decoded line by line, CSV/TSV/JSONL split into rows, fields typed.

The loaders (`loaders.py`) turn these rows into items and interactions. A problem confined to one row
comes back as that row's `problem` (the loader reports it as "file:line: reason" and keeps the good rows);
a problem with the whole file (missing, empty, unsupported type, a header without a required column)
raises `DataError` naming the file and the fix.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from reasonrec.errors import DataError

Row = tuple[int, dict[str, Any] | None, str | None]  # (line, fields, problem)


def records(p: Path, skipped: list[str], required: tuple[tuple[str, ...], ...], what: str) -> Iterator[Row]:
    """Rows of a user file as dicts, whatever the format. File-level problems raise DataError."""
    ext = p.suffix.lower()
    if ext not in {".csv", ".tsv", ".jsonl", ".ndjson"}:
        raise DataError(f"{p}: unsupported file type {ext or '(none)'!r}; use .csv, .tsv or .jsonl ({what})")
    lines = decode(p, skipped)
    if ext in {".jsonl", ".ndjson"}:
        for n, raw in lines:
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError as e:
                yield n, None, f"invalid JSON ({e.msg} at column {e.colno})"
                continue
            yield (n, rec, None) if isinstance(rec, dict) else (n, None, "expected a JSON object")
        return
    rows = rows_from_lines(lines, "\t" if ext == ".tsv" else ",", skip_header=False)
    first = next(rows, None)
    header = [h.strip().lower() for h in first[1]] if first else []
    missing = [alts[0] for alts in required if not set(alts) & set(header)]
    if missing:
        raise DataError(f"{p}: header lacks column(s) {', '.join(missing)}; found {header} (expected {what})")
    yield from named(rows, header)


def named(rows: Iterator[tuple[int, list[str]]], names: list[str]) -> Iterator[Row]:
    for n, fields in rows:
        if len(fields) != len(names):
            yield n, None, f"expected {len(names)} fields ({', '.join(names)}), got {len(fields)}"
        else:
            yield n, dict(zip(names, fields, strict=True)), None


def decode(p: Path, skipped: list[str], encoding: str = "utf-8") -> list[tuple[int, str]]:
    """(line number, text) of each line; lines that do not decode are reported and left out."""
    if not p.is_file():
        raise DataError(f"{p} does not exist; check the path (relative paths start at {Path.cwd()})")
    data = p.read_bytes()
    if not data.strip():
        raise DataError(f"{p} is empty; it needs a header row and at least one data row")
    out: list[tuple[int, str]] = []
    # Split bytes (on \n, \r\n, \r only) and decode line by line, so one bad byte costs one row, not
    # the file. keepends: csv needs the newline to rebuild quoted fields that span lines.
    for i, raw in enumerate(data.splitlines(keepends=True)):
        try:
            out.append((i + 1, raw.decode("utf-8-sig" if i == 0 and encoding == "utf-8" else encoding)))
        except UnicodeDecodeError as e:
            skipped.append(f"{p}:{i + 1}: not valid UTF-8 (byte {e.start}); re-save the file as UTF-8")
    return out


def rows_from_lines(lines: list[tuple[int, str]], sep: str, skip_header: bool) -> Iterator[tuple[int, list[str]]]:
    """Split delimited lines into (line number, fields); blank lines are ignored."""
    if sep != ",":  # TSV and pipe files have no quoting: a plain split is exact and fast
        for k, (n, raw) in enumerate(lines):
            raw = raw.rstrip("\r\n")
            if (k == 0 and skip_header) or not raw.strip():
                continue
            yield n, raw.split(sep)
        return
    reader = csv.reader(text for _, text in lines)
    start = 0
    for fields in reader:
        # a quoted field may span lines: report the line the row starts on
        line, start = lines[start][0], reader.line_num
        if any(f.strip() for f in fields):
            yield line, [f.strip() for f in fields]


def no_valid_row(p: Path, skipped: list[str], what: str) -> str:
    hint = "; first problems: " + " | ".join(skipped[:3]) if skipped else ""
    return f"{p} has no valid row (expected {what}){hint}"


def reason(e: Exception) -> str:
    if isinstance(e, ValidationError):
        err = e.errors()[0]
        return f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
    return str(e) or "malformed row"


def text(v: Any) -> str:
    return "" if v is None else str(v).strip()


def number(v: Any, name: str) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        x = float("nan")
    if not math.isfinite(x) or isinstance(v, bool):
        raise ValueError(f"bad {name} {v!r} (expected a finite number)")
    return x


def integer(v: Any, name: str) -> int:
    x = number(v, name)
    if x != int(x):
        raise ValueError(f"bad {name} {v!r} (expected an integer like 1995)")
    return int(x)


def timestamp(v: Any) -> float:
    """Seconds since the epoch, or an ISO 8601 date/time (naive times are read as UTC)."""
    try:
        return number(v, "timestamp")
    except ValueError:
        try:
            dt = datetime.fromisoformat(str(v).strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"bad timestamp {v!r} (expected seconds since 1970 or an ISO date)") from None
        return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()
