"""Loaders: real ML-100K rows (recbole's copy and the GroupLens format), and users' own CSV / JSONL files."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from reasonrec.errors import DataError, UnknownUserError
from reasonrec.retrieval import (
    Item,
    load_catalogue,
    load_dataset,
    load_interactions,
    load_ml100k,
    natural_key,
    split_title_year,
)
from reasonrec.retrieval.loaders import ML100K_GENRES

RECBOLE_DIR = Path(next(iter(importlib.util.find_spec("recbole").submodule_search_locations)))
ML100K_DIR = RECBOLE_DIR / "dataset_example" / "ml-100k"


# --- ML-100K ---------------------------------------------------------------------------------------


def test_ml100k_sizes_and_hash(ml100k):
    assert ml100k.name == "ml-100k"
    assert len(ml100k.items) == 1682
    assert len(ml100k.interactions) == 100_000
    assert len(ml100k.users()) == 943
    assert ml100k.skipped == []
    raw = (ML100K_DIR / "ml-100k.item").read_bytes() + (ML100K_DIR / "ml-100k.inter").read_bytes()
    assert ml100k.sha256 == hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize(
    "item_id, title, year, genres",
    [
        ("1", "Toy Story", 1995, ("Animation", "Children's", "Comedy")),
        ("50", "Star Wars", 1977, ("Action", "Adventure", "Romance", "Sci-Fi", "War")),
        ("267", "unknown", None, ()),  # recbole's "unkonwn" row, normalised
        ("1412", "Land Before Time III: The Time of the Great Giving", 1995, ("Animation", "Children's")),
    ],
)
def test_ml100k_items(ml100k, item_id, title, year, genres):
    item = ml100k.items[item_id]
    assert (item.title, item.year, item.genres) == (title, year, genres)


def test_ml100k_histories_sorted_by_time_then_item_id(ml100k):
    raw = [line.split("\t") for line in (ML100K_DIR / "ml-100k.inter").read_text().splitlines()[1:]]
    expected_196 = sorted((float(t), natural_key(i), i) for u, i, _, t in raw if u == "196")
    assert ml100k.history("196") == [i for _, _, i in expected_196]
    ties = 0
    for rows in ml100k.histories.values():
        keys = [(r.timestamp, natural_key(r.item_id)) for r in rows]
        assert keys == sorted(keys)
        ties += sum(a[0] == b[0] for a, b in zip(keys, keys[1:], strict=False))
    assert ties > 0  # ML-100K has same-second ratings, so the tie-break is exercised
    with pytest.raises(UnknownUserError, match="unknown user '99999'"):
        ml100k.history("99999")


def test_grouplens_format_loads_the_same(tmp_path, ml100k):
    # Write the recbole rows back in the original GroupLens layout, then load that folder.
    lines = []
    for item in sorted(ml100k.items.values(), key=lambda it: natural_key(it.id)):
        title = f"{item.title} ({item.year})" if item.year else item.title
        date = f"01-Jan-{item.year}" if item.year else ""
        flags = [
            "1" if g in item.genres or (g == "unknown" and not item.genres) else "0" for g in ML100K_GENRES
        ]
        lines.append("|".join([item.id, title, date, "", "http://us.imdb.com/", *flags]))
    (tmp_path / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    (tmp_path / "u.data").write_text(
        "".join(f"{r.user_id}\t{r.item_id}\t{r.rating:g}\t{r.timestamp:.0f}\n" for r in ml100k.interactions)
    )
    loaded = load_ml100k(tmp_path)
    assert loaded.items == ml100k.items
    assert loaded.interactions == ml100k.interactions
    assert loaded.skipped == []
    assert loaded.sha256 != ml100k.sha256  # hashes the files actually read


def test_ml100k_folder_without_files(tmp_path):
    with pytest.raises(DataError, match="u.data \\+ u.item"):
        load_ml100k(tmp_path)


@pytest.mark.parametrize(
    "title, expected",
    [
        ("Toy Story (1995)", ("Toy Story", 1995)),
        (
            "Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)",
            ("Shanghai Triad (Yao a yao yao dao waipo qiao)", 1995),
        ),
        ("Seven (Se7en)", ("Seven (Se7en)", None)),
        ("unknown", ("unknown", None)),
    ],
)
def test_split_title_year(title, expected):
    assert split_title_year(title) == expected


# --- users' own files --------------------------------------------------------------------------------

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
