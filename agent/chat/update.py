"""How a parsed message changes a session's state: what it liked, rejected and asked for.

Kept apart from `ChatSession` (which runs a turn: lock, parse, recommend, save) so the rules of a state
change read in one place: marks move an item between liked and disliked, a reset keeps only the list
length, genres add or replace, an excluded genre wins over a required one until asked for again, years
follow `years.apply_years`, and the list length stays within `numbers.MAX_K`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from reasonrec.agent.chat.dialogue import DialogueAct
from reasonrec.agent.chat.explain import Understood, explain
from reasonrec.agent.chat.numbers import MAX_K
from reasonrec.agent.chat.store import ChatConstraints, PendingChoice, SessionState
from reasonrec.agent.chat.titles import ItemRef, TitleIndex
from reasonrec.agent.chat.years import apply_years
from reasonrec.retrieval.types import Item


def mark(state: SessionState, ids: list[str], polarity: str) -> None:
    """Mark items liked ("like") or disliked (anything else), in place; the newest mark wins."""
    if polarity == "like":
        state.liked = list(dict.fromkeys([*(i for i in state.liked if i not in ids), *ids]))
        state.disliked = [i for i in state.disliked if i not in ids]
    else:
        state.disliked = list(dict.fromkeys([*state.disliked, *ids]))
        state.liked = [i for i in state.liked if i not in ids]


def apply_act(
    state: SessionState, act: DialogueAct, items: Mapping[str, Item], titles: TitleIndex, years: Sequence[int]
) -> list[str]:
    """Apply a parsed message to `state` in place; returns what the reply says first (the explanation).

    Args:
        items: the catalogue (shown positions and years are read from it).
        titles: the catalogue's title index (a title may name several entries of one film).
        years: the catalogue's years, sorted (relative moves such as "older" stay inside them).
    """
    c, done, problems = state.constraints, Understood(), []
    if act.reset:
        state.constraints = c = ChatConstraints(k=c.k)
    for idx, polarity in [
        *((i, "dislike") for i in act.rejected_positions),
        *((i, "like") for i in act.liked_positions),
    ]:
        if idx < len(state.last):
            item = items[state.last[idx]]
            mark(state, [state.last[idx]], polarity)
            ref = ItemRef(item_id=state.last[idx], title=item.title, year=item.year)
            (done.rejected if polarity == "dislike" else done.liked_shown).append(ref)
    for tref in act.titles:
        match, options = tref.match, tref.match.options
        if match.resolved is not None:
            mark(state, titles.same_item(match.resolved), tref.polarity)
            (done.liked if tref.polarity == "like" else done.disliked).append(match.resolved)
            if match.fuzzy:
                done.fuzzy[match.resolved.natural_label()] = match.phrase
        elif options and state.pending is None:
            state.pending = PendingChoice(phrase=match.phrase, polarity=tref.polarity, options=options)  # type: ignore[arg-type]
            done.asking = True
        elif not options:
            problems.append(f"I could not find {match.phrase!r} in the catalogue.")
    if act.genres:
        c.genres = list(dict.fromkeys([*c.genres, *act.genres])) if act.additive else list(act.genres)
    if act.excluded_genres:
        c.excluded_genres = list(dict.fromkeys([*c.excluded_genres, *act.excluded_genres]))
    c.excluded_genres = [g for g in c.excluded_genres if g not in act.genres]  # "now horror" re-allows it
    c.genres = [g for g in c.genres if g not in c.excluded_genres]
    shown = [y for i in state.last if (y := items[i].year) is not None]
    done.relative_note = apply_years(c, act.year_reading(), shown, years)
    if act.k is not None:
        c.k = min(act.k, MAX_K)
    elif act.k_change == "shorter":
        c.k = max(1, (c.k + 1) // 2)
    elif act.k_change == "longer":
        c.k = min(MAX_K, c.k * 2)
    if act.query:
        c.query = act.query
    return [t for t in (explain(act, c, done), *problems) if t]
