"""Content-keyed files for what start-up would otherwise recompute on every run (issue 16).

A warm `reasonrec recommend` used to parse 100,000 interaction rows and refit the co-occurrence counts in
every process. Both are pure functions of their inputs, so their results are kept here, keyed by
everything that built them:

- the content hash of the input (the data files' bytes, the sequences fitted on),
- the settings and a format version,
- the source code of the modules that compute the value (an edited parser or fit never serves an old
  result, even when nobody remembers to bump a version), and the versions of the libraries involved.

Entries live under `<REASONREC_HOME>/cache/<kind>/<key><suffix>` and are written atomically (a crash
leaves no half file that a later run trusts). They hold interactions, which are personal data, so
nothing is kept forever: an entry older than `MAX_AGE_S` is deleted instead of read (reading does not
extend its life), and a kind keeps at most `MAX_ENTRIES` entries (a parameter sweep must not fill the
disk). `REASONREC_CACHE=off` disables reading and writing. A cache that cannot be read or written is a
miss, never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

MAX_AGE_S = 7 * 24 * 3600  # a week: rebuilt from the data after that, so deleted data ages out
MAX_ENTRIES = 4  # per kind; the oldest go first
_CODE: dict[str, str] = {}  # module file -> sha256 of its source, per process


def enabled() -> bool:
    """False when `REASONREC_CACHE` is "off"/"0"/"false" (every lookup misses, nothing is written)."""
    return os.environ.get("REASONREC_CACHE", "on").strip().lower() not in {"off", "0", "false", "no"}


def code_digest(*modules: ModuleType) -> str:
    """SHA-256 over the source files of `modules` (what computes a cached value)."""
    h = hashlib.sha256()
    for module in modules:
        file = str(getattr(module, "__file__", "") or "")
        if file not in _CODE:
            try:
                _CODE[file] = hashlib.sha256(Path(file).read_bytes()).hexdigest()
            except OSError:  # no source (frozen, zipped): the module's name and version must do
                _CODE[file] = f"{module.__name__}:{getattr(module, '__version__', '?')}"
        h.update(_CODE[file].encode())
    return h.hexdigest()


def sequences_digest(sequences: Mapping[str, Sequence[str]]) -> str:
    """SHA-256 of per-user item sequences in their iteration order (a fit may depend on that order)."""
    h = hashlib.sha256()
    for user, seq in sequences.items():
        h.update(json.dumps([str(user), [str(i) for i in seq]]).encode())
    return h.hexdigest()


def make_key(*parts: object) -> str:
    """A cache key from JSON-serialisable parts (hashes, settings, versions, paths)."""
    payload = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _folder(kind: str) -> Path:
    from reasonrec.paths import home

    return home() / "cache" / kind


def lookup(kind: str, key: str, suffix: str) -> Path | None:
    """The fresh entry for `key`, or None (missing, expired — then deleted — or caching disabled)."""
    if not enabled():
        return None
    path = _folder(kind) / f"{key}{suffix}"
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        return None
    if age > MAX_AGE_S:
        _remove(path)
        return None
    return path


def store(kind: str, key: str, suffix: str, write: Callable[[Path], None]) -> Path | None:
    """Write an entry with `write(tmp_path)`, then move it into place; prune the kind's old entries.

    Returns:
        The entry's path, or None when caching is disabled or the write failed (logged, not raised).
    """
    if not enabled():
        return None
    folder = _folder(kind)
    tmp: Path | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{key}.", suffix=suffix, dir=folder)
        os.close(fd)
        tmp = Path(name)
        write(tmp)
        path = folder / f"{key}{suffix}"
        os.replace(tmp, path)
    except Exception as e:  # a full or read-only disk costs the cache, never the request
        log.debug("cannot write %s cache entry: %s", kind, e)
        if tmp is not None:
            _remove(tmp)
        return None
    _prune(folder.iterdir(), keep=path)
    return path


def discard(path: Path) -> None:
    """Delete an entry that could not be read (corrupt or from an incompatible library)."""
    log.debug("discarding unreadable cache entry %s", path)
    _remove(path)


def _prune(entries: Iterable[Path], keep: Path) -> None:
    now = time.time()
    dated = []
    for p in entries:
        try:
            mtime = p.stat().st_mtime
        except OSError:
            continue
        if p != keep and (now - mtime > MAX_AGE_S or p.name.startswith(".") and now - mtime > 3600):
            _remove(p)  # expired, or a temp file a killed writer left behind
        elif p != keep and not p.name.startswith("."):
            dated.append((mtime, p))
    dated.sort(reverse=True)
    for _, p in dated[MAX_ENTRIES - 1 :]:  # the new entry plus the newest others
        _remove(p)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
