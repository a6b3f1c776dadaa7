"""Conversational recommendation: message parsing, title resolution, and scripted multi-turn chats.

The scripted scenarios run the real stack (ML-100K rows, Chroma + MiniLM, SmolLM2 in scoring mode for
speed) and check every turn's recommendations against the catalogue metadata of the stated constraints.
"""

from __future__ import annotations

import statistics

import pytest
from helpers import chat_checks
from helpers.chat_checks import check_turn
from hypothesis import given, settings
from hypothesis import strategies as st

from reasonrec.agent.chat.dialogue import parse_message
from reasonrec.agent.chat.session import ChatConstraints, constraints_where, describe_constraints
from reasonrec.agent.chat.store import SessionStore
from reasonrec.agent.chat.titles import ItemRef, TitleIndex, pick_option
from reasonrec.errors import ConfigError, UnknownItemError, UnknownSessionError, UnknownUserError

chat_agent, store = chat_checks.chat_agent, chat_checks.store  # shared fixtures
ALIENS = ["183", "176", "665", "343"]  # Alien, Aliens, Alien 3, Alien: Resurrection
LAST = ["Alien", "Toy Story", "Heat", "Usual Suspects, The", "Batman"]


@pytest.fixture(scope="module")
def genres(ml100k):
    return sorted({g for it in ml100k.items.values() for g in it.genres})


@pytest.fixture(scope="module")
def titles(ml100k):
    return TitleIndex.from_items(ml100k.items)


# --- parsing (fast: rules over the real catalogue, no model) ----------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a funny sci-fi from the 80s", {"genres": ["Comedy", "Sci-Fi"], "year_min": 1980, "year_max": 1989}),
        ("something scary from the seventies", {"genres": ["Horror"], "year_min": 1970, "year_max": 1979}),
        ("kids movies from 1994", {"genres": ["Children's"], "year_min": 1994, "year_max": 1994}),
        ("romantic comedy before 1990", {"genres": ["Romance", "Comedy"], "year_max": 1989}),
        ("late 70s noir", {"genres": ["Film-Noir"], "year_min": 1976, "year_max": 1979}),
        ("westerns between 1950 and 1960", {"genres": ["Western"], "year_min": 1950, "year_max": 1960}),
        ("after 1995 please", {"year_min": 1996}),
        ("no horror", {"excluded_genres": ["Horror"]}),
        ("without horror, something with robots", {"excluded_genres": ["Horror"], "query": "something with robots"}),
        ("nothing scary, also funny", {"excluded_genres": ["Horror"], "genres": ["Comedy"], "additive": True}),
        ("I'd like a comedy", {"genres": ["Comedy"]}),
        ("something older", {"relative": "older"}),
        ("more recent ones", {"relative": "newer"}),
        ("not that one", {"rejected_positions": [0]}),
        ("not the second", {"rejected_positions": [1]}),
        ("drop the last one", {"rejected_positions": [4]}),
        ("not Heat", {"rejected_positions": [2]}),
        ("I've seen the usual suspects", {"rejected_positions": [3]}),
        ("I liked the first one", {"liked_positions": [0]}),
        ("shorter list", {"k_change": "shorter"}),
        ("top 3 please", {"k": 3}),
        ("3 westerns", {"k": 3, "genres": ["Western"]}),
        ("give me ten movies", {"k": 10}),
        ("show me more", {"more": True}),
        ("start over", {"reset": True}),
        ("a film by Hitchcock", {"query": "a film by Hitchcock"}),
        # issue 17: numbers that are no list length, negated bounds, genre words that are also titles
        ("I'm 12 years old and like animals", {"age": 12, "query": "like animals"}),
        ("nothing before 1990", {"year_min": 1990, "year_max": None}),
        ("no later than 1995", {"year_max": 1995, "year_min": None}),
        ("no war", {"excluded_genres": ["War"], "titles": []}),
        ("I don't mind horror", {"genres": ["Horror"]}),
        ("2 hours max", {"unsupported": ["running time"]}),
        ("quiero una comedia", {"language": "es", "genres": ["Comedy"]}),
    ],
)
def test_parse_message(text, expected, genres, titles):
    act = parse_message(text, genres, titles, LAST)
    for key, value in expected.items():
        assert getattr(act, key) == value, (key, act)
    untouched = {"genres": [], "excluded_genres": [], "rejected_positions": [], "k": None, "query": None}
    for key, empty in untouched.items():
        if key not in expected:
            assert getattr(act, key) == empty, (key, act)


