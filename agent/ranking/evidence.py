"""Evidence first, words second: what each recommended item's reason may say, assembled before any text.

For one item the evidence is the history item that best explains it (the *anchor*: most co-watched
with it among the user's recent items, with a bonus for shared genres), the co-watch counts behind it
("187 of the 508 people who watched Fargo also watched it", from `retrieval.cooccurrence`), the genres
it shares with the anchor, its own genres and year, and the genres of the user's request it matches.
Different items of one list get *different* anchors where the history allows, so their reasons differ.

The same record feeds the reason prompt (`facts`), the words the reason starts with (`opener`), the
logits processor that keeps generation to these facts (`faithful.py`), the training targets
(finetune/data.py) and the reason built from facts when the model's is not shown (`evidence_reason`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from reasonrec.agent.ranking.claims import ClaimChecker, query_genres
from reasonrec.retrieval.types import Item
from reasonrec.text import natural_title

RECENT = 30  # history items considered as anchors (the newest): the prompt shows the newest 10
GENRE_BONUS = 0.5  # anchor score = co-watch similarity + GENRE_BONUS x genre Jaccard
MIN_CO_USERS = 2  # "people who watched X also watched it" needs at least two such people


class CoWatch(BaseModel):
    """Collaborative evidence: of `anchor_users` people who have the anchor, `co_users` also have the item."""

    model_config = ConfigDict(frozen=True)

    co_users: int
    anchor_users: int
    similarity: float = Field(description="co_users / sqrt(anchor_users x item_users).")


class ItemEvidence(BaseModel):
    """The facts one item's reason may state, decided before the reason is written."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    anchor_id: str | None = Field(None, description="The history item the reason names.")
    anchor_title: str | None = Field(None, description="Its title as a sentence writes it.")
    cowatch: CoWatch | None = Field(None, description="Co-watch counts of the anchor and the item.")
    shared_genres: list[str] = Field(default_factory=list, description="Genres of the item the anchor has too.")
    genres: list[str] = Field(default_factory=list, description="The item's genres.")
    year: int | None = None
    query_genres: list[str] = Field(default_factory=list, description="Genres of the request the item has.")
    opener: str = Field("", description="The words a generated reason starts with.")

    def facts(self, domain: str) -> list[str]:
        """One line per fact, for the reason prompt."""
        out = []
        kind = _join([g.lower() for g in self.genres[:3]]) or domain
        out.append(f"It is {_a(kind)} {kind} {domain}" + (f" from {self.year}." if self.year else "."))
        if self.cowatch and self.anchor_title:
            out.append(f"{self.cowatch.co_users} of the {self.cowatch.anchor_users} people who watched "
                       f"{self.anchor_title} also watched it.")  # fmt: skip
        if self.shared_genres and self.anchor_title:
            out.append(f"Like {self.anchor_title}, it is {' and '.join(g.lower() for g in self.shared_genres[:2])}.")
        if self.query_genres:
            out.append(f"It fits the request for {' and '.join(g.lower() for g in self.query_genres)}.")
        return out


class ReasonData:
    """What reasons are built from and checked against: the catalogue and the co-occurrence counts.

    Args:
        catalogue: every item.
        cooccurrence: a fitted `retrieval.cooccurrence.CooccurrenceSource` (its public `anchor_counts`), or None
            (reasons then cite genres and years only).
    """

    def __init__(self, catalogue: Mapping[str, Item], cooccurrence: Any = None):
        self.catalogue = catalogue
        self.cooccurrence = cooccurrence

    @classmethod
    def from_source(cls, catalogue: Mapping[str, Item], source: Any) -> ReasonData:
        """From a candidate source: a `FusedSource`'s "cooccurrence" member, or the source itself."""
        sources = getattr(source, "sources", None)
        co = sources.get("cooccurrence") if isinstance(sources, Mapping) else source
        return cls(catalogue, co if hasattr(co, "anchor_counts") else None)

    @cached_property
    def checker(self) -> ClaimChecker:
        return ClaimChecker(self.catalogue, self if self.cooccurrence is not None else None)

    def co_counts(self, anchor_id: str, item_id: str) -> tuple[int, int]:
        """`claims.CoCounts`: (users with both, users with the anchor), recounted by the source."""
        found = self.cooccurrence.anchor_counts([anchor_id], item_id) if self.cooccurrence is not None else []
        return (found[0].co_users, found[0].anchor_users) if found else (0, 0)

    def cowatch(self, history: Sequence[Item], item: Item) -> dict[str, CoWatch]:
        """Anchor id -> co-watch evidence, over the newest `RECENT` history items."""
        if self.cooccurrence is None or not history:
            return {}
        recent = [h.id for h in history[-RECENT:]]
        found = self.cooccurrence.anchor_counts(recent, item.id)
        return {e.anchor_id: CoWatch(co_users=e.co_users, anchor_users=e.anchor_users, similarity=e.similarity)
                for e in found if e.co_users >= MIN_CO_USERS}  # fmt: skip


def request_data(req: Any) -> ReasonData:
    """A request's `reason_data`, else one built from its own history and candidates (no co-watch counts)."""
    if req.reason_data is not None:
        return req.reason_data
    return ReasonData({it.id: it for it in [*req.history, *req.candidates]})


def for_request(req: Any, items: Sequence[Item], domain: str) -> list[ItemEvidence]:
    """`assemble` for a `RankRequest`'s history, query and data."""
    return assemble(items, req.history, req.query, request_data(req), domain)


