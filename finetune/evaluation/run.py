"""`evaluate(EvalConfig)`: run the protocols of shared/protocols.md and write bench/results/<name>.*

    from reasonrec.finetune.evaluation.run import EvalConfig, evaluate
    report = evaluate(EvalConfig(protocol="cand20", methods=["popularity", "itemknn"], users=100))

Every method is "a ranker that reorders a given candidate list" (finetune/baselines.py for the classical
ones, `RecommenderAgent.rank_many` for ours), so a new ranker mode or adapter is one more row. Protocol
`full`: candidates are the retriever's top-N for the user's test-time history; classical rows named
`<method>-all` rank the whole catalogue instead (how classical peers are usually measured). Protocol
`cand20`: the test item + 19 never-seen items per user, seeded from (seed, user id).

LLM rankers are asked for `llm_k` items (default 10: generation cost grows with k); the candidates they
did not rank are appended in the given order (retriever order / shuffled cand20 order) so that
metrics@20 and MRR are defined. The report says so and gives the mean number appended.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import numpy as np
from pydantic import ConfigDict, Field, field_validator, model_validator

from reasonrec.agent.config import Buildable
from reasonrec.fields import PositiveInt, bound
from reasonrec.finetune.evaluation import metrics as M
from reasonrec.finetune.evaluation.baselines import build_ranker
from reasonrec.finetune.evaluation.report import (
    EvalReport,
    default_machine,
    git_commit,
    merge_previous,
    write_all,
)
from reasonrec.finetune.evaluation.rows import run_row
from reasonrec.finetune.evaluation.split import Split, cand20_candidates, leave_one_out
from reasonrec.retrieval.types import natural_key

Progress = Callable[[str, int, int], None]  # (task description, done, total)
OptionalCount = Annotated[int, bound(1, note=" or None (all users)")] | None
SOURCES = ("source-collaborative", "source-cooccurrence", "source-ease", "source-semantic")
CLASSICAL = ("random", "popularity", "itemknn", "retrieval", *SOURCES, "fusion", "recbole-sasrec", "recbole-bpr")
BOOTSTRAP = {"resamples": 1000, "seed": 0, "metrics": ("ndcg@10", "recall@10", "hr@1")}
ALL_CATALOGUE = ("random-all", "popularity-all", "itemknn-all", "recbole-sasrec-all", "recbole-bpr-all")
DEFAULT_RECBOLE_DIR = Path("~/.cache/reasonrec/bench/recbole")


def ranker_modes() -> tuple[str, ...]:
    """The ranker modes the agent's config accepts today (asked of the config, not hard-coded)."""
    from reasonrec.agent.config import RankerConfig

    return tuple(get_args(RankerConfig.model_fields["mode"].annotation)) or ("generative",)


def valid_methods(protocol: str) -> list[str]:
    """Method names accepted for `protocol` (`-all` rows exist only in protocol full)."""
    llm = [f"reasonrec-{m}-{mode}" for m in ("zeroshot", "lora") for mode in ranker_modes()]
    return [*CLASSICAL, *(ALL_CATALOGUE if protocol == "full" else ()), *llm]


