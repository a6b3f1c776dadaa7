"""Load catalogues and interactions: MovieLens-100K (recbole's copy or GroupLens files) or your own CSV/JSONL.

Every loader validates at the edge: a malformed row (missing title, duplicate id, bad number, bad
encoding) is skipped and reported as "file:line: reason" in the returned `skipped` list, good rows are
kept; a missing or empty file, or one with no valid row, raises `DataError` naming the file and the fix.

MovieLens is read from where it is installed (the `recbole` package ships ml-100k) or from a folder the
user points at; it is never copied into this repository (its licence forbids redistribution).

A parse is kept between runs (`dataset_cache.py`), keyed by the files' bytes and this code (with `readers.py`, which
splits and types the rows).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from reasonrec.errors import DataError

from . import readers
from .dataset_cache import Parsed, cached_dataset
from .readers import Row
from .types import Dataset, Interaction, Item

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_CATALOGUE_FIELDS = "id, title, optional year, genres (a list, or a string split by | or ,), description"
_INTERACTION_FIELDS = "user_id, item_id, timestamp (number or ISO date), optional rating"
_CATALOGUE_COLUMNS = (("id", "item_id"), ("title",))  # each: accepted spellings of a required column
_INTERACTION_COLUMNS = (("user_id",), ("item_id",), ("timestamp",))
_TITLE_YEAR = re.compile(r"^(.*\S)\s+\((\d{4})\)$")


def split_title_year(title: str) -> tuple[str, int | None]:
    """Split "Toy Story (1995)" into ("Toy Story", 1995); titles without a trailing year are kept."""
    m = _TITLE_YEAR.match(title.strip())
    return (m.group(1), int(m.group(2))) if m else (title.strip(), None)


def load_ml100k(path: str | Path | None = None) -> Dataset:
    """Load MovieLens-100K: 943 users, 1682 movies, 100,000 ratings.

    Args:
        path: None reads the copy shipped inside the installed `recbole` package (its atomic files
            `ml-100k.inter` / `ml-100k.item`); a folder reads either those atomic files or the original
            GroupLens files `u.data` / `u.item`.

    Returns:
        Dataset "ml-100k" whose `sha256` covers the raw bytes of the two files read.

    Raises:
        DataError: recbole is not installed, the folder holds neither format, or a file is unusable.
    """
    if path is None:
        spec = importlib.util.find_spec("recbole")  # not imported: recbole's import pulls in heavy deps
        if spec is None or not spec.submodule_search_locations:
            raise DataError(
                "ML-100K is read from the `recbole` package, which is not installed: `pip install "
                "recbole`, or pass the folder of the GroupLens ml-100k download (u.data, u.item)"
            )
        folder = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k"
    else:
        folder = Path(path).expanduser()
    atomic = (folder / "ml-100k.item").is_file() and (folder / "ml-100k.inter").is_file()
    if atomic:
        item_file, inter_file = folder / "ml-100k.item", folder / "ml-100k.inter"
    elif (folder / "u.item").is_file() and (folder / "u.data").is_file():
        item_file, inter_file = folder / "u.item", folder / "u.data"
    else:
        raise DataError(
            f"{folder} holds no MovieLens-100K files: expected u.data + u.item (GroupLens download) "
            "or ml-100k.inter + ml-100k.item (recbole atomic files)"
        )

    def parse() -> Parsed:
        items, skipped = (_read_atomic_items if atomic else _read_grouplens_items)(item_file)
        rows = readers.rows_from_lines(readers.decode(inter_file, skipped), "\t", skip_header=atomic)
        records = readers.named(rows, ["user_id", "item_id", "rating", "timestamp"])
        return items, _interactions_from_rows(inter_file, records, items, skipped), skipped

    return cached_dataset("ml-100k", (item_file, inter_file), parse)


def load_catalogue(path: str | Path) -> tuple[dict[str, Item], list[str]]:
    """Read a catalogue from CSV/TSV (header row) or JSONL (one object per line).

    Fields: `id` (or `item_id`), `title`, optional `year`, `genres` (list, or string split by | or ,),
    `description`; any other scalar field goes to `Item.metadata` (empty and non-scalar values are dropped).

    Args:
        path: a .csv, .tsv, .jsonl or .ndjson file.

    Returns:
        (items by id in file order, "file:line: reason" for each skipped row).

    Raises:
        DataError: missing/empty file, unknown extension, missing columns, or no valid row.
    """
    p = Path(path).expanduser()
    items: dict[str, Item] = {}
    first_line: dict[str, int] = {}
    skipped: list[str] = []
    for line, rec, problem in readers.records(p, skipped, _CATALOGUE_COLUMNS, _CATALOGUE_FIELDS):
        try:
            if problem or rec is None:
                raise ValueError(problem)
            item = _item_from_record(rec)
            if item.id in items:
                raise ValueError(f"duplicate id {item.id!r} (first on line {first_line[item.id]})")
        except (ValueError, ValidationError) as e:
            skipped.append(f"{p}:{line}: {readers.reason(e)}")
            continue
        items[item.id], first_line[item.id] = item, line
    if not items:
        raise DataError(readers.no_valid_row(p, skipped, _CATALOGUE_FIELDS))
    return items, skipped


def load_interactions(path: str | Path, items: dict[str, Item]) -> tuple[list[Interaction], list[str]]:
    """Read interactions from CSV/TSV or JSONL; rows naming items not in `items` are skipped.

    Args:
        path: a .csv, .tsv, .jsonl or .ndjson file with user_id, item_id, timestamp and optional rating.
        items: the catalogue the interactions refer to.

    Returns:
        (interactions in file order, "file:line: reason" for each skipped row).

    Raises:
        DataError: missing/empty file, unknown extension, missing columns, or no valid row.
    """
    p = Path(path).expanduser()
    skipped: list[str] = []
    rows = readers.records(p, skipped, _INTERACTION_COLUMNS, _INTERACTION_FIELDS)
    return _interactions_from_rows(p, rows, items, skipped), skipped


def load_dataset(catalogue_path: str | Path, interactions_path: str | Path, name: str | None = None) -> Dataset:
    """Load your own catalogue + interactions (see `load_catalogue`, `load_interactions`).

    Args:
        catalogue_path: the items file. interactions_path: the interactions file.
        name: dataset name; defaults to the catalogue file's stem.

    Returns:
        Dataset whose `sha256` covers both files and whose `skipped` lists every row not loaded.

    Raises:
        DataError: as `load_catalogue` / `load_interactions`.
    """
    cat, inter = Path(catalogue_path).expanduser(), Path(interactions_path).expanduser()

    def parse() -> Parsed:
        items, skipped_items = load_catalogue(cat)
        interactions, skipped_inter = load_interactions(inter, items)
        return items, interactions, skipped_items + skipped_inter

    return cached_dataset(name or cat.stem, (cat, inter), parse)


# --- MovieLens formats --------------------------------------------------------------------------------


def _read_atomic_items(f: Path) -> tuple[dict[str, Item], list[str]]:
    """recbole's ml-100k.item: item_id, movie_title (no year), release_year, class (space-separated)."""
    skipped: list[str] = []
    items: dict[str, Item] = {}
    for line, fields in readers.rows_from_lines(readers.decode(f, skipped), "\t", skip_header=True):
        try:
            if len(fields) != 4:
                raise ValueError(f"expected 4 tab-separated fields, got {len(fields)}")
            item_id, title, year, genres = fields
            # recbole's conversion left two artefacts: item 267 is "unkonwn", and a year it could not
            # parse ("V") left "(1995)" in the title. Normalising makes both formats load identically.
            title = "unknown" if title == "unkonwn" else title
            title, title_year = split_title_year(title)
            items[item_id] = Item(
                id=item_id,
                title=title,
                year=int(year) if year.isdigit() else title_year,
                genres=tuple(g for g in genres.split() if g != "unknown"),  # "unknown" is no genre
            )
        except (ValueError, ValidationError) as e:
            skipped.append(f"{f}:{line}: {readers.reason(e)}")
    return items, skipped


