"""A model known before it is loaded: what results record about it, and a handle that loads on first use.

Why: in scoring mode with `candidates.lm_weight` 0 a request with retrieval features is ordered by the
fused retrieval score alone (agent/ranking/fused.py `lm_decides`), so its ranking needs no forward pass,
and loading the model (torch, transformers, the weights: most of a CLI call's seconds) buys nothing.
The ranker still records the model's id in every result, so the id is computed here without any
weights, by the same function `load_model` records it with. Importing this module imports no torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reasonrec.agent.config import DEFAULT_MODEL, ModelConfig

if TYPE_CHECKING:  # typing only: loading.py imports torch-facing code on use
    from reasonrec.agent.model.loading import LoadedModel


@dataclass(frozen=True)
class ModelIdentity:
    """What results record about a configured model, and what its adapter's training saved beside it."""

    model_id: str
    score_temperature: float | None = None
    adapter_template: str | None = None


def model_identity(cfg: ModelConfig) -> ModelIdentity:
    """`cfg`'s model as results record it, read without loading (or converting) any weights."""
    model_id, meta = recorded_id(cfg.name_or_path), {}
    if cfg.adapter:
        model_id = f"{model_id}+{Path(cfg.adapter).name}"
        meta = adapter_meta(Path(cfg.adapter).expanduser())
    value, template = meta.get("score_temperature"), meta.get("template_version")
    return ModelIdentity(
        model_id,
        score_temperature=float(value) if isinstance(value, int | float) and value > 0 else None,
        adapter_template=template if isinstance(template, str) else None,
    )


def recorded_id(name_or_path: str) -> str:
    """The id results record for a `model.name_or_path` (no adapter): a GGUF's stem, a folder's name, an HF id."""
    if name_or_path == DEFAULT_MODEL:
        return "SmolLM2-135M-Instruct"
    p = Path(name_or_path).expanduser()
    if p.suffix == ".gguf":
        return p.stem
    return p.name if looks_local(name_or_path) else name_or_path


def looks_local(name_or_path: str) -> bool:
    """A path on this machine rather than an HF hub id."""
    return name_or_path.startswith((".", "/", "~")) or Path(name_or_path).expanduser().exists()


def adapter_meta(adapter: Path) -> dict[str, Any]:
    """What `reasonrec train` saved beside the adapter: fitted temperature, template version, ...

    An adapter from elsewhere (or an older run) has none: no calibration (T = 1), no template check.
    """
    try:
        meta = json.loads((adapter / "reasonrec_train.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


class LazyModel:
    """Stands in for a `LoadedModel` until the model is needed: `model_id`, `score_temperature` and
    `adapter_template` are known at once; `.model`, `.tokenizer`, `.device` and `.dtype` call `load`.

    Args:
        cfg: the model's config (what its identity is read from).
        load: returns the loaded model; the agent passes its own cached, set-up-timed loader, so the
            model is loaded at most once whoever asks first.
    """

    def __init__(self, cfg: ModelConfig, load: Callable[[], LoadedModel]):
        ident = model_identity(cfg)
        self.model_id = ident.model_id
        self.score_temperature = ident.score_temperature
        self.adapter_template = ident.adapter_template
        self._load = load

    @property
    def loaded(self) -> LoadedModel:
        """The real model (loaded now if nobody has yet)."""
        return self._load()

    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    @property
    def device(self) -> str:
        return self.loaded.device

    @property
    def dtype(self) -> str:
        return self.loaded.dtype

    def __repr__(self) -> str:  # never loads
        return f"LazyModel({self.model_id!r})"