@pytest.mark.parametrize(
    "text, polarity, options, rest",
    [
        ("more like Alien", "like", ALIENS, {}),
        ("more like Star Wars", "like", ["50"], {"genres": []}),  # not the War genre
        ("3 movies like Toy Story", "like", ["1"], {"k": 3}),
        ("something like the godfather but from the 90s", "like", ["127", "187"], {"year_min": 1990}),
        ("similar to Termnator", "like", ["195"], {}),  # fuzzy
        ("I loved Se7en", "like", ["11"], {}),  # the alternative title in parentheses
        ("more like Kids", "like", ["772"], {"genres": []}),  # a title, not the Children's genre
        ("not Alien 3", "dislike", ["665"], {"rejected_positions": []}),  # the longer reading beats "Alien"
        ("more like Termnator 2", "like", ["96"], {"k": None}),  # the sequel, never The Terminator (1984)
        ("more like Star Trek III", "like", ["229"], {"k": None}),
        ("more like Babe 2", "like", ["8"], {"k": None}),  # no such sequel: one option, to be confirmed
    ],
)
def test_title_references(text, polarity, options, rest, genres, titles):
    act = parse_message(text, genres, titles, LAST)
    assert len(act.titles) == 1, act
    assert act.titles[0].polarity == polarity
    assert [o.item_id for o in act.titles[0].match.options] == options
    for key, value in rest.items():
        assert getattr(act, key) == value


@pytest.mark.parametrize(
    "phrase, ids",
    [
        ("Alien", ALIENS),
        ("alien (1986)", ["176"]),
        ("The Usual Suspects", ["12"]),
        ("usual suspects, the", ["12"]),
        ("star trek", ["449", "228", "229", "230", "450", "227", "380", "222"]),
        ("Batman", ["403"]),  # exact title; "Batman Returns" is not a numbered sequel
        ("the shawshank redemption", ["64"]),
        ("no such film at all", []),
    ],
)
def test_title_index(phrase, ids, titles):
    assert [o.item_id for o in titles.resolve(phrase).options] == ids


def test_duplicate_catalogue_entries_resolve_to_one_option(ml100k, titles):
    dupes = [i for i, it in ml100k.items.items() if it.title == "Chasing Amy"]
    assert len(dupes) == 2
    match = titles.resolve("chasing amy")
    assert len(match.options) == 1 and sorted(titles.same_item(match.options[0])) == sorted(dupes)


@pytest.mark.parametrize(
    "answer, picked",
    [("the first one", "183"), ("Aliens", "176"), ("1992", "665"), ("2", "176"), ("#4", "343"), ("Alien 3", "665"),
     ("Alien (1979)", "183"), ("the last one", "343"), ("no horror please", None), ("the original", None)],
)  # fmt: skip
def test_pick_option(answer, picked, titles):
    options = titles.resolve("alien").options
    choice = pick_option(answer, options)
    assert (choice.item_id if choice else None) == picked


@pytest.mark.parametrize(
    "constraints, where, text",
    [
        (ChatConstraints(), None, "movies"),
        (ChatConstraints(genres=["Comedy"]), {"genre_Comedy": True}, "Comedy movies"),
        (
            ChatConstraints(genres=["Comedy"], excluded_genres=["Horror"], year_min=1980, year_max=1989),
            {"$and": [{"genre_Comedy": True}, {"genre_Horror": {"$ne": True}}, {"year": {"$gte": 1980}},
                      {"year": {"$lte": 1989}}]},
            "Comedy movies from the 1980s, without Horror",
        ),
        (ChatConstraints(year_max=1979), {"year": {"$lte": 1979}}, "movies from 1979 or earlier"),
    ],
)  # fmt: skip
def test_constraints_become_chroma_filters(constraints, where, text):
    assert constraints_where(constraints) == where
    assert describe_constraints(constraints) == text


_SMALL_INDEX = TitleIndex(
    [ItemRef(item_id="183", title="Alien", year=1979), ItemRef(item_id="176", title="Aliens", year=1986)]
)
_WORDS = st.sampled_from(["no", "not", "the", "second", "like", "alien", "funny", "80s", "before", "1990", "top", "3"])


@settings(max_examples=80, deadline=None)
@given(st.one_of(st.text(max_size=120), st.lists(_WORDS, max_size=12).map(" ".join)))
def test_parse_never_raises_and_keeps_to_catalogue_genres(text):
    genres = ["Comedy", "Horror", "Sci-Fi", "Western"]
    act = parse_message(text, genres, _SMALL_INDEX, LAST)
    assert set(act.genres) <= set(genres) and set(act.excluded_genres) <= set(genres)
    assert not set(act.genres) & set(act.excluded_genres)
    assert all(0 <= i < len(LAST) for i in act.rejected_positions + act.liked_positions)
    assert act.k is None or 1 <= act.k <= 50


