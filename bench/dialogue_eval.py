"""Dialogue parsing on the labelled message corpus: exact match of the parsed constraints, per category.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/dialogue_eval.py                 # writes bench/results/dialogue.json
    HF_HUB_OFFLINE=1 .venv/bin/python bench/dialogue_eval.py --no-embedder   # rules only (mood guesses off)
    HF_HUB_OFFLINE=1 .venv/bin/python bench/dialogue_eval.py --show-misses   # print every wrong field

Each line of tests/data/dialogue_corpus.jsonl is one message with the constraints it must produce
(`expect`; a field not named there must be empty/None), optionally the last answer it critiques
(`last`, item ids in rank order) and the constraints before it (`start`). A message counts as correct
only when every field matches (`FIELDS`); relative critiques ("newer") are compared after they are
resolved against the years of `last`. The parse runs on the real ML-100K catalogue, without the LM;
the embedder is loaded only for the mood guesser. tests/test_dialogue_corpus.py runs the same
`evaluate` and asserts the rate.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "dialogue_corpus.jsonl"
RESULT = ROOT / "bench" / "results" / "dialogue.json"
# Compared for every message; the defaults are what a message that says nothing about them produces.
FIELDS: dict[str, Any] = {
    "genres": [], "excluded_genres": [], "year_min": None, "year_max": None, "relative": None, "k": None,
    "k_change": None, "liked": [], "disliked": [], "ask": [], "unknown": [], "rejected": [], "liked_positions": [],
    "age": None, "unsupported": [], "language": None, "more": False, "reset": False, "query": None,
}  # fmt: skip


def load_corpus(path: Path = CORPUS) -> list[dict[str, Any]]:
    """The labelled messages; raises ValueError naming the line of a bad entry."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("//"):
            continue
        row = json.loads(line)
        unknown = set(row.get("expect", {})) - set(FIELDS)
        if unknown or "text" not in row or "category" not in row:
            raise ValueError(
                f"{path.name}:{n}: expected text, category and expect fields of {sorted(FIELDS)}, got {row}"
            )
        rows.append(row)
    return rows


class Parser:
    """The chat's parser over a catalogue, as `ChatSession` runs it (title index, genres, years, moods)."""

    def __init__(self, items: dict[str, Any], moods: Any = None):
        from reasonrec.agent.chat.titles import TitleIndex

        self.items = items
        self.titles = TitleIndex.from_items(items)
        self.genres = sorted({g for it in items.values() for g in it.genres})
        self.years = sorted(it.year for it in items.values() if it.year is not None)
        self.moods = moods

    def project(self, row: dict[str, Any]) -> dict[str, Any]:
        """The constraints the message produces, in the corpus's fields."""
        from reasonrec.agent.chat.dialogue import parse_message
        from reasonrec.agent.chat.state import ChatConstraints
        from reasonrec.agent.chat.years import apply_years

        last = [str(i) for i in row.get("last", [])]
        act = parse_message(
            row["text"], self.genres, self.titles, [self.items[i].title for i in last], moods=self.moods
        )
        c = ChatConstraints(**row.get("start", {}))
        apply_years(c, act.year_reading(), [y for i in last if (y := self.items[i].year)], self.years)
        out = {f: getattr(act, f) for f in ("relative", "k", "k_change", "age", "language", "more", "reset", "query")}
        out |= {"genres": sorted(act.genres), "excluded_genres": sorted(act.excluded_genres), "year_min": c.year_min,
                "year_max": c.year_max, "rejected": act.rejected_positions, "liked_positions": act.liked_positions,
                "unsupported": act.unsupported, "liked": [], "disliked": [], "ask": [], "unknown": []}  # fmt: skip
        for ref in act.titles:
            match = ref.match
            if match.resolved is not None:
                out["liked" if ref.polarity == "like" else "disliked"].append(match.resolved.item_id)
            elif match.options:
                out["ask"].append([o.item_id for o in match.options])
            else:
                out["unknown"].append(match.phrase)
        return out


def expected(row: dict[str, Any]) -> dict[str, Any]:
    want = {**FIELDS, **row.get("expect", {})}
    for key in ("genres", "excluded_genres"):
        want[key] = sorted(want[key])
    return want


def evaluate(parser: Parser, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Exact-match rate overall and per category, plus every miss as (text, field, got, wanted)."""
    by_cat: dict[str, list[bool]] = defaultdict(list)
    by_batch: dict[str, list[bool]] = defaultdict(list)
    misses = []
    for row in rows:
        got, want = parser.project(row), expected(row)
        wrong = [(f, got[f], want[f]) for f in FIELDS if got[f] != want[f]]
        by_cat[row["category"]].append(not wrong)
        by_batch[row.get("batch", "development")].append(not wrong)
        misses += [(row["text"], *w) for w in wrong]
    n_ok = sum(ok for oks in by_cat.values() for ok in oks)
    return {
        "messages": len(rows),
        "exact_match": round(n_ok / len(rows), 4) if rows else 0.0,
        "by_category": _rates(by_cat),
        "by_batch": _rates(by_batch),
        "misses": misses,
    }


def _rates(groups: dict[str, list[bool]]) -> dict[str, dict[str, float]]:
    return {c: {"n": len(v), "exact_match": round(sum(v) / len(v), 4)} for c, v in sorted(groups.items())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--no-embedder", action="store_true", help="Rules only: no mood guesses from MiniLM.")
    p.add_argument("--show-misses", action="store_true", help="Print every wrong field.")
    p.add_argument("--out", type=Path, default=RESULT, help="Results file (default bench/results/dialogue.json).")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from reasonrec.agent.chat.moods import MoodGuesser
    from reasonrec.finetune.evaluation.report import git_commit
    from reasonrec.retrieval import Embedder, load_ml100k

    items = load_ml100k().items
    genres = sorted({g for it in items.values() for g in it.genres})
    moods = None if args.no_embedder else MoodGuesser(Embedder(), genres)
    result = evaluate(Parser(items, moods), load_corpus())
    print(f"{'category':<16} {'n':>4} {'exact':>7}")
    for cat, r in result["by_category"].items():
        print(f"{cat:<16} {r['n']:>4} {r['exact_match']:>7.3f}")
    print(f"{'all':<16} {result['messages']:>4} {result['exact_match']:>7.3f}")
    if args.show_misses:
        for text, f, got, want in result["misses"]:
            print(f"MISS {text!r}: {f} = {got!r}, expected {want!r}")
    record = {"commit": git_commit(), "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "embedder": not args.no_embedder, **{k: v for k, v in result.items() if k != "misses"},
              "n_misses": len(result["misses"])}  # fmt: skip
    if not args.no_embedder or args.out != RESULT:
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