def assemble(
    items: Sequence[Item], history: Sequence[Item], query: str | None, data: ReasonData | None, domain: str
) -> list[ItemEvidence]:
    """Evidence for each item of one list, in order, with a different anchor per item while one is left.

    Args:
        items: the list (recommended order; generative mode passes all candidates).
        history: the user's items, oldest first.
        query: the user's request.
        data: catalogue and counts; None = genres and years only.
        domain: "movie" for ML-100K.
    """
    used: set[str] = set()
    wanted = query_genres(query)
    out = []
    for item in items:
        options = _anchor_options(item, history, data)
        fresh = [o for o in options if o[1].id not in used]
        best = (fresh or options or [None])[0]
        anchor, co, shared = (best[1], best[2], best[3]) if best else (None, None, [])
        if anchor is not None:
            used.add(anchor.id)
        name = natural_title(anchor.title) if anchor is not None else None
        out.append(ItemEvidence(
            item_id=item.id, anchor_id=anchor.id if anchor else None, anchor_title=name, cowatch=co,
            shared_genres=shared, genres=list(item.genres), year=item.year,
            query_genres=[g for g in item.genres if g in wanted], opener=_opener(name, co, shared, item, domain),
        ))  # fmt: skip
    return out


def _anchor_options(
    item: Item, history: Sequence[Item], data: ReasonData | None
) -> list[tuple[float, Item, CoWatch | None, list[str]]]:
    """(score, anchor, co-watch, shared genres) for each recent history item that explains `item`, best first."""
    co = data.cowatch(history, item) if data is not None else {}
    genres = set(item.genres)
    options = []
    for age, h in enumerate(reversed(list(history)[-RECENT:])):
        shared = [g for g in item.genres if g in set(h.genres)]
        if h.id == item.id or not (shared or h.id in co):
            continue
        jaccard = len(shared) / len(genres | set(h.genres)) if shared else 0.0
        e = co.get(h.id)
        options.append((GENRE_BONUS * jaccard + (e.similarity if e else 0.0) - 1e-4 * age, h, e, shared))
    options.sort(key=lambda o: -o[0])
    return options


def _opener(anchor: str | None, co: CoWatch | None, shared: list[str], item: Item, domain: str) -> str:
    """The start of a generated reason: a comparison where a genre is shared, else who co-watched it.

    "Like <anchor>, it" claims a shared genre, so it is only used when there is one; an anchor that is
    only co-watched is introduced by the people who watched both.
    """
    if anchor and shared:
        return f"Like {anchor}, it"
    if anchor and co:
        return f"People who watched {anchor} also watched it; it"
    if item.genres:
        g = item.genres[0].lower()
        return f"{_a(g)} {g} {domain}"
    return ""


def evidence_continuation(ev: ItemEvidence, domain: str) -> str:
    """What a reason says after its `opener`, from the same facts: the reason head's training target."""
    if ev.opener.endswith(" it"):  # "Like <anchor>, it" / "People who watched <anchor> also watched it; it"
        genres = ev.shared_genres if ev.opener.startswith("Like ") else ev.genres
        kind = " and ".join(g.lower() for g in genres[:2]) or domain
        return f" is {_a(kind)} {kind} {domain}" + (f" from {ev.year}." if ev.year else ".")
    if ev.opener:  # "A comedy movie"
        return f" from {ev.year} that fits your history." if ev.year else " that fits your history."
    return evidence_reason(ev, domain)


FALLBACK_VARIANTS = 3  # phrasings per kind of evidence, so two reasons built from facts in one list differ


def evidence_reason(ev: ItemEvidence, domain: str, variant: int = 0) -> str:
    """The reason built from facts (shown when the model's is not): true by construction, and specific.

    `variant` picks one of `FALLBACK_VARIANTS` phrasings (choose_reasons takes the first unlike the rest).
    """
    kind = " ".join(g.lower() for g in ev.genres[:2]) or domain
    what = f"{ev.year} {kind}" if ev.year else kind
    noun = f" {domain}" if ev.genres else ""
    year = f" from {ev.year}" if ev.year else ""
    if ev.cowatch and ev.anchor_title:
        co, n, a = ev.cowatch.co_users, ev.cowatch.anchor_users, ev.anchor_title
        texts = [f"{co} of the {n} people who watched {a} also watched this {what}{noun}.",
                 f"{_a(what).capitalize()} {what}{noun}: {co} of the {n} viewers of {a} have seen it too.",
                 f"Seen by {co} of the {n} people who watched {a}, this {kind}{noun}{year} suits you."]  # fmt: skip
    elif ev.shared_genres and ev.anchor_title:
        g, a = " and ".join(x.lower() for x in ev.shared_genres[:2]), ev.anchor_title
        texts = [f"Shares {g} with {a}, which you watched" + (f"; it is from {ev.year}." if ev.year else "."),
                 f"You watched {a}, and this {ev.year or ''} {domain} is {g} too.".replace("  ", " "),
                 f"{_a(g).capitalize()} {g} {domain}{year} in the spirit of {a}."]  # fmt: skip
    else:
        texts = [f"{_a(what).capitalize()} {what}{noun} close to your recent history.",
                 f"Close to your recent history: {_a(kind)} {kind}{noun}{year}.",
                 f"Your history points to this {kind}{noun}{year}."]  # fmt: skip
    text = texts[variant % len(texts)]
    if ev.query_genres:
        text += f" It fits your request for {' and '.join(g.lower() for g in ev.query_genres)}."
    return text


def _join(words: list[str]) -> str:
    """ "crime, drama and thriller"."""
    return ", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else "".join(words)


def _a(word: str) -> str:
    """The indefinite article for `word` ("an animation", "a 1995 drama", "an 1980s"...)."""
    return "an" if word[:1].lower() in "aeiou8" or word[:2] in ("11", "18") else "a"
