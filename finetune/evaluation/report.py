"""The results record of an evaluation run and how it is written: JSON, a Markdown table, PNG plots.

The JSON follows shared/protocols.md ("Results file format") exactly, plus extra fields that say how
the numbers were made (template_version, model_id, k, stage_ms per method, user selection, notes).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

HEADLINE = ("recall@1", "recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20", "hr@1", "mrr")


class MethodResult(BaseModel):
    """One row: a method's metrics and the always-reported rates and timings."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    n_users: int
    metrics: dict[str, float]
    valid_rate: float = Field(description="Share of users whose ranker output was valid on its own.")
    off_catalogue_rate: float = Field(description="Items named outside the candidate set / requested items.")
    duplicate_rate: float = Field(description="Repeated items in the output / requested items.")
    fallback_rate: float = Field(description="Items filled in from candidate order / requested items.")
    latency_ms: dict[str, float] = Field(description="Per-user ranking latency p50/p95 (+ p5/p25/p75/mean) ms.")
    users_per_s: float
    wall_s: float
    stage_ms: dict[str, float] = Field(default_factory=dict, description="Mean ms per user per stage.")
    appended_mean: float = Field(0.0, description="Candidates appended after the ranker's own k items.")
    metrics_on_llm_users: dict[str, float] | None = Field(
        None, description="The same metrics on the LLM rows' user subset, for a like-for-like comparison."
    )
    input_order_rate: float | None = Field(
        None,
        description="Share of users whose top-k is exactly the first k candidates in given order "
        "(an LLM that only echoes the list shows 1.0: position bias, not ranking).",
    )
    grounded_rate: float | None = Field(
        None,
        description="Mean over users of the share of the model's own reasons that name a real history title or "
        "item attribute, measured before ungrounded reasons are replaced by fact-based ones.",
    )
    gain_vs: dict[str, dict[str, list[float]]] | None = Field(
        None, description="Paired bootstrap over users vs another row: method -> metric -> [delta, ci_low, ci_high]."
    )
    model_reason_rate: float | None = Field(
        None, description="Share of returned items whose reason the model wrote (after validation)."
    )
    calibration: dict[str, float] | None = Field(
        None, description="Scoring/hybrid rows: ECE of the top-1 item's probability against hits (metrics.calibration)."
    )
    reasons: dict[str, float | int | None] | None = Field(
        None,
        description="Rows with reasons: faithful_rate (as shown), faithful_rate_model (the model's own, before "
        "replacement), specific_rate, distinct_rate, model_reason_rate, n_reasons (evaluation/reasons.py).",
    )
    commit: str = ""
    created: str = ""
    note: str | None = None


class EvalReport(BaseModel):
    """Everything one `evaluate` run produced (the `bench/results/<name>.json` file)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    protocol: str
    dataset: str
    dataset_sha256: str
    commit: str
    created: str
    machine: str
    seed: int
    candidates: int
    methods: dict[str, MethodResult]
    template_version: str | None = None
    model_id: str | None = None
    k: int = Field(description="k asked of LLM rankers; the rest of the candidates are appended in order.")
    positions: dict[str, dict[str, dict[str, float]]] | None = Field(
        None, description="cand20 position sensitivity: method -> target position -> metrics."
    )
    recbole: dict[str, Any] = Field(default_factory=dict, description="Per RecBole model: training record.")
    users: dict[str, Any] = Field(default_factory=dict, description="How users were selected.")
    candidate_stage_ms: dict[str, float] = Field(default_factory=dict)
    candidate_recall: dict[str, float] | None = Field(
        None, description="Protocol full: share of users whose test item is among the candidates, by N."
    )
    agent_config: dict[str, Any] | None = Field(None, description="The AgentConfig the rows were run with.")
    notes: list[str] = Field(default_factory=list)


def git_commit(cwd: Path | None = None, paths: Sequence[str] = ()) -> str:
    """`git rev-parse HEAD`, with "-dirty" when the tree (or, given `paths` from the repository root, the
    files that produce the numbers) has uncommitted changes; "unknown" outside git."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *(f":/{p}" for p in paths)],  # paths from the repository root
            cwd=cwd, capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "") if sha else "unknown"


