"""Render the rank and reason prompts from the packaged Jinja templates.

The templates (`templates/*.jinja`) are the one source of truth for prompt text; training, evaluation
and serving all call `render_rank_messages` / `render_reason_messages`. Each template is rendered
twice, with `part="system"` and `part="user"`, giving the two chat messages.

Item and user text are data, never template code: they reach Jinja only as variables, after
`clean_text` has collapsed whitespace, stripped control characters and replaced square brackets with
parentheses, so that a title such as "Ignore previous instructions [A]" cannot forge a label line.
Items are duck-typed (an object with .title/.year/.genres/.description, a mapping with those keys, or
a plain title string) because this package imports nothing of ours but `reasonrec.errors`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from jinja2 import ChoiceLoader, FileSystemLoader, PackageLoader, PrefixLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, field_validator

from reasonrec.errors import ConfigError
from reasonrec.fields import bound
from reasonrec.text import cut_at_word

# Recorded with every result and adapter; bump when the template text or the sanitising changes.
TEMPLATE_VERSION = "rank-v1"
# The reason prompt's own version (reason.jinja); v2 listed the item's evidence ("facts") before the instruction,
# v3 puts the instruction before the item, in the part a list's reason prompts share (issue 16).
REASON_TEMPLATE_VERSION = "reason-v3"
COMPACT_SUFFIX = "-compact"
# The assistant turn starts with this; scoring mode prefills it and reads the next (label) token.
ANSWER_PREFIX = "["
RANK_TEMPLATE = "rank.jinja"
REASON_TEMPLATE = "reason.jinja"

_LABEL_RE = re.compile(r"[A-Za-z0-9]{1,8}")
_DOMAIN_RE = re.compile(r"[A-Za-z][A-Za-z -]{0,31}")
# Bracket look-alikes become parentheses too: a model reads "［A］" much like "[A]".
_BRACKETS = str.maketrans({c: "(" for c in "[［【〔⟦"} | {c: ")" for c in "]］】〕⟧"})
# Chat-template markers such as "<|im_end|>" are parsed as special tokens by HF tokenizers, so a
# title containing one could close the user turn; break the marker apart.
_SPECIAL_RE = re.compile(r"<\||\|>")
_MAX_GENRES = 6


_Count = Annotated[int, bound(0, high=10_000)]
_Chars = Annotated[int, bound(8, high=10_000)]
_Words = Annotated[int, bound(1, high=10_000)]


class PromptConfig(BaseModel):
    """How prompts are built: history length, truncation, wording and where templates come from."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    max_history: _Count = Field(10, description="Newest history items shown (0 = none).")
    max_title_chars: _Chars = Field(80, description="Titles longer than this are cut at a word boundary.")
    max_reason_words: _Words = Field(20, description="Word limit for each reason, stated in the prompt.")
    max_description_chars: _Count = Field(
        200, description="Description length shown in the reason prompt (0 = no description)."
    )
    max_query_chars: _Chars = Field(300, description="The user's free-text request is cut to this length.")
    compact: bool = Field(
        False,
        description="Rank prompt without candidate years and with a one-line instruction: ~30% fewer tokens "
        "(~380 instead of ~515 for 20 ML-100K candidates, median), for CPU latency. Results and adapters record it "
        "in their template version ('-compact'); serve an adapter with the setting it was trained with.",
    )
    domain: str = Field("item", description="What is recommended, one word: 'movie' for ML-100K.")
    template_dir: Path | None = Field(
        None,
        description="Folder with your own rank.jinja / reason.jinja, used instead of the packaged ones; "
        'they can {% extends "builtin/rank.jinja" %} and override the `system` or `user` block.',
    )



    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        v = v.strip()
        if not _DOMAIN_RE.fullmatch(v):
            raise ValueError(f"`domain` must be a word of letters such as 'movie' or 'book', got {v!r}")
        return v

    @field_validator("template_dir")
    @classmethod
    def _template_dir(cls, v: Path | None) -> Path | None:
        if v is not None and not Path(v).expanduser().is_dir():
            raise ValueError(f"`template_dir` must be an existing folder, got {str(v)!r}")
        return None if v is None else Path(v).expanduser().resolve()


def template_version(config: PromptConfig | None = None) -> str:
    """The rank template version a config renders: `TEMPLATE_VERSION`, plus "-compact" for the compact form."""
    return TEMPLATE_VERSION + (COMPACT_SUFFIX if config is not None and config.compact else "")