# --- scripted conversations on the real stack -------------------------------------------------------------------


@pytest.mark.slow
def test_genre_and_decade_then_narrower_and_older(chat_agent, store):
    chat = chat_agent.chat_session(store=store)  # cold start: a new user, one sentence
    t1 = chat.send("a comedy from the 80s")
    assert t1.constraints.genres == ["Comedy"] and (t1.constraints.year_min, t1.constraints.year_max) == (1980, 1989)
    check_turn(t1, chat_agent, chat.state)
    assert "Comedy movies from the 1980s" in t1.reply and t1.recommendations.user_id is None
    t2 = chat.send("no romance")
    check_turn(t2, chat_agent, chat.state)
    assert t2.constraints.excluded_genres == ["Romance"]
    # "older" moves one step from the list shown: before its median year (issue 17), not before its oldest.
    shown = statistics.median_low(chat_agent.items[i].year for i in t2.recommendations.item_ids())
    t3 = chat.send("something older")
    check_turn(t3, chat_agent, chat.state)
    assert t3.constraints.year_max == shown - 1 and t3.constraints.year_min is None
    assert f"older: {shown - 1} or earlier (before {shown}, the middle of the last list)" in t3.reply
    assert not set(t3.recommendations.item_ids()) & set(t1.recommendations.item_ids() + t2.recommendations.item_ids())


@pytest.mark.slow
def test_more_like_a_title_for_a_new_user(chat_agent, store):
    chat = chat_agent.chat_session(store=store)
    t1 = chat.send("more like Star Wars, but no romance")
    assert chat.state.liked == ["50"] and t1.constraints.excluded_genres == ["Romance"]
    check_turn(t1, chat_agent, chat.state)
    assert "Star Wars" in t1.reply
    t2 = chat.send("3 westerns")
    check_turn(t2, chat_agent, chat.state, k=3)
    assert t2.constraints.genres == ["Western"] and t2.constraints.k == 3


@pytest.mark.slow
def test_two_successive_critiques_keep_the_rest_of_the_list(chat_agent, store):
    chat = chat_agent.chat_session(user_id="196", store=store)  # a dataset user: their history is the profile
    t1 = chat.send("a drama from the 90s")
    check_turn(t1, chat_agent, chat.state)
    first = t1.recommendations.item_ids()
    t2 = chat.send("not the second")
    check_turn(t2, chat_agent, chat.state)
    assert first[1] in chat.state.disliked and first[1] not in t2.recommendations.item_ids()
    assert len(set(first) & set(t2.recommendations.item_ids())) >= 2  # a critique, not a fresh list
    t3 = chat.send("shorter list, and not that one")
    check_turn(t3, chat_agent, chat.state, k=3)
    assert t2.recommendations.item_ids()[0] in chat.state.disliked
    assert t3.recommendations.user_id == "196"


@pytest.mark.slow
def test_a_rejected_item_never_comes_back(chat_agent, store):
    chat = chat_agent.chat_session(store=store)
    t1 = chat.send("a scary movie from the 70s")
    check_turn(t1, chat_agent, chat.state)
    rejected = [t1.recommendations.item_ids()[0]]
    t2 = chat.feedback(t1.recommendations.item_ids()[1], liked=False)
    rejected.append(t1.recommendations.item_ids()[1])
    assert t2.user_text.startswith("disliked: ") and len(t2.recommendations.items) == 5
    chat.send("not that one")
    rejected.append(t2.recommendations.item_ids()[0])
    # 10 horror films from the 70s, 3 rejected, 7 shown: "more" brings back shown ones (never rejected
    # ones) rather than dropping the filter; "any year" then widens it.
    more = chat.send("show me more")
    assert "Some earlier suggestions are back" in more.reply
    check_turn(more, chat_agent, chat.state)
    wider = chat.send("any year")
    assert wider.constraints.year_min is None and wider.constraints.year_max is None
    check_turn(wider, chat_agent, chat.state)
    for turn in (more, wider):
        assert not set(rejected) & set(turn.recommendations.item_ids())
    assert set(rejected) <= set(chat.state.disliked)
    assert [t.turn for t in chat.state.turns] == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_ambiguous_title_asks_then_takes_the_answer(chat_agent, store):
    chat = chat_agent.chat_session(store=store)
    t1 = chat.send("more like Alien")
    assert t1.recommendations is None and [o.item_id for o in t1.clarification] == ALIENS
    assert "Which 'alien' do you mean?" in t1.reply and "Aliens (1986)" in t1.reply
    t2 = chat.send("the 1986 one")
    assert chat.state.liked == ["176"] and chat.state.pending is None
    check_turn(t2, chat_agent, chat.state)
    t3 = chat.send("something like star trek")
    assert len(t3.clarification) == 8
    t4 = chat.send("no horror, and from the 80s")  # not a pick: the question is dropped, the message read
    assert chat.state.pending is None and t4.constraints.excluded_genres == ["Horror"]
    check_turn(t4, chat_agent, chat.state)


