"""cornac's SASRec network class, without importing the rest of cornac when a trained model is only loaded.

`import cornac` runs its package `__init__`, which imports every evaluation method (scipy.stats,
matplotlib, powerlaw): ~2 s of a warm CLI call on the 2-core CPU, for a class whose module needs only
torch and numpy. Loading a trained model therefore executes that one file,
`cornac/models/sasrec/sasrec.py` of the installed, version-checked cornac, as a module of its own: the
same source, so the same network and the same outputs. Where cornac is already imported (training
imports it whole), its own class is used.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

MODULE = "cornac.models.sasrec.sasrec"
_STANDALONE = "reasonrec.retrieval._cornac_sasrec_net"


def sasrec_net_class(version: str) -> Any:
    """cornac's `SASRecModel` (the torch network); read from its file alone when cornac is `version`.

    Any other case (another version, an unusual layout) imports cornac as usual.

    Raises:
        ImportError: cornac is not installed.
    """
    module = sys.modules.get(MODULE) or _standalone(version)
    if module is None:
        from cornac.models.sasrec import sasrec as module
    return module.SASRecModel


@functools.cache
def _standalone(version: str) -> Any:
    try:
        if metadata.version("cornac") != version:  # the file is trusted at the version it was tested with
            return None
    except metadata.PackageNotFoundError:
        return None  # the ordinary import raises the ImportError
    spec = importlib.util.find_spec("cornac")  # a top-level name: found, not imported
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(roots[0], "models", "sasrec", "sasrec.py") if roots else None
    if path is None or not path.is_file():
        return None
    file_spec = importlib.util.spec_from_file_location(_STANDALONE, path)
    if file_spec is None or file_spec.loader is None:
        return None
    module = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(module)
    return module
