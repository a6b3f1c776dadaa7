"""Bad input (issue 7.1): every mistake gets a clear, typed error; ingestion keeps the good rows.

Covered end to end: malformed catalogue rows (missing title, duplicate ids, bad numbers, bad encodings,
too many fields, invalid JSON), empty and unusable files, interactions naming unknown items, duplicate
or non-Item records into the store, unknown users and items, empty history, k larger than the candidate
pool, wrong argument types through the Python API, an enormous history (cut to the model's context,
newest first), and the CLI: one readable line and exit status 2, never a traceback, and `reasonrec
index` reporting the skipped rows while indexing the good ones.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from reasonrec.errors import ConfigError, DataError, UnknownItemError, UnknownUserError
from reasonrec.retrieval import Item, ItemStore, load_catalogue, load_dataset, load_interactions

# --- loaders: malformed rows are skipped with a reason, good rows kept --------------------------------

CATALOGUE_CSV = (
    b"id,title,year,genres,description,director\n"
    b"1,Heat,1995,Action|Crime,A heist.,Michael Mann\n"
    b"2,,1990,Drama,,\n"  # line 3: missing title
    b"1,Heat again,1995,,,\n"  # line 4: duplicate id
    b"3,Alien,nineteen79,Horror,,\n"  # line 5: bad year
    b'4,"Blade Runner",1982,"Sci-Fi, Thriller","Replicants,\nin the rain.",Ridley Scott\n'  # lines 6-7
    b"5,Brazil,1985,Sci-Fi,,Terry Gilliam,extra\n"  # line 8: too many fields
    b"6,Am\xe9lie,2001,Comedy,,\n"  # line 9: latin-1 byte, not UTF-8
    b"\n"
    b"7,Am\xc3\xa9lie,2001,Comedy;Romance,,Jean-Pierre Jeunet\n"  # line 11
)


def test_catalogue_csv_keeps_good_rows_and_explains_bad_ones(tmp_path):
    f = tmp_path / "films.csv"
    f.write_bytes(CATALOGUE_CSV)
    items, skipped = load_catalogue(f)
    assert list(items) == ["1", "4", "7"]
    assert items["1"] == Item(
        id="1",
        title="Heat",
        year=1995,
        genres=("Action", "Crime"),
        description="A heist.",
        metadata={"director": "Michael Mann"},
    )
    assert items["4"].genres == ("Sci-Fi", "Thriller")
    assert items["4"].description == "Replicants,\nin the rain."
    assert items["7"].title == "Amélie"
    expected = [
        (3, "missing title"),
        (4, "duplicate id '1' (first on line 2)"),
        (5, "bad year 'nineteen79'"),
        (8, "expected 6 fields"),
        (9, "not valid UTF-8"),
    ]
    by_line = {int(s.split(":")[1]): s for s in skipped}
    assert sorted(by_line) == [line for line, _ in expected]
    for line, reason in expected:
        assert by_line[line].startswith(f"{f}:{line}: ")
        assert reason in by_line[line]


def test_catalogue_jsonl(tmp_path):
    f = tmp_path / "films.jsonl"
    rows = [
        json.dumps({"id": 10, "title": "Heat", "genres": ["Action", "Crime"], "year": 1995, "rating": 4.5}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"id": "11", "title": "  "}),
        json.dumps({"id": "12", "title": "Up", "year": 2009.5}),
        json.dumps({"id": "13", "title": "Up", "genres": "Animation, Family", "tags": ["x"], "note": None}),
    ]
    f.write_text("\n".join(rows) + "\n")
    items, skipped = load_catalogue(f)
    assert list(items) == ["10", "13"]
    assert items["10"].metadata == {"rating": 4.5}
    assert items["13"].genres == ("Animation", "Family") and items["13"].metadata == {}
    reasons = [s.split(": ", 1)[1] for s in skipped]
    assert [s.split(":")[1] for s in skipped] == ["2", "3", "4", "5"]
    assert reasons[0].startswith("invalid JSON")
    assert reasons[1] == "expected a JSON object"
    assert reasons[2] == "missing title"
    assert reasons[3].startswith("bad year 2009.5")


def test_interactions_and_dataset(tmp_path):
    cat = tmp_path / "films.csv"
    cat.write_bytes(CATALOGUE_CSV)
    inter = tmp_path / "events.csv"
    inter.write_text(
        "user_id,item_id,timestamp,rating\n"
        "u1,1,100,4\n"
        "u1,4,2024-01-01T00:00:00Z,\n"  # ISO time, no rating
        "u1,99,101,3\n"  # line 4: unknown item
        "u2,7,yesterday,5\n"  # line 5: bad timestamp
        "u2,7,50,five\n"  # line 6: bad rating
        "u2,7,50,5\n"
    )
    rows, skipped = load_interactions(inter, load_catalogue(cat)[0])
    assert [(r.user_id, r.item_id, r.rating) for r in rows] == [
        ("u1", "1", 4.0),
        ("u1", "4", None),
        ("u2", "7", 5.0),
    ]
    assert rows[1].timestamp == 1704067200.0
    assert [s.split(":")[1] for s in skipped] == ["4", "5", "6"]
    assert "unknown item '99'" in skipped[0] and "bad timestamp" in skipped[1] and "bad rating" in skipped[2]

    data = load_dataset(cat, inter)
    assert data.name == "films"
    assert data.history("u1") == ["1", "4"]
    assert len(data.skipped) == 5 + 3
    assert data.sha256 == hashlib.sha256(cat.read_bytes() + inter.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("empty.csv", b"", "is empty"),
        ("blank.jsonl", b"  \n\n", "is empty"),
        ("header_only.csv", b"id,title\n", "has no valid row"),
        ("all_bad.jsonl", b'{"id": "1"}\n{"title": "x"}\n', "has no valid row.*missing title"),
        ("no_title.csv", b"id,name\n1,Heat\n", "header lacks column\\(s\\) title"),
        ("films.txt", b"id,title\n1,Heat\n", "unsupported file type '.txt'"),
        ("films.parquet", b"PAR1", "use .csv, .tsv or .jsonl"),
    ],
)
def test_unusable_catalogue_raises(tmp_path, name, content, match):
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(DataError, match=match) as e:
        load_catalogue(f)
    assert str(f) in str(e.value)


def test_missing_file_and_unusable_interactions(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_catalogue(tmp_path / "nope.csv")
    items = {"1": Item(id="1", title="Heat")}
    f = tmp_path / "events.jsonl"
    f.write_text('{"user_id": "u", "item_id": "2", "timestamp": 1}\n')
    with pytest.raises(DataError, match="no valid row.*unknown item '2'"):
        load_interactions(f, items)


# --- the store ---------------------------------------------------------------------------------------


def test_upsert_rejects_duplicates_and_non_items(retrieval_config, embedder, ml100k):
    store = ItemStore(retrieval_config.model_copy(update={"collection": "bad-input"}), embedder)
    with pytest.raises(DataError, match="duplicate item id '1'"):
        store.upsert([ml100k.items["1"], ml100k.items["1"]])
    with pytest.raises(DataError, match="expects Item objects"):
        store.upsert([{"id": "1"}])
    assert store.count() == 0 and store.query(text="x", n=5) == []


# --- the Python API: wrong values and wrong types are typed errors that say what to do ---------------

API_CASES = [
    ("unknown-user", {"user_id": "999999"}, UnknownUserError, "unknown user '999999'"),
    ("empty-history", {"history": []}, DataError, "non-empty `history`"),
    ("nothing", {}, DataError, "give a `user_id`"),
    ("unknown-item", {"history": ["50", "no-such-item"]}, UnknownItemError, "no-such-item"),
    ("k-over-pool", {"user_id": "196", "k": 5000}, DataError, r"`k` is 5000 but only \d+ unseen items match; lower k"),
    ("k-over-filter", {"user_id": "196", "k": 30, "where": {"genre_Film-Noir": True}}, DataError, "the filter"),
    ("k-zero", {"user_id": "196", "k": 0}, ConfigError, "`k` must be an integer >= 1, got 0"),
    ("k-str", {"user_id": "196", "k": "5"}, ConfigError, "got '5'"),
    ("k-bool", {"user_id": "196", "k": True}, ConfigError, "got True"),
    ("k-float", {"user_id": "196", "k": 2.5}, ConfigError, "got 2.5"),
    ("history-str", {"history": "50,172"}, ConfigError, r"split it: \['50', '172'\]"),
    ("history-int", {"history": 50}, ConfigError, "`history` must be a list"),
    ("query-int", {"history": ["50"], "query": 123}, ConfigError, "`query` must be a string"),
    ("user-list", {"user_id": ["196"]}, ConfigError, "a user id must be a str or an int"),
    ("exclude-str", {"user_id": "196", "exclude": "50"}, ConfigError, "`exclude` must be a list"),
    ("where-str", {"user_id": "196", "where": "Comedy"}, ConfigError, "`where` must be a non-empty dict"),
    ("where-bad-op", {"user_id": "196", "where": {"year": {"$bad": 1}}}, ConfigError, "invalid `where` filter"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_recommend_rejects_bad_arguments(agent, kwargs, error, match):
    with pytest.raises(error, match=match) as e:
        agent.recommend(**kwargs)
    assert "\n" not in str(e.value) and e.value.http_status in (400, 404, 409)  # one line; a 4xx (409: too few items)


@pytest.mark.parametrize(
    ("history", "candidates", "k", "error", "match"),
    [
        (["50"], ["1", "2"], 3, ConfigError, r"`k` must be <= the number of candidates \(2\), got 3"),
        (["50"], ["1", "1"], 1, ConfigError, "candidate ids must be distinct"),
        (["50"], ["1", "zzz"], 1, UnknownItemError, "zzz"),
        (["nope"], ["1", "2"], 1, UnknownItemError, "nope"),
    ],
)
def test_rank_rejects_bad_arguments(agent, history, candidates, k, error, match):
    with pytest.raises(error, match=match):
        agent.rank(history, candidates, k)


def test_recommend_many_length_mismatch(agent):
    with pytest.raises(ConfigError, match="same length"):
        agent.recommend_many(["1", "2"], histories=[None])
    with pytest.raises(ConfigError, match="`user_ids` must be a list"):
        agent.recommend_many("196")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"ranker": {"k": 0}}, r"ranker.k: `k` must be >= 1, got 0"),
        ({"ranker": {"mode": "magic"}}, "ranker.mode"),
        ({"retrieval": {"n_candidats": 5}}, "retrieval.n_candidats: unknown option"),
        ({"prompt": {"max_history": -1}}, "between 0 and 10000"),
        ({"retrieval": {"chroma_url": "localhost:8000"}}, "must look like http://HOST:PORT"),
    ],
)
def test_bad_config_values(data, match):
    from reasonrec.agent.config import AgentConfig

    with pytest.raises(ConfigError, match=match):
        AgentConfig.build(**data)


# --- an enormous history: the prompt keeps the newest items that fit the model's context ---------------


def _history_5000() -> list[str]:
    """5,000 interactions, oldest first: 4,000 re-watches of items 1-800, then 1,000 of items 801-1300."""
    return [str(1 + i % 800) for i in range(4000)] + [str(801 + i % 500) for i in range(1000)]


def _prompts_seen(lm, agent, history: list[str]) -> tuple[list[str], list[int]]:
    """Recommend for `history` and return every full prompt the model was given (decoded) and its length."""
    texts, lengths = [], []

    def record(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None or ids.shape[1] == 1:
            return  # a decode step: its position is the prompt's length plus the answer so far
        # Rankers may cache a shared prefix and feed the rest after it: count the cached positions too.
        cache = kwargs.get("cache", kwargs.get("past_key_values"))  # transformers 5 renamed it
        cached = cache.get_seq_length() if cache is not None and hasattr(cache, "get_seq_length") else 0
        lengths.append(int(cached) + ids.shape[1])
        texts.append(lm.tokenizer.decode(ids[0], skip_special_tokens=True))

    handle = lm.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        recs = agent.recommend(history=history, k=3)
    finally:
        handle.remove()
    assert len(recs.items) == 3 and not set(recs.item_ids()) & set(history)
    return texts, lengths


@pytest.mark.parametrize(("mode", "max_history"), [("generative", 10), ("generative", 10_000), ("hybrid", 10_000)])
def test_enormous_history_is_cut_to_the_context_newest_first(
    ml100k, tiny_random_lm, indexed_store, retrieval_config, mode, max_history
):
    """The tiny model reads 2,048 positions: every prompt fits with its answer, and shows the newest items."""
    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.config import AgentConfig
    from reasonrec.prompts import clean_text

    cfg = AgentConfig.build(
        retrieval=retrieval_config.model_dump(),
        prompt={"max_history": max_history, "domain": "movie"},
        ranker={"mode": mode, "constrained": False, "max_new_tokens": 8, "reason_max_new_tokens": 4},
    )
    agent = RecommenderAgent(cfg, dataset=ml100k, model=tiny_random_lm)
    hist = _history_5000()
    texts, lengths = _prompts_seen(tiny_random_lm, agent, hist)
    limit = tiny_random_lm.model.config.max_position_embeddings
    answer = 8 if mode == "generative" else 4
    assert lengths and max(lengths) + answer <= limit, lengths
    titles = [clean_text(ml100k.items[i].title, cfg.prompt.max_title_chars) for i in hist]
    if mode == "generative":  # the rank prompt: "History, oldest first: a; b; c."
        rank = next(t for t in texts if "Candidates:" in t)
        shown = rank.split("History, oldest first: ", 1)[1].split("\n", 1)[0]
        assert shown.endswith("; ".join(titles[-5:]) + ".")  # the newest items, in order, end the line
        n_shown = shown.count("; ") + 1
        assert shown == "; ".join(titles[-n_shown:]) + "."
        assert n_shown == 10 if max_history == 10 else 50 < n_shown < 1000  # cut by the budget, not the config
    else:  # hybrid's reason prompts: one "- title (year) — genres" line per history item
        reasons = [t for t in texts if "Recommended movie:" in t]
        assert reasons, texts
        for text in reasons:
            lines = [li[2:] for li in text.split("\n") if li.startswith("- ")]
            assert 50 < len(lines) < 1000 and lines[-1].startswith(titles[-1])


def test_fit_history_keeps_the_newest_that_fit():
    from reasonrec.prompts import PromptConfig, render_rank_messages
    from reasonrec.prompts.budget import context_limit, fit_history

    def count(messages):
        return sum(len(m["content"].split()) for m in messages)

    history = [Item(id=str(i), title=f"title{i}") for i in range(1000)]
    cands = [("A", Item(id="x", title="candidate"))]
    cfg = PromptConfig(max_history=10_000)

    def render(h):
        return render_rank_messages(h, cands, 1, config=cfg)

    assert fit_history(history, render, count, 10**9, 10_000) == 1000
    assert fit_history(history, render, count, 10**9, 7) == 7
    n = fit_history(history, render, count, 400, 10_000)
    assert 0 < n < 1000
    assert count(render(history[-n:])) <= 400 < count(render(history[-(n + 1) :]))  # the most that fit
    with pytest.raises(ConfigError, match="lower `retrieval.n_candidates`"):
        fit_history(history, render, count, 5, 10_000)
    assert context_limit(int(1e30), 8192) == 8192 and context_limit(512, 8192) == 512
    assert context_limit(None, None) is None and context_limit(int(1e30), None) is None


# --- the CLI: one readable line, exit status 2; ingestion reports skipped rows -------------------------


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the console entry point in-process (what `reasonrec ...` runs) and return (status, out, err)."""
    from reasonrec.agent.interfaces.cli import main

    monkeypatch.setattr("sys.argv", ["reasonrec", *args])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as e:
        main()
        raise SystemExit(0)  # typer's standalone mode normally exits itself
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