@pytest.mark.slow
def test_too_few_matches_shorten_the_list_and_none_relaxes(chat_agent, store):
    chat = chat_agent.chat_session(store=store)
    t1 = chat.send("film noir from the 50s")  # ML-100K has 2
    check_turn(t1, chat_agent, chat.state, k=2)
    assert t1.reply.startswith("Understood: Film-Noir, the 1950s. Only 2 unseen Film-Noir movies from the 1950s match.")
    t2 = chat.send("a western from the 1920s")  # none: the year range goes, the genre stays
    assert t2.relaxed == ["the year range"] and "so I dropped the year range" in t2.reply
    assert all("Western" in r.genres for r in t2.recommendations.items) and len(t2.recommendations.items) == 5


@pytest.mark.slow
def test_session_continues_after_a_restart(chat_agent, store):
    chat = chat_agent.chat_session(store=store)
    t1 = chat.send("a comedy from the 80s")
    first = t1.recommendations.item_ids()
    # A "restarted server": a new SessionStore and a new ChatSession on the same SQLite file (the agent is
    # reused only because loading another MiniLM and SmolLM2 would double the test's time).
    again = SessionStore(store.path)
    resumed = chat_agent.chat_session(chat.id, store=again)
    assert resumed.state.model_dump(exclude={"updated_at"}) == chat.state.model_dump(exclude={"updated_at"})
    t2 = resumed.send("not the first")
    assert t2.turn == 2 and first[0] in resumed.state.disliked and first[0] not in t2.recommendations.item_ids()
    check_turn(t2, chat_agent, resumed.state)
    assert [t.user_text for t in store.load(chat.id).turns] == ["a comedy from the 80s", "not the first"]
    again.close()


def test_caller_mistakes(chat_agent, store):
    with pytest.raises(UnknownSessionError, match="unknown chat session 'nope'"):
        chat_agent.chat_session("nope", store=store)
    with pytest.raises(UnknownUserError, match="unknown user '999999'"):
        chat_agent.chat_session(user_id="999999", store=store)
    chat = chat_agent.chat_session(user_id="196", store=store)
    with pytest.raises(ConfigError, match="`text` must be a non-empty message"):
        chat.send("   ")
    with pytest.raises(UnknownItemError, match="unknown `item_id` 'x1'"):
        chat.feedback("x1", liked=True)
    with pytest.raises(ConfigError, match="belongs to user '196'"):
        chat_agent.chat_session(chat.id, user_id="1", store=store)
    assert chat.state.turns == []  # failed calls left no turn


@pytest.mark.slow
def test_cli_chat_scripted_then_resumed_in_the_repl(chat_agent, tmp_path, monkeypatch):
    import re

    from typer.testing import CliRunner

    from reasonrec.agent.interfaces import cli

    monkeypatch.setattr(cli, "make_agent", lambda cfg: chat_agent)  # reuse the session's loaded agent
    db, runner = tmp_path / "cli.sqlite3", CliRunner()
    first = runner.invoke(cli.app, ["chat", "--sessions", str(db), "-k", "4", "-m", "more like Alien"])
    assert first.exit_code == 0, first.output
    assert "Which 'alien' do you mean?" in first.output and "2. Aliens (1986)" in first.output
    sid = re.search(r"session ([0-9a-f]{32})", first.output).group(1)
    repl = runner.invoke(
        cli.app, ["chat", "--sessions", str(db), "--session", sid], input="Aliens\n/dislike 1\n/like 9\n/quit\n"
    )
    assert repl.exit_code == 0, repl.output
    assert "Noted that you like Aliens (1986). Here are 4 movies" in repl.output and "Dropped" in repl.output
    assert "error:" in repl.output and "1 to 4" in repl.output  # /like 9: one line, and the chat went on
    state = SessionStore(db).load(sid)
    assert "176" in state.liked and len(state.disliked) == 1 and len(state.turns) == 3