def _read_grouplens_items(f: Path) -> tuple[dict[str, Item], list[str]]:
    """GroupLens u.item: id|title (year)|release date|video date|IMDb URL|19 genre flags, latin-1."""
    skipped: list[str] = []
    items: dict[str, Item] = {}
    lines = readers.decode(f, skipped, encoding="latin-1")  # GroupLens' encoding; decodes any byte
    for line, fields in readers.rows_from_lines(lines, "|", skip_header=False):
        try:
            if len(fields) != 5 + len(ML100K_GENRES):
                raise ValueError(f"expected {5 + len(ML100K_GENRES)} |-separated fields")
            title, year = split_title_year(fields[1])
            if year is None and fields[2][-4:].isdigit():  # release date "01-Jan-1995"
                year = int(fields[2][-4:])
            flags = fields[5:]
            genres = tuple(g for g, flag in zip(ML100K_GENRES, flags, strict=True) if flag == "1" and g != "unknown")
            items[fields[0]] = Item(id=fields[0], title=title, year=year, genres=genres)
        except (ValueError, ValidationError) as e:
            skipped.append(f"{f}:{line}: {readers.reason(e)}")
    return items, skipped


# --- shared row handling ------------------------------------------------------------------------------


def _interactions_from_rows(
    f: Path, rows: Iterator[Row], items: dict[str, Item], skipped: list[str]
) -> list[Interaction]:
    out: list[Interaction] = []
    for line, rec, problem in rows:
        try:
            if problem or rec is None:
                raise ValueError(problem or "malformed row")
            item_id = readers.text(rec.get("item_id"))
            if item_id not in items:
                raise ValueError(f"unknown item {item_id!r} (not in the catalogue)")
            rating = rec.get("rating")
            out.append(
                Interaction(
                    user_id=readers.text(rec.get("user_id")),
                    item_id=item_id,
                    timestamp=readers.timestamp(rec.get("timestamp")),
                    rating=None if rating in (None, "") else readers.number(rating, "rating"),
                )
            )
        except (ValueError, ValidationError) as e:
            skipped.append(f"{f}:{line}: {readers.reason(e)}")
    if not out:
        raise DataError(readers.no_valid_row(f, skipped, _INTERACTION_FIELDS))
    return out


def _item_from_record(rec: dict[str, Any]) -> Item:
    item_id = readers.text(rec.get("id", rec.get("item_id")))
    if not item_id:
        raise ValueError("missing id")
    title = readers.text(rec.get("title"))
    if not title:
        raise ValueError("missing title")
    year = rec.get("year")
    genres = rec.get("genres") or ()
    if isinstance(genres, str):
        genres = re.split(r"[|,]", genres)
    if not isinstance(genres, list | tuple):
        raise ValueError(f"`genres` must be a list or a string, got {type(genres).__name__}")
    known = {"id", "item_id", "title", "year", "genres", "description"}
    scalar = (str, int, float, bool)
    metadata = {k: v for k, v in rec.items() if k and k not in known and isinstance(v, scalar) and v != ""}
    return Item(
        id=item_id,
        title=title,
        year=None if year in (None, "") else readers.integer(year, "year"),
        genres=tuple(g.strip() for g in map(str, genres) if g.strip()),
        description=readers.text(rec.get("description")),
        metadata=metadata,
    )
