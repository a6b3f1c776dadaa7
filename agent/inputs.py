"""What the agent checks and shapes before ranking: dataset specs, argument types, collections, and how
much history fits in the model's context. Pure functions, so `api.py` stays the verbs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from reasonrec.agent.config import AgentConfig
from reasonrec.agent.model.loading import LoadedModel
from reasonrec.agent.ranking.prompter import Prompter
from reasonrec.agent.ranking.request import RankRequest
from reasonrec.errors import ConfigError, DataError, UnknownItemError
from reasonrec.retrieval.types import Dataset, Item


def load_dataset_spec(spec: str) -> Dataset:
    """'ml-100k' | a GroupLens ml-100k folder | 'catalogue.csv,interactions.csv'.

    Raises:
        DataError: the files are missing or malformed.
    """
    from reasonrec.retrieval import loaders

    if spec == "ml-100k":
        return loaders.load_ml100k()
    if "," in spec:
        cat, inter = (s.strip() for s in spec.split(",", 1))
        return loaders.load_dataset(cat, inter, name=Path(cat).stem)
    if Path(spec).is_dir():
        return loaders.load_ml100k(spec)
    raise DataError(
        f"`dataset` must be 'ml-100k', a GroupLens ml-100k folder, or 'catalogue.csv,interactions.csv'; got {spec!r}"
    )


FACTS_TOKENS = 256  # the evidence lines of a reason prompt (a few sentences of at most 300 characters)


def fit_prompt_history(
    lm: LoadedModel,
    config: AgentConfig,
    prompter: Prompter,
    history: list[Item],
    cands: list[Item],
    k: int,
    query: str | None,
) -> list[Item]:
    """Drop the oldest history items when a prompt would not fit in the model's context."""
    from reasonrec.prompts.budget import context_limit, fit_history
    from reasonrec.prompts.loader import default_labels, render_rank_messages, render_reason_messages

    limit = context_limit(
        getattr(lm.tokenizer, "model_max_length", None),
        getattr(getattr(lm.model, "config", None), "max_position_embeddings", None),
    )
    if limit is None:
        return history
    rc, pc = config.ranker, config.prompt
    tok = lm.tokenizer

    def count(messages: list[dict[str, str]]) -> int:
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return len(tok(text, add_special_tokens=False)["input_ids"]) + 1  # + the "[" prefill

    pairs = list(zip(default_labels(len(cands)), cands, strict=True))
    # Room for the answer, as the prompter budgets it for decoding (one definition of both).
    answer = prompter.answer_tokens(k) if rc.mode == "generative" else 0
    n = fit_history(
        history, lambda h: render_rank_messages(h, pairs, k, query, pc), count, limit - answer - 16, pc.max_history
    )
    if rc.mode == "hybrid":  # its reason prompts list genres on every history line: longer per item
        longest = max(cands, key=lambda it: len(it.title) + len(it.description[: pc.max_description_chars]))
        reason = prompter.reason_tokens()
        reason_prompt = lambda h: render_reason_messages(h, longest, query, pc)  # noqa: E731
        # + room for the pick's evidence lines, which reason.jinja lists and which exist only after ranking
        n = fit_history(history, reason_prompt, count, limit - reason - 16 - FACTS_TOKENS, n)  # at most n
    return history if n == min(len(history), pc.max_history) else history[len(history) - n :]


def check_collection(store: Any, items: dict[str, Item], collection: str, dataset: str) -> None:
    """A collection holding ids the catalogue lacks was indexed from another catalogue: say so, by name."""
    stray = [i for i in store.ids() if i not in items]
    if stray:  # a ConfigError, not a DataError: the fused source skips a source that raises DataError
        raise ConfigError(
            f"the Chroma collection {collection!r} holds {len(stray)} item id(s) that catalogue {dataset!r} lacks "
            f"(e.g. {stray[:3]}): it was indexed from another catalogue; set `retrieval.collection` to a name "
            "of its own for this catalogue (or delete that collection)"
        )


def check_argument_types(user_ids: Any, histories: Any, queries: Any, exclude: Any) -> None:
    """Reject wrong types up front: a string where a list belongs would be read character by character."""
    if isinstance(user_ids, str | bytes) or not isinstance(user_ids, Sequence):
        raise ConfigError(f"`user_ids` must be a list of user ids, got {type(user_ids).__name__} {user_ids!r}")
    for uid in user_ids:
        if uid is not None and (isinstance(uid, bool) or not isinstance(uid, str | int)):
            raise ConfigError(f"a user id must be a str or an int, got {type(uid).__name__} {uid!r}")
    for hist in histories or ():
        if hist is not None and (isinstance(hist, str | bytes) or not isinstance(hist, Sequence)):
            raise ConfigError(
                f"`history` must be a list of item ids, oldest first, got {type(hist).__name__} {hist!r}"
                + (f"; split it: {hist.split(',')!r}" if isinstance(hist, str) else "")
            )
    for q in queries or ():
        if q is not None and not isinstance(q, str):
            raise ConfigError(f"`query` must be a string or None, got {type(q).__name__} {q!r}")
    if isinstance(exclude, str | bytes) or not isinstance(exclude, Iterable):
        raise ConfigError(f"`exclude` must be a list of item ids, got {type(exclude).__name__} {exclude!r}")


def check_k(k: Any) -> int:
    """`k` as given, when it is an integer >= 1 (a bool is not)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"`k` must be an integer >= 1, got {k!r}")
    return k


def resolve_history(dataset: Dataset, user_id: Any, history: Sequence[str] | None, query: str | None) -> list[str]:
    """The history a request ranks for: the given one, else the dataset user's; a new user needs a query."""
    if history is not None:
        hist = [str(h) for h in history]
    elif user_id is not None:
        hist = dataset.history(str(user_id))
    else:
        hist = []
    if not hist and not (query and query.strip()):
        raise DataError("give a `user_id`, a non-empty `history`, or a `query` (a new user needs a request)")
    return hist


def new_request(
    dataset: Dataset, hist: list[str], cands: list[str], k: int, query: str | None, uid: Any
) -> RankRequest:
    """A RankRequest of catalogue items (unknown ids and repeated candidates are the caller's mistake)."""
    items = dataset.items
    missing = [i for i in [*hist, *cands] if i not in items]
    if missing:
        raise UnknownItemError(f"unknown item id(s) {missing[:5]} (not in catalogue {dataset.name!r})")
    if len(set(cands)) != len(cands):
        raise ConfigError("candidate ids must be distinct")
    return RankRequest(
        history=[items[i] for i in hist], candidates=[items[i] for i in cands], k=k, query=query,
        user_id=None if uid is None else str(uid),
    )  # fmt: skip