def default_machine() -> str:
    """'cpu-<n>core' (the GPU name when CUDA is visible is the caller's to pass)."""
    return f"cpu-{os.cpu_count() or 0}core"


def merge_previous(report: EvalReport, path: Path) -> list[str]:
    """Keep rows of an earlier run in `path` for methods this run did not produce.

    Only when the earlier file describes the same experiment (protocol, candidates, seed, dataset);
    each kept row carries its own commit and created fields. Returns the kept method names.
    """
    if not path.is_file():
        return []
    try:
        old = EvalReport.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError:
        return []  # unreadable or older format: overwrite rather than mix
    same = (old.protocol, old.candidates, old.seed, old.dataset_sha256) == (
        report.protocol, report.candidates, report.seed, report.dataset_sha256,
    )  # fmt: skip
    if not same:
        return []
    kept = [m for m in old.methods if m not in report.methods]
    if not kept:
        return []  # every row is this run's: the old file's notes and RecBole facts describe rows no longer here
    for m in kept:
        row = old.methods[m]
        row.commit = row.commit or old.commit
        row.created = row.created or old.created
        report.methods[m] = row
        if old.positions and m in old.positions:
            report.positions = {**(report.positions or {}), m: old.positions[m]}
    for key, val in old.recbole.items():
        report.recbole.setdefault(key, val)
    report.template_version = report.template_version or old.template_version
    report.model_id = report.model_id or old.model_id
    report.notes = list(dict.fromkeys([*report.notes, *old.notes]))
    return kept