class EvalConfig(Buildable):
    """One evaluation run. Unknown keys are errors; every bad value says how to fix it."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    protocol: Literal["full", "cand20"] = Field("full", description="full: retrieve then rank; cand20: pick from 20.")
    candidates: PositiveInt = Field(20, description="Candidates per user: 20 or 50 for full, 20 for cand20.")
    methods: list[str] = Field(
        default_factory=lambda: ["random", "popularity", "itemknn", "retrieval"],
        description="Rows to run: random, popularity, itemknn, retrieval, recbole-sasrec, recbole-bpr, "
        "<classical>-all (full only), reasonrec-<zeroshot|lora>-<mode>.",
    )
    users: OptionalCount = Field(None, description="Evaluate a seeded random subset of this many users (None = all).")
    llm_users: OptionalCount = Field(
        100, description="LLM rows use the first N of the selected users (slow on CPU); None = all selected."
    )
    seed: int = Field(0, description="Seeds the user subset, cand20 negatives and the random ranker.")
    k_list: list[int] = Field(default_factory=lambda: [1, 5, 10, 20], description="Cut-offs for recall/ndcg.")
    llm_k: PositiveInt = Field(10, description="Items the LLM is asked to rank; the rest are appended in given order.")
    out_dir: Path = Field(Path("bench/results"), description="Where <name>.json/.md/_*.png are written.")
    name: str | None = Field(None, description="Results file stem; default '<protocol><candidates>'.")
    positions: list[int] | None = Field(
        None, description="cand20 only: also run with the target fixed at these positions (e.g. 1 5 10 20)."
    )
    adapter: str | None = Field(None, description="LoRA adapter folder for reasonrec-lora-* rows.")
    batch_size: OptionalCount = Field(
        None, description="Users per batched LLM forward pass; None = the agent config's ranker.batch_size."
    )
    agent_config: Path | None = Field(None, description="YAML/JSON AgentConfig for the LLM rows and retrieval.")
    recbole_dir: Path = Field(DEFAULT_RECBOLE_DIR, description="Scores exported by bench/recbole_peer.py.")
    itemknn_window: PositiveInt = Field(20, description="History items that vote in item-kNN.")
    machine: str | None = Field(None, description="Machine label in the results; default cpu-<n>core.")
    merge: bool = Field(True, description="Keep rows of other methods already in <name>.json (same setup).")
    write: bool = Field(True, description="Write the result files (False: only return the report).")



    @field_validator("k_list")
    @classmethod
    def _ks(cls, v: list[int]) -> list[int]:
        if not v or any(k < 1 for k in v):
            raise ValueError(f"`k_list` must be non-empty cut-offs >= 1, got {v}")
        return sorted(set(v))

    @model_validator(mode="after")
    def _consistent(self) -> EvalConfig:
        ok = {"full": (20, 50), "cand20": (20,)}[self.protocol]
        if self.candidates not in ok:
            raise ValueError(f"`candidates` must be one of {ok} for protocol {self.protocol}, got {self.candidates}")
        valid = valid_methods(self.protocol)
        bad = [m for m in self.methods if m not in valid]
        if bad or not self.methods:
            raise ValueError(f"unknown method(s) {bad} for protocol {self.protocol}; valid: {', '.join(valid)}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"`methods` lists a method twice: {self.methods}")
        if any(m.startswith("reasonrec-lora-") for m in self.methods) and not self.adapter:
            raise ValueError("reasonrec-lora-* rows need `adapter` (the folder saved by `reasonrec train`)")
        if self.positions is not None:
            if self.protocol != "cand20":
                raise ValueError("`positions` applies to protocol cand20 only")
            if any(not 1 <= p <= self.candidates for p in self.positions):
                raise ValueError(f"`positions` must lie in 1..{self.candidates}, got {self.positions}")
        if self.llm_k > self.candidates:
            raise ValueError(f"`llm_k` must be <= candidates ({self.candidates}), got {self.llm_k}")
        return self

    def result_name(self) -> str:
        if self.name:
            return self.name
        return "cand20" if self.protocol == "cand20" else f"full{self.candidates}"


def evaluate(config: EvalConfig, progress: Progress | None = None) -> EvalReport:
    """Run every method of `config` on the protocol and write the results.

    Args:
        config: the run (validated).
        progress: called as progress(task, done, total) while users are processed; the CLI draws bars.

    Returns:
        The EvalReport (also written to `out_dir/<name>.json|.md|_metrics.png|_latency.png`).

    Raises:
        ConfigError: a bad option, or RecBole rows requested before bench/recbole_peer.py ran.
        DataError / RetrievalError / ModelError: the dataset, the store or the model failed.
    """
    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.config import AgentConfig

    notes: list[str] = []
    agent_cfg = AgentConfig.from_file(config.agent_config) if config.agent_config else AgentConfig()
    base = RecommenderAgent(agent_cfg)
    dataset = base.dataset
    split = leave_one_out(dataset)
    # Retrieval sources see only what a user had before the test item (train + validation): the agent's
    # own sources are fitted on every interaction, test items included.
    seen = {u: split.eval_history(u, "test") for u in split.user_ids()}
    # Built only where a row reads it: it trains the sequence model when missing (minutes), which a
    # cand20 run of classical rows does not need.
    fused_rows = any(m == "fusion" or m.startswith(("source-", "reasonrec-")) for m in config.methods)
    if config.protocol == "full" or fused_rows:
        source = _split_source(base, agent_cfg, seen, notes)
        base = RecommenderAgent(agent_cfg, dataset=dataset, candidate_source=source)
    catalogue = sorted(dataset.items, key=natural_key)
    users = select_users(split, config.users, config.seed)
    llm_users = users[: config.llm_users] if config.llm_users else users  # a prefix: a subset of `users`
    hist = {u: split.eval_history(u, "test") for u in users}
    target = {u: split.get(u).test for u in users}

    t0 = time.perf_counter()
    cand, cand_ms = _candidates(config, split, users, hist, catalogue, base, progress)
    report = EvalReport(
        protocol=config.protocol, dataset=dataset.name, dataset_sha256=dataset.sha256, commit=git_commit(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        machine=config.machine or default_machine(), seed=config.seed, candidates=config.candidates,
        methods={}, k=config.llm_k,
        candidate_stage_ms={**M.latency_summary(cand_ms), "wall_s": time.perf_counter() - t0},
        users={"selection": f"prefixes of one seeded permutation (seed {config.seed}); LLM rows: the first",
               "n_users": len(users), "llm_users": len(llm_users), "n_dropped": split.n_dropped},
    )  # fmt: skip
    report.agent_config = json.loads(agent_cfg.model_dump_json())
    if config.protocol == "full":
        hits = np.mean([target[u] in cand[u] for u in users])
        report.candidate_recall = {str(config.candidates): float(hits)}
        notes.append(f"retriever top-{config.candidates} holds the test item for {hits:.4f} of users (ceiling)")
        notes.append("`-all` rows rank every catalogue item the user has not seen (no candidate cut)")
    notes.append("latency is the ranking step per user; candidate generation is in candidate_stage_ms")
    positions: dict[str, dict[str, dict[str, float]]] = {}
    per_method: dict[str, dict[str, dict[str, float]]] = {}
    for method in config.methods:
        is_llm = method.startswith("reasonrec-")
        run_users = llm_users if is_llm else users
        runner, recbole_meta = build_ranker(
            method, config.protocol, split, base, agent_cfg, seed=config.seed, recbole_dir=config.recbole_dir,
            itemknn_window=config.itemknn_window, batch_size=config.batch_size, adapter=config.adapter,
        )  # fmt: skip
        if recbole_meta is not None:
            report.recbole[method.removesuffix("-all")] = recbole_meta
        cands = {u: catalogue_minus(catalogue, hist[u]) for u in run_users} if method.endswith("-all") else cand
        row, per_user, info = run_row(method, runner, run_users, hist, cands, target, config, progress)
        row.commit, row.created = report.commit, report.created
        report.model_id = report.model_id or info.get("model_id")
        report.template_version = report.template_version or info.get("template_version")
        if not is_llm and len(llm_users) < len(users):  # like-for-like with LLM rows (this run or merged)
            row.metrics_on_llm_users = M.aggregate([per_user[u] for u in llm_users])
        report.methods[method] = row
        per_method[method] = per_user
        for p in config.positions or []:
            placed = {u: M.place_at(cand[u], target[u], p) for u in run_users}
            r_p, _, _ = run_row(f"{method}@{p}", runner, run_users, hist, placed, target, config, progress)
            positions.setdefault(method, {})[str(p)] = {**r_p.metrics, "n_users": float(r_p.n_users)}
    report.positions = positions or None
    if any(m.startswith("reasonrec-") for m in config.methods):
        notes.append(
            f"LLM rows rank k={config.llm_k} items; the remaining candidates are appended in "
            + ("retriever order" if config.protocol == "full" else "the shuffled cand20 order")
            + " so metrics@20 and MRR are defined; per-user latency = batch time / batch size"
        )
    report.notes = notes
    _gains(report, per_method)
    if config.write:
        path = config.out_dir / f"{config.result_name()}.json"
        if config.merge:
            kept = merge_previous(report, path)
            if kept:
                report.notes.append(f"rows kept from an earlier run of the same setup: {', '.join(kept)}")
        write_all(report, config.out_dir, config.result_name())
    return report


def _split_source(base: Any, agent_cfg: Any, seen: dict[str, list[str]], notes: list[str]) -> Any:
    """The agent's fused source, fitted on the users' pre-test items (the sequence model trains if missing)."""
    from reasonrec.agent.candidates import build_candidate_source

    return build_candidate_source(
        base.dataset, agent_cfg, base._semantic_source, sequences=seen, train=True, notes=notes
    )


def _gains(report: EvalReport, per_method: dict[str, dict[str, dict[str, float]]]) -> None:
    """Each reasonrec-* row's paired-bootstrap gain over `fusion` (and `fusion`'s over each source alone)."""
    pairs = [(m, "fusion") for m in per_method if m.startswith("reasonrec-")]
    pairs += [("fusion", s) for s in (*SOURCES, "recbole-sasrec", "recbole-sasrec-all") if s in per_method]
    for method, base in pairs:
        if base not in per_method or method not in per_method:
            continue
        users = [u for u in per_method[method] if u in per_method[base]]
        gains = {
            key: list(M.paired_bootstrap([per_method[method][u][key] for u in users],
                                         [per_method[base][u][key] for u in users],
                                         BOOTSTRAP["resamples"], BOOTSTRAP["seed"]))
            for key in BOOTSTRAP["metrics"]
        }  # fmt: skip
        row = report.methods[method]
        row.gain_vs = {**(row.gain_vs or {}), base: gains}
    if pairs:
        report.notes.append(
            f"gain_vs: paired bootstrap over users, {BOOTSTRAP['resamples']} resamples, seed {BOOTSTRAP['seed']}, "
            "[delta, 95% low, 95% high]"
        )


def select_users(split: Split, n: int | None, seed: int) -> list[str]:
    """The first `n` users of a seeded permutation (all users when n is None).

    Why a prefix of one permutation: the LLM rows' subset (`llm_users`) is then a subset of the
    classical rows' users for any n, and the same seed gives the same users in every protocol.
    """
    ids = split.user_ids()
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    return order if n is None else order[:n]


def catalogue_minus(catalogue: Sequence[str], history: Sequence[str]) -> list[str]:
    """Every catalogue item not in the history, in catalogue order."""
    seen = set(history)
    return [i for i in catalogue if i not in seen]


def _candidates(config, split, users, hist, catalogue, agent, progress) -> tuple[dict[str, list[str]], list[float]]:
    out: dict[str, list[str]] = {}
    ms: list[float] = []
    for n, u in enumerate(users):
        t = time.perf_counter()
        if config.protocol == "cand20":
            out[u] = cand20_candidates(split, u, catalogue, config.seed, config.candidates)
        else:
            out[u] = [c.item_id for c in agent.candidate_source.candidates(hist[u], config.candidates)]
        ms.append((time.perf_counter() - t) * 1000)
        if progress and (n % 50 == 0 or n + 1 == len(users)):
            progress("candidates", n + 1, len(users))
    return out, ms
