"""Loaders: real ML-100K rows (recbole's copy and the GroupLens format). Users' own files, good and
malformed, are in test_bad_input.py."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest

from reasonrec.errors import DataError, UnknownUserError
from reasonrec.retrieval import load_ml100k, natural_key, split_title_year
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
