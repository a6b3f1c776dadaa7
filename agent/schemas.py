"""Typed results returned by the agent (and serialised as-is by the CLI's --json and the HTTP API)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, computed_field

from reasonrec.agent.ranking.evidence import ItemEvidence
from reasonrec.prompts.loader import clean_text

# Catalogue titles and model text are untrusted: shown text follows the prompts' rules (no bidi overrides,
# zero-width or control characters, one line), so a client displays what the model was shown.
OutputText = Annotated[str, BeforeValidator(lambda v: clean_text(v) if isinstance(v, str) else v)]


class Recommendation(BaseModel):
    """One recommended item."""

    item_id: str
    title: OutputText
    year: int | None = None
    genres: list[str] = Field(default_factory=list)
    rank: int = Field(description="1 = best.")
    reason: OutputText = Field(min_length=1, description="Why this item; never empty.")
    score: float | None = Field(None, description="Ranker score (higher is better) when the mode has one.")
    retrieval_score: float | None = Field(None, description="Cosine similarity from the candidate generator.")
    source: Literal["model", "retrieval", "scoring", "fallback"] = Field(
        description="model: the LM chose this item (alone or in the fused score); retrieval: the fused retrieval "
        "score alone ordered it (candidates.lm_weight 0, the default: the LM only explains); scoring: filled in "
        "from the scoring order after constrained generation left the list short; fallback: filled in from "
        "retriever order."
    )
    reason_source: Literal["model", "template"] = Field(
        "model", description="template: a reason built from facts because the model gave none."
    )
    grounded: bool = Field(
        True,
        description="The reason names a real history item or a real genre/year of this item "
        "(agent.reasons.is_grounded).",
    )
    faithful: bool | None = Field(
        None,
        description="No claim of the shown reason is false: genres, years/decades, history titles, co-watch "
        "counts, the request (agent.ranking.claims). None: not checked.",
    )
    specific: bool | None = Field(
        None, description="The shown reason states at least one true fact about this item beyond its opener."
    )
    model_faithful: bool | None = Field(
        None, description="The model's own reason was faithful before any replacement; None: it wrote none usable."
    )
    evidence: ItemEvidence | None = Field(
        None, description="The facts the reason was written from: anchor history item, co-watch counts, genres, year."
    )


class Recommendations(BaseModel):
    """A ranked list for one user plus everything needed to reproduce and audit it."""

    user_id: str | None = None
    query: str | None = None
    items: list[Recommendation]
    k: int
    n_candidates: int
    mode: str
    model_id: str
    template_version: str
    valid_output: bool = Field(description="The model alone produced exactly k valid, distinct items with reasons.")
    n_off_candidate: int = Field(0, description="Labels the model named that were not candidates (dropped).")
    n_duplicates: int = Field(0, description="Repeated labels in the model output (dropped).")
    raw_output: str | None = Field(None, description="The model's text (generative mode).")
    grounded_rate: float | None = Field(
        None, description="Share of model-written reasons that are grounded; None when the model wrote none."
    )
    faithful_rate_model: float | None = Field(
        None, description="Share of the model's own usable reasons with no false claim, before any replacement."
    )
    confidence: float | None = Field(
        None,
        description="Scoring/hybrid: the LM's top-1 minus top-2 candidate probability (averaged over "
        "permutations), 0..1; None in generative mode, and where no scoring forward pass ran (candidates.lm_weight "
        "0 with retrieval features: the fused retrieval score alone ordered the list; timings.lm_skipped = 1).",
    )
    timings: dict[str, float] = Field(
        default_factory=dict,
        description="Milliseconds: retrieval_ms, model_ms, reasons_ms and 'total' (their sum) for this request; "
        "setup_ms: one-time loading this call paid first (0 when warm); plus the ranker's own stages. "
        "lm_skipped = 1: no ranking forward pass ran (the fused retrieval score alone ordered the list).",
    )

    # Counters are read off the items, never kept by hand, so they cannot disagree with `items[].source`.
    @computed_field(description="Items the model chose itself.")  # type: ignore[prop-decorator]
    @property
    def n_model(self) -> int:
        return sum(r.source == "model" for r in self.items)

    @computed_field(description="Items the fused retrieval score alone ordered (the LM had no weight).")  # type: ignore[prop-decorator]
    @property
    def n_retrieval(self) -> int:
        return sum(r.source == "retrieval" for r in self.items)

    @computed_field(description="Items filled in from retriever order.")  # type: ignore[prop-decorator]
    @property
    def n_fallback(self) -> int:
        return sum(r.source == "fallback" for r in self.items)

    @computed_field(description="Items filled in from the scoring order (generative fallback chain).")  # type: ignore[prop-decorator]
    @property
    def n_scoring(self) -> int:
        return sum(r.source == "scoring" for r in self.items)

    def order_line(self) -> str:
        """Who ordered the items, for footers: "5 by model", "5 by retrieval score", "3 by model, 2 fallback"."""
        parts = [(self.n_model, "by model"), (self.n_retrieval, "by retrieval score"), (self.n_scoring, "from scoring"),
                 (self.n_fallback, "fallback")]  # fmt: skip
        return ", ".join(f"{n} {what}" for n, what in parts if n) or "no items"

    def item_ids(self) -> list[str]:
        return [r.item_id for r in self.items]