def write_all(report: EvalReport, out_dir: Path, name: str) -> list[Path]:
    """Write `<name>.json`, `<name>.md`, `<name>_metrics.png`, `<name>_latency.png`; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.json", out_dir / f"{name}.md"]
    paths[0].write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    paths[1].write_text(markdown(report, name), encoding="utf-8")
    paths += plot(report, out_dir, name)
    return paths


def markdown(report: EvalReport, name: str) -> str:
    """A Markdown table: one row per method, metric columns, then rates, latency and wall time."""
    keys = [k for k in HEADLINE if any(k in m.metrics for m in report.methods.values())]
    head = [
        "method",
        "users",
        *keys,
        "valid",
        "off-cand",
        "dup",
        "fallback",
        "grounded",
        "ECE",
        "p50 ms",
        "p95 ms",
        "users/s",
        "wall s",
    ]
    lines = [
        f"# {name}: protocol `{report.protocol}`, {report.candidates} candidates, {report.dataset}",
        "",
        f"commit `{report.commit}` · machine {report.machine} · seed {report.seed} · {report.created}",
        f"LLM k = {report.k} · template {report.template_version or '-'} · model {report.model_id or '-'}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|",
    ]
    for method, r in sorted(report.methods.items(), key=lambda kv: -kv[1].metrics.get("ndcg@10", 0.0)):
        cells = [method, str(r.n_users), *(f"{r.metrics[k]:.4f}" if k in r.metrics else "-" for k in keys)]
        cells += [f"{r.valid_rate:.3f}", f"{r.off_catalogue_rate:.3f}", f"{r.duplicate_rate:.3f}"]
        cells += [
            f"{r.fallback_rate:.3f}",
            "-" if r.grounded_rate is None else f"{r.grounded_rate:.3f}",
            "-" if r.calibration is None else f"{r.calibration['ece']:.3f}",
            f"{r.latency_ms.get('p50', 0):.2f}",
            f"{r.latency_ms.get('p95', 0):.2f}",
        ]
        cells += [f"{r.users_per_s:.1f}", f"{r.wall_s:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    subset = {m: r for m, r in report.methods.items() if r.metrics_on_llm_users}
    if subset and any(m.startswith("reasonrec-") for m in report.methods):
        n = report.users.get("llm_users")
        lines += ["", f"Classical rows on the LLM rows' {n} users (like-for-like):", ""]
        lines += ["| method | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
        for m, r in subset.items():
            sub = r.metrics_on_llm_users or {}
            lines.append(f"| {m} | " + " | ".join(f"{sub.get(k, 0):.4f}" for k in keys) + " |")
    lines += _reasons_table(report)
    if report.positions:
        pos_keys = sorted({p for v in report.positions.values() for p in v}, key=int)
        lines += ["", "Position sensitivity (target fixed at position p), NDCG@10 / HR@1:", ""]
        lines += [
            "| method | " + " | ".join(f"p={p}" for p in pos_keys) + " |",
            "|---|" + "---:|" * len(pos_keys),
        ]
        for m, by_pos in report.positions.items():
            vals = [by_pos.get(p, {}) for p in pos_keys]
            lines.append(
                f"| {m} | " + " | ".join(f"{v.get('ndcg@10', 0):.4f} / {v.get('hr@1', 0):.4f}" for v in vals) + " |"
            )
    if report.recbole:
        lines += ["", "RecBole training (through RecBole 1.2.1, CPU):", ""]
        for m, rec in report.recbole.items():
            check = rec.get("split_check", {})
            lines.append(
                f"- {m}: {rec.get('epochs_trained')} epochs ({rec.get('stopped_by')}), train "
                f"{rec.get('train_wall_s')} s; split check: {check.get('n_mismatch')} of "
                f"{check.get('n_users')} users differ from ours"
            )
    if report.notes:
        lines += ["", "Notes:", "", *(f"- {n}" for n in report.notes)]
    return "\n".join(lines) + "\n"


def _reasons_table(report: EvalReport) -> list[str]:
    """The `reasons` blocks as a table (rows that produce reasons only)."""
    rows = {m: r.reasons for m, r in report.methods.items() if r.reasons}
    if not rows:
        return []
    keys = ("faithful_rate", "faithful_rate_model", "specific_rate", "distinct_rate", "model_reason_rate")
    out = ["", "Reasons (as shown; `_model`: the model's own before replacement):", ""]
    out += ["| method | " + " | ".join(keys) + " | n_reasons |", "|---|" + "---:|" * (len(keys) + 1)]
    for m, b in rows.items():
        vals = ["-" if b.get(k) is None else f"{b[k]:.3f}" for k in keys]
        out.append(f"| {m} | " + " | ".join(vals) + f" | {b.get('n_reasons')} |")
    return out


def plot(report: EvalReport, out_dir: Path, name: str) -> list[Path]:
    """Metric@K per method and per-user latency per method, as PNGs (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    methods = list(report.methods)
    keys = [k for k in HEADLINE if any(k in report.methods[m].metrics for m in methods)]
    fig, ax = plt.subplots(figsize=(max(9.0, 0.12 * len(keys) * len(methods) + 3), 4.8))
    width = 0.8 / max(1, len(methods))
    for n, m in enumerate(methods):
        vals = [report.methods[m].metrics.get(k, 0.0) for k in keys]
        ax.bar(
            [i + n * width for i in range(len(keys))],
            vals,
            width,
            label=f"{m} (n={report.methods[m].n_users})",
        )
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))], keys)
    ax.set_ylabel("score")
    ax.set_title(f"{name}: {report.protocol}, {report.candidates} candidates")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    p1 = out_dir / f"{name}_metrics.png"
    fig.savefig(p1, dpi=110)
    plt.close(fig)

    # Boxes from the percentiles stored in the JSON (p5/p25/p50/p75/p95), so the plot can be redrawn
    # from the results file alone, merged rows of earlier runs included.
    fig, ax = plt.subplots(figsize=(8, 4.5))
    stats = []
    for m in methods:
        lat = {k: max(v, 1e-3) for k, v in report.methods[m].latency_ms.items()}
        p50, p95 = lat.get("p50", 1e-3), lat.get("p95", 1e-3)
        stats.append({"label": m, "med": p50, "q1": lat.get("p25", p50), "q3": lat.get("p75", p50),
                      "whislo": lat.get("p5", p50), "whishi": p95})  # fmt: skip
    ax.bxp(stats, showfliers=False)
    ax.set_xticks(range(1, len(methods) + 1), methods, rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("ms per user (log)")
    ax.set_title(f"{name}: ranking latency per user")
    fig.tight_layout()
    p2 = out_dir / f"{name}_latency.png"
    fig.savefig(p2, dpi=110)
    plt.close(fig)
    return [p1, p2]