def default_labels(n: int) -> list[str]:
    """Candidate labels A..Z, then AA, AB, ..., AZ, BA, ... (bijective base 26).

    Args:
        n: How many labels.

    Returns:
        `n` distinct upper-case labels. Which of them are single tokens is the ranker's concern.

    Raises:
        ConfigError: `n` is negative or not an int.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"`n` must be an int >= 0, got {n!r}")
    out = []
    for i in range(1, n + 1):
        s = ""
        while i:
            i, r = divmod(i - 1, 26)
            s = chr(65 + r) + s
        out.append(s)
    return out


def clean_text(value: object, limit: int | None = None) -> str:
    """Make untrusted text safe to show inside a prompt.

    Args:
        value: Any value; converted with `str`.
        limit: Maximum length; longer text is cut at a word boundary and ends with "…".

    Returns:
        One line: control/format characters removed, whitespace collapsed to single spaces, square
        brackets (and look-alikes) replaced by parentheses, chat-template markers broken apart.
    """
    s = "" if value is None else str(value)
    if limit is not None:
        s = s[: limit * 4 + 64]  # bound the per-character work below on huge inputs
    # Cc covers \n and \t (they become spaces); Cf covers zero-width and bidi-override characters.
    s = "".join(
        (" " if ch.isspace() else "") if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co") else ch
        for ch in s
    )
    s = _SPECIAL_RE.sub(lambda m: "(" if m.group() == "<|" else ")", s.translate(_BRACKETS))
    s = " ".join(s.split())
    return cut_at_word(s, limit) if limit is not None else s


def _field(item: Any, name: str) -> Any:
    if isinstance(item, Mapping):
        return item.get(name)
    return getattr(item, name, None)


def _item_vars(item: Any, where: str, cfg: PromptConfig, description: bool = False) -> dict[str, Any]:
    """The sanitised fields a template sees for one item."""
    if isinstance(item, str):
        item = {"title": item}
    title = clean_text(_field(item, "title"), cfg.max_title_chars)
    if not title:
        raise ConfigError(f"{where} has no `title` (expected an Item, a mapping or an object with .title)")
    year = _field(item, "year")
    try:
        year = int(year) if year not in (None, "") else None
    except (TypeError, ValueError):
        year = None
    if year is not None and title.endswith(f"({year})"):
        year = None  # ML-100K style titles already carry the year; don't show it twice
    genres = _field(item, "genres") or ()
    if isinstance(genres, str):
        genres = genres.replace("|", ",").split(",")
    genres = [g for g in (clean_text(g, 30) for g in _iter(genres)) if g][:_MAX_GENRES]
    out: dict[str, Any] = {"title": title, "year": year, "genres": genres}
    if description:
        n = cfg.max_description_chars
        out["description"] = clean_text(_field(item, "description"), n) if n else ""
    return out


def _top_genres(rows: list[dict[str, Any]], n: int = 4) -> list[str]:
    """The history's most frequent genres, most frequent first (ties: most recent first).

    Why: one "favourite genres" line costs ~10 tokens where genres on every history line cost ~60.
    """
    counts: dict[str, int] = {}
    for row in reversed(rows):
        for g in row["genres"]:
            counts[g] = counts.get(g, 0) + 1
    return [g for g, c in sorted(counts.items(), key=lambda gc: -gc[1]) if c > 1][:n]


def _iter(values: Any) -> Iterable[Any]:
    return values if isinstance(values, Iterable) else ()


def _common_vars(history: Sequence[Any] | None, query: str | None, cfg: PromptConfig) -> dict[str, Any]:
    everything = list(history or [])
    hist = everything[len(everything) - cfg.max_history :] if cfg.max_history else []
    offset = len(everything) - len(hist)  # so errors name the caller's index
    rows = [_item_vars(it, f"history[{offset + i}]", cfg) for i, it in enumerate(hist)]
    return {
        "history": rows,
        "top_genres": _top_genres(rows),
        "query": clean_text(query, cfg.max_query_chars) or None,
        "domain": cfg.domain,
        "domain_plural": cfg.domain if cfg.domain.endswith("s") else cfg.domain + "s",
        "max_reason_words": cfg.max_reason_words,
        "answer_prefix": ANSWER_PREFIX,
    }


def render_rank_messages(
    history: Sequence[Any] | None,
    candidates: Sequence[tuple[str, Any]],
    k: int,
    query: str | None = None,
    config: PromptConfig | None = None,
) -> list[dict[str, str]]:
    """Chat messages that ask the model to rank `candidates` for a user.

    Args:
        history: The user's items, oldest first; only the newest `config.max_history` are shown.
        candidates: (label, item) pairs in retriever order; labels are short alphanumerics ("A", "AB").
        k: How many picks to ask for.
        query: Optional free-text request from the user.
        config: Prompt options; defaults to `PromptConfig()`.

    Returns:
        `[{"role": "system", ...}, {"role": "user", ...}]` (the system message is left out when a
        custom template renders it empty). The answer is expected to start with `ANSWER_PREFIX`.

    Raises:
        ConfigError: bad labels, `k` out of range, an item without a title, or a template error.
    """
    cfg = config or PromptConfig()
    cands = list(candidates)
    if not cands:
        raise ConfigError("`candidates` is empty: retrieval must return at least one candidate")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(cands):
        raise ConfigError(
            f"`k` must be between 1 and {len(cands)} (the number of candidates), got {k!r}"
        )
    rows, seen = [], set()
    for i, pair in enumerate(cands):
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise ConfigError(f"candidates[{i}] must be a (label, item) pair, got {type(pair).__name__}")
        label, item = pair
        if not isinstance(label, str) or not _LABEL_RE.fullmatch(label) or label in seen:
            raise ConfigError(
                f"candidates[{i}] label must be 1-8 letters/digits and unique (see default_labels), "
                f"got {label!r}"
            )
        seen.add(label)
        rows.append({"label": label, **_item_vars(item, f"candidates[{i}]", cfg)})
    variables = _common_vars(history, query, cfg)
    variables.update(candidates=rows, labels=[r["label"] for r in rows], k=k, compact=cfg.compact)
    return _render(RANK_TEMPLATE, variables, cfg)


def render_reason_messages(
    history: Sequence[Any] | None,
    item: Any,
    query: str | None = None,
    config: PromptConfig | None = None,
    facts: Sequence[str] | None = None,
) -> list[dict[str, str]]:
    """Chat messages that ask for one sentence on why the user would like `item`.

    Args:
        history: The user's items, oldest first; only the newest `config.max_history` are shown.
        item: The recommended item (its description is shown, cut to `max_description_chars`).
        query: Optional free-text request from the user.
        config: Prompt options; defaults to `PromptConfig()`.
        facts: The item's evidence, one sentence each (agent.ranking.evidence); the reason is asked to
            use only these. Sanitised like item text.

    Returns:
        `[{"role": "system", ...}, {"role": "user", ...}]`.

    Raises:
        ConfigError: the item has no title, or a template error.
    """
    cfg = config or PromptConfig()
    variables = _common_vars(history, query, cfg)
    variables["item"] = _item_vars(item, "item", cfg, description=True)
    variables["facts"] = [f for f in (clean_text(x, 300) for x in facts or ()) if f]
    return _render(REASON_TEMPLATE, variables, cfg)


@lru_cache(maxsize=16)
def _environment(template_dir: Path | None) -> ImmutableSandboxedEnvironment:
    # Loaded relative to the installed package, never the cwd. "builtin/..." always names the
    # packaged templates, so a user's rank.jinja can extend the packaged one without recursion.
    packaged = PackageLoader("reasonrec.prompts", "templates")
    loaders: list[Any] = [FileSystemLoader(str(template_dir))] if template_dir else []
    loaders += [packaged, PrefixLoader({"builtin": packaged})]
    return ImmutableSandboxedEnvironment(
        loader=ChoiceLoader(loaders),
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _render(name: str, variables: dict[str, Any], cfg: PromptConfig) -> list[dict[str, str]]:
    where = f"{cfg.template_dir}/{name}" if cfg.template_dir and (cfg.template_dir / name).is_file() else name
    try:
        template = _environment(cfg.template_dir).get_template(name)
        system = template.render(part="system", **variables).strip()
        user = template.render(part="user", **variables).strip()
    except Exception as e:  # syntax, undefined, sandbox, or a user template's own bug: all config
        raise ConfigError(f"prompt template {where!r} failed to render: {type(e).__name__}: {e}") from e
    if not user:
        raise ConfigError(f"prompt template {where!r} rendered an empty user message")
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": user}]
