"""Conversational recommendation: a `ChatSession` turns messages into constrained recommendations.

    agent = RecommenderAgent(AgentConfig())
    chat = agent.chat_session()                      # or chat_session(user_id="196"), chat_session(id)
    turn = chat.send("a funny sci-fi from the 80s")  # -> ChatTurn: reply, recommendations, constraints
    turn = chat.send("not the second, something older")
    turn = chat.send("more like Alien")              # ambiguous: turn.clarification lists the options
    turn = chat.send("the first one")
    turn = chat.feedback(turn.recommendations.items[0].item_id, liked=False)

Each message is read by `dialogue.parse_message` (rules; the LM is not asked to parse) and applied to
the session state (`update.apply_act`): liked items join the history, rejected ones are excluded for
good, genres and years become a Chroma `where` filter. Recommendations then go through the agent's own
retrieval, ranker and parser (`RecommenderAgent.recommend`), so every item is a candidate, unseen, with
a reason. When the filter leaves fewer than k unseen items the turn says so and shows fewer, or relaxes
the constraints when nothing is left. The state is saved to the `SessionStore` before a turn returns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reasonrec.agent.chat.catalogue import catalogue, mood_guesser
from reasonrec.agent.chat.dialogue import parse_message, pick_option
from reasonrec.agent.chat.explain import clarifying_question, list_reply, mark_note, mentioned_not_watched
from reasonrec.agent.chat.moods import MoodGuesser
from reasonrec.agent.chat.numbers import MAX_K
from reasonrec.agent.chat.store import (
    ChatConstraints,
    ChatTurn,
    SessionState,
    SessionStore,
    constraints_where,
    describe_constraints,
)
from reasonrec.agent.chat.titles import ItemRef
from reasonrec.agent.chat.update import apply_act, mark
from reasonrec.agent.schemas import Recommendations
from reasonrec.errors import ConfigError, DataError, UnknownItemError, UnknownSessionError

if TYPE_CHECKING:
    from reasonrec.agent.api import RecommenderAgent

__all__ = [
    "ChatConstraints", "ChatSession", "ChatTurn", "ItemRef", "SessionState", "SessionStore", "UnknownSessionError",
    "constraints_where", "describe_constraints", "open_session",
]  # fmt: skip


@dataclass
class _Outcome:
    """What `_recommend` did: the list, the constraints it applied, and what it had to give up."""

    recs: Recommendations
    applied: ChatConstraints
    relaxed: list[str]
    shortfall: bool  # fewer than k items matched
    repeats: bool  # earlier suggestions were allowed back


class ChatSession:
    """One conversation with the agent; state persists in `store` after every turn.

    Args:
        agent: the agent whose retrieval, ranker and parser produce every recommendation.
        state: the session's state (from `store.create` or `store.load`).
        store: where the state is saved.
    """

    def __init__(self, agent: RecommenderAgent, state: SessionState, store: SessionStore):
        self.agent = agent
        self.store = store
        self._state = state
        self._titles, self._genres, self._years = catalogue(agent)

    @property
    def id(self) -> str:
        return self._state.id

    @property
    def state(self) -> SessionState:
        """A copy of the current state (liked, disliked, recommended, constraints, turns)."""
        return self._state.model_copy(deep=True)

    def send(self, text: str) -> ChatTurn:
        """Answer one user message with recommendations or a clarifying question.

        Args:
            text: the message, e.g. "a funny sci-fi from the 80s", "not the second", "more like Alien".

        Returns:
            The turn (already saved): reply text, recommendations (None when asking), constraints.

        Raises:
            ConfigError: `text` is empty. DataError: no unseen item is left even without constraints.
        """
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"`text` must be a non-empty message, got {text!r}")
        text = text.strip()[:2000]
        with self._turn():
            t0 = time.perf_counter()
            state, notes = self._state.model_copy(deep=True), []  # a failing turn leaves the session as it was
            choice = pick_option(text, state.pending.options) if state.pending else None
            if choice is not None and state.pending is not None:
                keep_last = False
                mark(state, self._titles.same_item(choice), state.pending.polarity)
                notes.append(mark_note(choice, state.pending.polarity))
                state.pending = None
            else:
                state.pending = None
                last = self._last_titles(state)
                act = parse_message(text, self._genres, self._titles, last, self._search, self._moods())
                keep_last = act.is_refinement()
                notes += apply_act(state, act, self.agent.items, self._titles, self._years)
            parse_ms = (time.perf_counter() - t0) * 1000
            return self._answer(state, text, notes, keep_last, t0, parse_ms)

    def feedback(self, item_id: str, liked: bool) -> ChatTurn:
        """Thumbs up or down on an item, then recommend again with the same constraints.

        A liked item joins the history; a disliked one is never recommended again. The other items of
        the last answer stay eligible, so a thumbs-down replaces just that item.

        Raises:
            UnknownItemError: `item_id` is not in the catalogue.
        """
        item_id = str(item_id)
        item = self.agent.items.get(item_id)
        if item is None:
            raise UnknownItemError(
                f"unknown `item_id` {item_id!r}: not in catalogue {self.agent.dataset.name!r}; "
                "pass the item_id of a recommendation"
            )
        with self._turn():
            t0 = time.perf_counter()
            state, notes = self._state.model_copy(deep=True), []
            ref = ItemRef(item_id=item_id, title=item.title, year=item.year)
            mark(state, [item_id], "like" if liked else "dislike")
            notes.append(mark_note(ref, "like" if liked else "dislike"))
            text = f"{'liked' if liked else 'disliked'}: {ref.label()}"
            return self._answer(state, text, notes, True, t0, 0.0)

    # --- one turn ------------------------------------------------------------------------------------------

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """One turn at a time per session in this process, on the latest stored state.

        Why: a server opens a new ChatSession per request; two requests for one session must not both
        answer from the same old state (the later save would drop the earlier turn).
        """
        key = (str(self.store.path), self.id)
        with _LOCKS_GUARD:  # a lock lives while a turn of its session holds or waits for it, then goes
            entry = _LOCKS.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                self._state = self.store.load(self.id)
                yield
        finally:
            with _LOCKS_GUARD:
                entry[1] -= 1
                if entry[1] == 0:
                    del _LOCKS[key]

    def _answer(
        self, state: SessionState, text: str, notes: list[str], keep_last: bool, t0: float, parse_ms: float
    ) -> ChatTurn:
        recs, relaxed, clarification = None, [], None
        if state.pending is not None:
            clarification = state.pending.options
            reply = clarifying_question(state.pending.phrase, clarification)
        else:
            out = self._recommend(state, keep_last)
            recs, relaxed = self._mentioned(state, out.recs), out.relaxed
            out.recs = recs
            state.last = recs.item_ids()
            state.recommended = list(dict.fromkeys([*state.recommended, *state.last]))
            reply = list_reply(
                state.constraints, out.applied, out.recs, self.agent.config.prompt.domain,
                relaxed=out.relaxed, shortfall=out.shortfall, repeats=out.repeats,
            )  # fmt: skip
        reply = " ".join([*notes, reply])
        timings = {"parse_ms": parse_ms}
        if recs is not None:
            timings["recommend_ms"] = recs.timings.get("total", 0.0)
        timings["total_ms"] = (time.perf_counter() - t0) * 1000
        turn = ChatTurn(
            session_id=state.id,
            turn=len(state.turns) + 1,
            user_text=text,
            reply=reply,
            recommendations=recs,
            clarification=clarification,
            constraints=state.constraints.model_copy(),
            relaxed=relaxed,
            timings=timings,
        )
        state.turns.append(turn)
        self.store.save(state)
        self._state = state
        return turn

    def _recommend(self, state: SessionState, keep_last: bool) -> _Outcome:
        """Recommend under the constraints; fewer items when fewer match, relaxed constraints when none do."""
        c = state.constraints
        hist = self._history(state)
        exclude = set(state.disliked) | set(state.recommended)
        if keep_last:  # a critique of the last answer: its other items may stay
            exclude -= set(state.last) - set(state.disliked)
        relaxed: list[str] = []
        applied = c.model_copy(deep=True)
        n, repeats = self._available(hist, applied, exclude), False
        if n < c.k and exclude - set(state.disliked):
            # Earlier suggestions (never rejected ones) may come back before any constraint is dropped.
            n_again = self._available(hist, applied, set(state.disliked))
            if n_again > n:
                n, exclude, repeats = n_again, set(state.disliked), True
        for what, fields in (
            ("the year range", {"year_min": None, "year_max": None}),
            ("the required genres", {"genres": []}),
            ("the excluded genres", {"excluded_genres": []}),
        ):
            if n > 0:
                break
            if any(getattr(applied, f) not in (None, []) for f in fields):
                applied = applied.model_copy(update=fields)
                relaxed.append(what)
                n = self._available(hist, applied, exclude)
        if n == 0:
            raise DataError(
                f"no unseen {self.agent.config.prompt.domain} is left for session {state.id!r} "
                f"({len(exclude)} excluded); start a new session"
            )
        recs = self.agent.recommend(
            user_id=state.user_id,
            history=hist,
            query=self._query(applied, hist),
            k=min(c.k, n),
            exclude=sorted(exclude),
            where=constraints_where(applied),
        )
        return _Outcome(recs, applied, relaxed, n < c.k, repeats)

    def _available(self, hist: list[str], c: ChatConstraints, exclude: set[str]) -> int:
        """How many of the k wanted items the filter leaves (one Chroma query, no model call)."""
        cands = self.agent.candidate_source.candidates(
            hist, c.k, query=self._query(c, hist), where=constraints_where(c), exclude=frozenset(exclude)
        )
        return len(cands)

    def _query(self, c: ChatConstraints, hist: list[str]) -> str | None:
        # A new user has only words: describe the constraints when they gave no free text (cold start).
        if c.query:
            return c.query
        return None if hist else describe_constraints(c, self.agent.config.prompt.domain)

    def _history(self, state: SessionState) -> list[str]:
        base = self.agent.dataset.history(state.user_id) if state.user_id else []
        liked = [i for i in state.liked if i in self.agent.items]
        return [i for i in base if i not in set(liked)] + liked  # liked in this chat = the newest history

    def _mentioned(self, state: SessionState, recs: Recommendations) -> Recommendations:
        """Reasons say "which you mentioned" about titles the user named in this chat but never watched."""
        watched = set(self.agent.dataset.history(state.user_id)) if state.user_id else set()
        titles = [t for i in state.liked if i not in watched and i in self.agent.items for t in self._names(i)]
        if not titles:
            return recs
        items = [r.model_copy(update={"reason": mentioned_not_watched(r.reason, titles)}) for r in recs.items]
        return recs.model_copy(update={"items": items})

    def _names(self, item_id: str) -> list[str]:
        title = self.agent.items[item_id].title
        return list(dict.fromkeys([ItemRef(item_id=item_id, title=title).natural_label(), title]))

    def _moods(self) -> MoodGuesser:
        return mood_guesser(self.agent, self._genres)

    def _last_titles(self, state: SessionState) -> list[str]:
        return [self.agent.items[i].title for i in state.last if i in self.agent.items]

    def _search(self, text: str, n: int) -> list[str]:
        store = self.agent.text_store
        return [h.item_id for h in store.query(text=text, n=n)] if store is not None else []


def open_session(
    agent: RecommenderAgent,
    session_id: str | None = None,
    user_id: str | None = None,
    store: SessionStore | None = None,
    k: int | None = None,
) -> ChatSession:
    """Continue session `session_id`, or start one (for dataset user `user_id`, or a new user).

    Args:
        k: list length of a new session (default `ChatConstraints.k`); the user can change it later.

    Raises:
        UnknownSessionError: no such session in the store. UnknownUserError: `user_id` is not in the
        dataset. ConfigError: the session belongs to another user, or a bad `k`.
    """
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K):
        raise ConfigError(f"`k` must be an integer from 1 to {MAX_K}, got {k!r}")
    if store is None:
        from reasonrec import paths

        store = SessionStore(paths.home() / "sessions.sqlite3")
    if session_id is not None:
        state = store.load(str(session_id))
        if user_id is not None and str(user_id) != state.user_id:
            raise ConfigError(
                f"session {session_id!r} belongs to user {state.user_id!r}, not `user_id` {str(user_id)!r}; "
                "omit user_id to continue it"
            )
        return ChatSession(agent, state, store)
    if user_id is not None:
        agent.dataset.history(str(user_id))  # raises UnknownUserError with the fix
    state = store.create(user_id=None if user_id is None else str(user_id))
    if k is not None:
        state.constraints.k = k
        store.save(state)
    return ChatSession(agent, state, store)


# (store path, session id) -> [turn lock, turns holding or waiting for it]; emptied as turns end
_LOCKS: dict[tuple[str, str], list[Any]] = {}
_LOCKS_GUARD = threading.Lock()
