"""`merge_previous`: rows of an earlier run are kept only for methods this run lacks, and its notes only with them."""

from __future__ import annotations

from pathlib import Path

from reasonrec.finetune.evaluation.report import EvalReport, MethodResult, merge_previous


def _row(ndcg: float) -> MethodResult:
    return MethodResult(
        n_users=3, metrics={"ndcg@10": ndcg}, valid_rate=1.0, off_catalogue_rate=0.0, duplicate_rate=0.0,
        fallback_rate=0.0, latency_ms={"p50": 1.0, "p95": 1.0}, users_per_s=1.0, wall_s=1.0,
    )  # fmt: skip


def _report(methods: dict[str, float], notes: list[str], recbole: dict | None = None) -> EvalReport:
    return EvalReport(
        protocol="full", dataset="ml-100k", dataset_sha256="abc", commit="c1", created="t1", machine="cpu",
        seed=0, candidates=20, methods={m: _row(v) for m, v in methods.items()}, k=10, notes=notes,
        recbole=recbole or {},
    )  # fmt: skip


def test_a_full_rerun_drops_the_old_files_notes(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    old = _report({"fusion": 0.11, "recbole-sasrec-all": 0.08}, ["ceiling 0.3298", "rows copied from x.json"],
                  {"sasrec": {"epochs": 11}})  # fmt: skip
    path.write_text(old.model_dump_json(), encoding="utf-8")
    new = _report({"fusion": 0.12, "recbole-sasrec-all": 0.10}, ["ceiling 0.3319"], {"sasrec": {"epochs": 27}})
    assert merge_previous(new, path) == []
    assert new.notes == ["ceiling 0.3319"]
    assert new.recbole == {"sasrec": {"epochs": 27}}
    assert new.methods["fusion"].metrics["ndcg@10"] == 0.12


def test_rows_this_run_lacks_are_kept_with_their_notes(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(_report({"fusion": 0.11, "lm": 0.05}, ["lm on 500 users"]).model_dump_json(), encoding="utf-8")
    new = _report({"fusion": 0.12}, ["ceiling 0.3319"])
    assert merge_previous(new, path) == ["lm"]
    assert new.methods["fusion"].metrics["ndcg@10"] == 0.12  # this run's row wins
    assert new.methods["lm"].commit == "c1"
    assert new.notes == ["ceiling 0.3319", "lm on 500 users"]


def test_another_setup_is_not_mixed_in(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    other = _report({"lm": 0.05}, ["x"]).model_copy(update={"candidates": 50})
    path.write_text(other.model_dump_json(), encoding="utf-8")
    new = _report({"fusion": 0.12}, [])
    assert merge_previous(new, path) == []
    assert "lm" not in new.methods
