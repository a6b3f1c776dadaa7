"""Where reasonrec keeps what it builds (converted models, Chroma stores, runs).

`REASONREC_HOME` overrides the default `~/.cache/reasonrec`; tests point it at a temp dir.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The root cache folder, created on first use."""
    root = Path(os.environ.get("REASONREC_HOME", Path.home() / ".cache" / "reasonrec")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def chroma_dir() -> Path:
    return home() / "chroma"


def models_dir() -> Path:
    """Converted model folders. `REASONREC_MODELS` lets tests share one conversion across runs."""
    root = Path(os.environ.get("REASONREC_MODELS", home() / "models")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root