@pytest.fixture
def session_config(tmp_path, indexed_store, retrieval_config):
    """A --config file that points the CLI at the session's indexed collection (no re-indexing)."""
    f = tmp_path / "agent.json"
    f.write_text(json.dumps({"retrieval": json.loads(retrieval_config.model_dump_json())}))
    return str(f)


def test_cli_index_reports_skipped_rows_and_keeps_the_good_ones(tmp_path, monkeypatch, capsys, embedder):
    from reasonrec.retrieval import RetrievalConfig

    cat, inter = tmp_path / "films.csv", tmp_path / "events.csv"
    cat.write_bytes(CATALOGUE_CSV)
    inter.write_text("user_id,item_id,timestamp\nu1,1,100\nu1,4,101\nu1,99,102\n")
    store_dir = tmp_path / "store"
    code, _, err = _cli(monkeypatch, capsys, "index", "--dataset", f"{cat},{inter}", "--store", str(store_dir))
    assert code == 0, err
    lines = [li for li in err.splitlines() if "rows skipped" in li]
    assert len(lines) == 1, err  # one line, every reason on it
    assert lines[0].startswith("6 rows skipped: ") and lines[0].endswith("(and 1 more)")  # 5 shown, 1 counted
    for reason in ("missing title", "duplicate id '1'", "bad year 'nineteen79'", "expected 6 fields", "UTF-8"):
        assert reason in lines[0]
    store = ItemStore(RetrievalConfig(persist_dir=store_dir, collection="films"), embedder)
    assert store.ids() == ["1", "4", "7"]  # exactly the good rows


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["index", "--dataset", "{empty},{empty}"], "is empty"),
        (["recommend", "--user", "196", "-k", "5000", "--config", "{config}"], "`k` is 5000 but only"),
        (["recommend", "--history", "50,no-such-item", "--config", "{config}"], "no-such-item"),
        (["recommend", "--history", "50", "--config", "{bad_config}"], "ranker.k: `k` must be >= 1"),
        (["index", "--chroma-url", "http://127.0.0.1:9", "--config", "{config}"], "cannot open Chroma"),
        (["recommend", "--user", "196", "--model", "/no/such/model", "--config", "{config}"], "has no config.json"),
    ],
    ids=["empty-file", "k-over-pool", "unknown-item", "bad-config-value", "chroma-down", "missing-model"],
)
def test_cli_mistakes_are_one_line(tmp_path, monkeypatch, capsys, session_config, args, fragment):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"ranker": {"k": 0}}))
    args = [a.format(empty=empty, config=session_config, bad_config=bad) for a in args]
    code, out, err = _cli(monkeypatch, capsys, *args)
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    lines = [li for li in err.splitlines() if li.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0]
