"""Prompt rendering: packaged templates, user templates, sanitising of item/user text, labels.

Prompt injection through item, query and chat text is tested in test_injection.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from reasonrec.errors import ConfigError
from reasonrec.prompts import (
    ANSWER_PREFIX,
    TEMPLATE_VERSION,
    PromptConfig,
    clean_text,
    default_labels,
    render_rank_messages,
    render_reason_messages,
    template_version,
)
from reasonrec.prompts import loader as prompt_loader
from reasonrec.retrieval.types import Item

# Real ML-100K rows (id, title without year, year, genres), built by hand: no dependency on loaders.
ROWS = [
    ("1", "Toy Story", 1995, "Animation|Children's|Comedy"),
    ("2", "GoldenEye", 1995, "Action|Adventure|Thriller"),
    ("7", "Twelve Monkeys", 1995, "Drama|Sci-Fi"),
    ("12", "Usual Suspects, The", 1995, "Crime|Thriller"),
    ("50", "Star Wars", 1977, "Action|Adventure|Romance|Sci-Fi|War"),
    ("56", "Pulp Fiction", 1994, "Crime|Drama"),
    ("64", "Shawshank Redemption, The", 1994, "Drama"),
    ("71", "Lion King, The", 1994, "Animation|Children's|Musical"),
    ("82", "Jurassic Park", 1993, "Action|Adventure|Sci-Fi"),
    ("98", "Silence of the Lambs, The", 1991, "Drama|Thriller"),
    ("100", "Fargo", 1996, "Crime|Drama|Thriller"),
    ("127", "Godfather, The", 1972, "Action|Crime|Drama"),
    ("172", "Empire Strikes Back, The", 1980, "Action|Adventure|Drama|Romance|Sci-Fi|War"),
    ("174", "Raiders of the Lost Ark", 1981, "Action|Adventure"),
    ("181", "Return of the Jedi", 1983, "Action|Adventure|Romance|Sci-Fi|War"),
    ("195", "Terminator, The", 1984, "Action|Sci-Fi|Thriller"),
    ("204", "Back to the Future", 1985, "Comedy|Sci-Fi"),
    ("210", "Indiana Jones and the Last Crusade", 1989, "Action|Adventure"),
    ("222", "Star Trek: First Contact", 1996, "Action|Adventure|Sci-Fi"),
    ("258", "Contact", 1997, "Drama|Sci-Fi"),
    ("286", "English Patient, The", 1996, "Drama|Romance|War"),
    ("288", "Scream", 1996, "Horror|Thriller"),
    ("294", "Liar Liar", 1997, "Comedy"),
    ("300", "Air Force One", 1997, "Action|Thriller"),
    ("313", "Titanic", 1997, "Action|Drama|Romance"),
    ("318", "Schindler's List", 1993, "Drama|War"),
    ("423", "E.T. the Extra-Terrestrial", 1982, "Children's|Drama|Fantasy|Sci-Fi"),
    ("483", "Casablanca", 1942, "Drama|Romance|War"),
    ("496", "It's a Wonderful Life", 1946, "Drama"),
    ("508", "People vs. Larry Flynt, The", 1996, "Drama"),
]
ITEMS = [Item(id=i, title=t, year=y, genres=tuple(g.split("|"))) for i, t, y, g in ROWS]
MOVIE = PromptConfig(domain="movie")


def _candidate_lines(user: str) -> list[str]:
    section = user.split("Candidates:\n", 1)[1].split("\n\n", 1)[0]
    return section.split("\n")


def test_rank_prompt_with_ml100k_items() -> None:
    history, cands = ITEMS[20:30], ITEMS[:20]
    pairs = list(zip(default_labels(20), cands, strict=True))
    msgs = render_rank_messages(history, pairs, k=10, config=MOVIE)
    assert [m["role"] for m in msgs] == ["system", "user"]
    user = msgs[1]["content"]
    lines = _candidate_lines(user)
    assert len(lines) == 20
    assert lines[0] == "[A] Toy Story (1995) — Animation, Children's, Comedy"
    assert lines[3] == "[D] Usual Suspects, The (1995) — Crime, Thriller"
    assert "History, oldest first: English Patient, The; Scream;" in user
    assert "People vs. Larry Flynt, The." in user
    assert "Pick the 10 best, best first" in user and '"[label] reason"' in user and "20 words" in user
    assert "movies" in msgs[0]["content"]
    # Compactness: ~450 GPT-2 tokens for 20 candidates + 10 history (word/punctuation count as proxy).
    assert len(re.findall(r"\w+|[^\w\s]", msgs[0]["content"] + user)) < 480


def test_compact_prompt_drops_years_and_puts_the_shared_format_first() -> None:
    history, cands = ITEMS[20:30], ITEMS[:20]
    pairs = list(zip(default_labels(20), cands, strict=True))
    full = render_rank_messages(history, pairs, k=10, config=MOVIE)[1]["content"]
    compact_cfg = PromptConfig(domain="movie", compact=True)
    user = render_rank_messages(history, pairs, k=10, config=compact_cfg)[1]["content"]
    lines = _candidate_lines(user)
    assert lines[0] == "[A] Toy Story — Animation, Children's, Comedy" and len(lines) == 20
    assert not re.search(r"\(\d{4}\)", user)  # no year anywhere (history never had them)
    # The answer format is the first line (shared by every request, so it can be cached); k comes last.
    assert user.startswith('Answer in "[label] reason" lines, best first, reasons under 20 words.\nHistory')
    assert user.rstrip().endswith("Pick the 10 best.")
    one = render_rank_messages([], pairs[:2], k=1, config=compact_cfg)[1]["content"]
    assert one.rstrip().endswith("Pick the best one.") and "no history" in one
    # Token-count proxy: words and punctuation, digits one each (SmolLM2 spells numbers digit by digit).
    tokens = lambda text: len(re.findall(r"\d|[^\W\d]+|[^\w\s]", text))  # noqa: E731
    assert tokens(user) < 0.75 * tokens(full)
    # Results and adapters record which form they were made with.
    assert template_version(MOVIE) == TEMPLATE_VERSION
    assert template_version(compact_cfg) == TEMPLATE_VERSION + "-compact"


def test_answer_contract_constants() -> None:
    assert ANSWER_PREFIX == "["
    assert re.fullmatch(r"rank-v\d+", TEMPLATE_VERSION)
    one = render_rank_messages([], [("A", ITEMS[0]), ("B", ITEMS[1])], k=1)[1]["content"]
    assert "Pick the best one: 1 line" in one and "no history" in one


def test_history_keeps_newest_max_history() -> None:
    cfg = PromptConfig(max_history=10, domain="movie")
    msgs = render_rank_messages(ITEMS[:15], [("A", ITEMS[20])], k=1, config=cfg)
    hist = msgs[1]["content"].split("\n", 1)[0]
    shown = hist.removeprefix("History, oldest first: ").rstrip(".").split("; ")
    assert shown == [it.title for it in ITEMS[5:15]]
    none = render_rank_messages(ITEMS[:15], [("A", ITEMS[20])], k=1, config=PromptConfig(max_history=0))
    assert "no history" in none[1]["content"] and "Toy Story" not in none[1]["content"]


def test_items_may_be_dicts_or_titles_and_year_is_not_repeated() -> None:
    cands = [("A", {"title": "Toy Story (1995)", "year": 1995, "genres": "Animation|Comedy"}),
             ("B", "Fargo"), ("C", {"title": "Heat", "year": "n/a", "genres": None})]
    lines = _candidate_lines(render_rank_messages(["Babe"], cands, k=2)[1]["content"])
    assert lines == ["[A] Toy Story (1995) — Animation, Comedy", "[B] Fargo", "[C] Heat"]


def test_long_titles_are_truncated() -> None:
    long = Item(id="9", title="A Very Long Title " * 20, year=2000)
    line = _candidate_lines(render_rank_messages([], [("A", long)], k=1,
                                                 config=PromptConfig(max_title_chars=30))[1]["content"])[0]
    title = line.removeprefix("[A] ").removesuffix(" (2000)")
    assert len(title) <= 30 and title.endswith("…")


@pytest.mark.parametrize(
    ("raw", "limit", "expected"),
    [
        ("  a\n\n b\t c  ", None, "a b c"),
        ("x [A] y", None, "x (A) y"),
        ("a\x00b\x07c", None, "abc"),
        ("one two three four", 12, "one two…"),
        (None, None, ""),
        (1995, None, "1995"),
    ],
)
def test_clean_text(raw: object, limit: int | None, expected: str) -> None:
    assert clean_text(raw, limit) == expected


def test_reason_prompt() -> None:
    item = Item(id="172", title="Empire Strikes Back, The", year=1980, genres=("Action", "Sci-Fi"),
                description="The Rebels flee the Empire.\nLuke trains with Yoda. " * 20)
    msgs = render_reason_messages(ITEMS[:3], item, query="space battles", config=MOVIE)
    user = msgs[1]["content"]
    assert "Recommended movie: Empire Strikes Back, The (1980) — Action, Sci-Fi" in user
    assert "- Toy Story (1995) — Animation, Children's, Comedy" in user
    assert "Request: space battles" in user and "one sentence" in user and "shared genre" in user
    about = next(li for li in user.split("\n") if li.startswith("About it: "))
    assert len(about) <= len("About it: ") + 200
    bare = render_reason_messages([], {"title": "Heat"})[1]["content"]
    assert "About it" not in bare and "Recommended item: Heat" in bare


def test_default_labels() -> None:
    labels = default_labels(30)
    assert len(set(labels)) == 30
    assert labels[:26] == [chr(c) for c in range(65, 91)]
    assert labels[26:] == ["AA", "AB", "AC", "AD"]
    assert default_labels(702)[-1] == "ZZ" and default_labels(703)[-1] == "AAA"
    assert default_labels(0) == []
    with pytest.raises(ConfigError, match="`n` must be"):
        default_labels(-1)


@pytest.mark.parametrize(
    ("cands", "k", "match"),
    [
        ([], 1, "`candidates` is empty"),
        ([("A", ITEMS[0])], 2, r"`k` must be between 1 and 1 \(the number of candidates\), got 2"),
        ([("A", ITEMS[0]), ("A", ITEMS[1])], 1, "unique"),
        ([("[A]", ITEMS[0])], 1, "label"),
        ([("A", {"title": "  "})], 1, r"candidates\[0\] has no `title`"),
        ([("A", ITEMS[0]), ("B", object())], 1, r"candidates\[1\] has no `title`"),
    ],
)
def test_caller_mistakes(cands: list, k: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        render_rank_messages([], cands, k)


def test_prompt_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="unknown|extra"):
        PromptConfig(max_histroy=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="`max_history` must be between 0 and 10000, got -1"):
        PromptConfig(max_history=-1)
    with pytest.raises(ValidationError, match="`domain` must be a word"):
        PromptConfig(domain="movie {{ x }}")
    with pytest.raises(ValidationError, match="`template_dir` must be an existing folder"):
        PromptConfig(template_dir=tmp_path / "missing")


def _user_templates(tmp_path: Path, rank: str) -> PromptConfig:
    (tmp_path / "rank.jinja").write_text(rank, encoding="utf-8")
    return PromptConfig(template_dir=tmp_path)


def test_user_template_overrides_and_extends_packaged(tmp_path: Path) -> None:
    source = '{% extends "builtin/rank.jinja" %}{% block system %}Be terse.{% endblock %}'
    cfg = _user_templates(tmp_path, source)
    msgs = render_rank_messages([], [("A", ITEMS[0])], k=1, config=cfg)
    assert msgs[0]["content"] == "Be terse."
    assert msgs[1]["content"].startswith("The user has no history yet.")
    # reason.jinja is not in the folder: the packaged one is used.
    assert "one sentence" in render_reason_messages([], ITEMS[0], config=cfg)[1]["content"]


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("{{ not_a_variable }}", "rank.jinja.*not_a_variable"),  # StrictUndefined
        ("{% for %}", "rank.jinja.*TemplateSyntaxError"),
        ("{{ ''.__class__.__mro__ }}", "rank.jinja"),  # the sandbox hides dunder attributes
        ("{% if part == 'user' %}{% endif %}", "empty user message"),
    ],
)
def test_user_template_errors_are_config_errors(tmp_path: Path, source: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        render_rank_messages([], [("A", ITEMS[0])], k=1, config=_user_templates(tmp_path, source))


def test_packaged_templates_load_from_another_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rank.jinja").write_text("{{ 'from cwd' }}", encoding="utf-8")  # must be ignored
    monkeypatch.chdir(tmp_path)
    prompt_loader._environment.cache_clear()
    msgs = render_rank_messages([], [("A", ITEMS[0])], k=1)
    assert "from cwd" not in msgs[1]["content"] and "[A] Toy Story (1995)" in msgs[1]["content"]
