"""The `reasonrec` command line.

Examples (all run offline on the packaged defaults)::

    reasonrec demo                       # index ML-100K if needed, recommend for one user
    reasonrec index                      # embed the catalogue into Chroma (only new/changed items)
    reasonrec recommend --user 196 -k 5  # a table; --json prints the Recommendations object
    reasonrec recommend --history 50,172,181 --query "a funny sci-fi"
    reasonrec evaluate --protocol cand20 --users 200   # methods side by side -> bench/results/

A user mistake (unknown user, missing file, bad option) prints one line and exits with status 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from reasonrec.errors import ReasonRecError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="LLM recommender agent: retrieve, rank with reasons, validate.",
)
console = Console()
err_console = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML/JSON AgentConfig file.")]
ModelOpt = Annotated[
    str | None, typer.Option("--model", help="HF id, local folder or .gguf (default: packaged SmolLM2).")
]
AdapterOpt = Annotated[str | None, typer.Option("--adapter", help="LoRA adapter folder from `reasonrec train`.")]
DatasetOpt = Annotated[
    str | None, typer.Option("--dataset", help="'ml-100k', a GroupLens folder, or 'items.csv,interactions.csv'.")
]
ChromaOpt = Annotated[
    str | None,
    typer.Option("--chroma-url", help="Use a Chroma server (http://host:port) instead of the embedded store."),
]
StoreOpt = Annotated[Path | None, typer.Option("--store", help="Folder of the embedded Chroma store.")]


def build_config(
    config: Path | None = None,
    model: str | None = None,
    adapter: str | None = None,
    dataset: str | None = None,
    chroma_url: str | None = None,
    store: Path | None = None,
    **ranker: Any,
) -> Any:
    """AgentConfig from an optional file, with command-line flags taking precedence."""
    from reasonrec.agent.config import AgentConfig

    cfg = AgentConfig.from_file(config) if config else AgentConfig()
    data = cfg.model_dump()
    if model:
        data["model"]["name_or_path"] = model
    if adapter:
        data["model"]["adapter"] = adapter
    if dataset:
        data["dataset"] = dataset
        if dataset != "ml-100k" and data["retrieval"]["collection"] == "ml-100k":
            data["retrieval"]["collection"] = Path(dataset.split(",")[0]).stem.replace(" ", "_")[:60] or "catalogue"
    if chroma_url:
        data["retrieval"]["chroma_url"] = chroma_url
    if store:
        data["retrieval"]["persist_dir"] = str(store)
    data["ranker"].update({k: v for k, v in ranker.items() if v is not None})
    return AgentConfig.build(**data)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )


def make_agent(cfg: Any) -> Any:
    from reasonrec.agent.api import RecommenderAgent

    return RecommenderAgent(cfg)


def ensure_index(agent: Any) -> None:
    """Index the catalogue with a progress bar (a no-op costing one count when it is up to date)."""
    bar = progress_bar()
    tasks: list[Any] = []

    def cb(done: int, total: int) -> None:
        if not tasks:  # started at the first batch, so a mistake found earlier prints one line, no bar
            bar.start()
            tasks.append(bar.add_task("indexing catalogue", total=total))
        bar.update(tasks[0], completed=done, total=total)

    try:
        report = agent.index(progress=cb)
    finally:
        bar.stop()
    err_console.print(f"[dim]index: {report.added} added, {report.updated} updated, {report.unchanged} unchanged[/dim]")
    skipped = agent.dataset.skipped  # "file:line: reason"; the good rows were kept and indexed
    if skipped:
        from rich.markup import escape  # a reason quotes the user's value, which may contain [markup]

        more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
        line = f"{len(skipped)} rows skipped: {' | '.join(skipped[:5])}{more}"
        err_console.print(f"[yellow]{escape(line)}[/yellow]", soft_wrap=True)


def recommendations_table(recs: Any, title: str) -> Table:
    table = Table(title=title, show_lines=False)
    for col in ("#", "item", "title", "year", "genres", "source", "reason"):
        table.add_column(col, overflow="fold")
    for r in recs.items:
        src = r.source + ("" if r.reason_source == "model" else "*")
        table.add_row(str(r.rank), r.item_id, r.title, str(r.year or ""), ", ".join(r.genres[:3]), src, r.reason)
    return table


@app.command()
def index(
    config: ConfigOpt = None, dataset: DatasetOpt = None, chroma_url: ChromaOpt = None, store: StoreOpt = None
) -> None:
    """Embed the catalogue into Chroma; re-running adds nothing unless items changed.

    Example: reasonrec index --dataset items.csv,interactions.csv
    """
    agent = make_agent(build_config(config, dataset=dataset, chroma_url=chroma_url, store=store))
    ensure_index(agent)


@app.command()
def recommend(
    user: Annotated[str | None, typer.Option("--user", "-u", help="User id from the interactions.")] = None,
    history: Annotated[str | None, typer.Option("--history", help="Comma-separated item ids, oldest first.")] = None,
    query: Annotated[str | None, typer.Option("--query", "-q", help="Free-text request.")] = None,
    k: Annotated[int, typer.Option("-k", min=1, help="Number of recommendations.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the Recommendations object as JSON.")] = False,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    dataset: DatasetOpt = None,
    chroma_url: ChromaOpt = None,
    store: StoreOpt = None,
) -> None:
    """Recommend k items with reasons for a user, a history, or a request.

    Example: reasonrec recommend --user 196 -k 5
    """
    if user is None and history is None and query is None:
        raise typer.BadParameter("give --user, --history or --query")
    agent = make_agent(build_config(config, model, adapter, dataset, chroma_url, store))
    hist = [h.strip() for h in history.split(",") if h.strip()] if history else None
    with err_console.status("ranking…"):
        recs = agent.recommend(user_id=user, history=hist, query=query, k=k)
    if as_json:
        print(recs.model_dump_json(indent=2))
        return
    console.print(recommendations_table(recs, f"Recommendations for {user or 'you'}"))
    console.print(
        f"[dim]{recs.model_id} · {recs.mode} · template {recs.template_version} · "
        f"{recs.n_model} by model, {recs.n_fallback} fallback · {recs.timings['total']:.0f} ms "
        f"(* = reason built from facts)[/dim]"
    )


@app.command()
def demo(
    user: Annotated[str, typer.Option("--user", "-u", help="ML-100K user to show.")] = "196",
    k: Annotated[int, typer.Option("-k", min=1, help="Number of recommendations.")] = 5,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    store: StoreOpt = None,
) -> None:
    """Index ML-100K if needed, show a user's recent history and k recommendations with reasons.

    Example: reasonrec demo --user 196 -k 5
    """
    import time

    t0 = time.perf_counter()
    agent = make_agent(build_config(config, model, adapter, store=store))
    ensure_index(agent)
    hist = agent.dataset.history(user)
    table = Table(title=f"User {user}: last 5 of {len(hist)} items watched")
    for col in ("item", "title", "year", "genres"):
        table.add_column(col)
    for i in hist[-5:]:
        it = agent.items[i]
        table.add_row(i, it.title, str(it.year or ""), ", ".join(it.genres))
    console.print(table)
    with err_console.status("loading the model (the first run converts SmolLM2 once)…"):
        _ = agent.ranker
    recs = agent.recommend(user_id=user, k=k)
    console.print(recommendations_table(recs, f"Top {k} for user {user}"))
    console.print(
        f"[dim]{recs.model_id} · {recs.mode} · {recs.n_model} by model, {recs.n_fallback} fallback · "
        f"recommend {recs.timings['total']:.0f} ms · demo {time.perf_counter() - t0:.1f} s "
        f"(* = reason built from facts)[/dim]"
    )


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@app.command()
def evaluate(
    protocol: Annotated[str, typer.Option(help="full (retrieve then rank) or cand20 (pick from 20).")] = "full",
    candidates: Annotated[int, typer.Option(help="Candidates per user (20 or 50 for full).")] = 20,
    methods: Annotated[
        str | None, typer.Option(help="Comma-separated methods (default: all classical + zero-shot).")
    ] = None,
    users: Annotated[int | None, typer.Option(help="Evaluate a seeded subset of users (default: all 943).")] = None,
    llm_users: Annotated[int | None, typer.Option(help="Separate, smaller subset for LLM methods.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for user subsets, cand20 negatives, random ranker.")] = 0,
    positions: Annotated[
        str | None, typer.Option(help="cand20: fix the target at these positions, e.g. 1,5,10,20.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Results file stem (default <protocol><candidates>).")] = None,
    out_dir: Annotated[Path, typer.Option(help="Where JSON, Markdown and PNG files go.")] = Path("bench/results"),
    adapter: AdapterOpt = None,
    batch_size: Annotated[int, typer.Option(help="Users per batched LLM forward pass.")] = 8,
    config: ConfigOpt = None,
    machine: Annotated[str | None, typer.Option(help="Machine label recorded in the results.")] = None,
) -> None:
    """Measure methods side by side on ML-100K (leave-one-out by time) and write bench/results/<name>.*

    Example: reasonrec evaluate --protocol cand20 --methods popularity,itemknn,reasonrec-zeroshot-generative --users 200
    """
    from reasonrec.finetune.evaluation.run import EvalConfig
    from reasonrec.finetune.evaluation.run import evaluate as run_evaluation

    fields = {
        "protocol": protocol,
        "candidates": candidates,
        "methods": _csv(methods),
        "users": users,
        "llm_users": llm_users,
        "seed": seed,
        "name": name,
        "out_dir": out_dir,
        "adapter": adapter,
        "batch_size": batch_size,
        "agent_config": config,
        "machine": machine,
        "positions": [int(p) for p in _csv(positions)] if positions else None,
    }
    cfg = EvalConfig.build(**{k: v for k, v in fields.items() if v is not None})
    with progress_bar() as bar:
        tasks: dict[str, Any] = {}

        def cb(task: str, done: int, total: int) -> None:
            if task not in tasks:
                tasks[task] = bar.add_task(task, total=total)
            bar.update(tasks[task], completed=done, total=total)

        report = run_evaluation(cfg, progress=cb)
    table = Table(title=f"{cfg.protocol} · {cfg.candidates} candidates · seed {cfg.seed}")
    for col in ("method", "users", "recall@10", "ndcg@10", "hr@1", "mrr", "valid", "fallback", "p50 ms"):
        table.add_column(col)
    for method, row in report.methods.items():
        m = row.metrics
        table.add_row(
            method,
            str(row.n_users),
            *(f"{m.get(x, float('nan')):.4f}" for x in ("recall@10", "ndcg@10", "hr@1", "mrr")),
            f"{row.valid_rate:.3f}",
            f"{row.fallback_rate:.3f}",
            f"{row.latency_ms['p50']:.1f}",
        )
    console.print(table)
    console.print(f"[dim]written to {cfg.out_dir / cfg.result_name()}.json/.md/_*.png[/dim]")


def _quiet_libraries() -> None:
    """Keep the terminal readable: library warnings go to the log level 'error'.

    Why: transformers prints a weights-loading bar on every load and bitsandbytes announces optional
    kernels it cannot find; neither helps a user.
    """
    import logging
    import warnings

    # peft calls a transformers property that transformers 5 deprecates: noise on every adapter load
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    logging.getLogger("chromadb").setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the CLI shows its own status line while loading


def main() -> None:
    """Console entry point: user mistakes become one line on stderr and exit status 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    _quiet_libraries()
    try:
        # Standalone mode: click/typer print usage errors (bad option, -k 0) as a short message, exit 2.
        app()
    except ReasonRecError as e:
        err_console.print(f"[bold red]error:[/bold red] {e}", soft_wrap=True)
        sys.exit(2)


from reasonrec.agent.interfaces import cli_chat  # noqa: E402,F401,I001  (registers `reasonrec chat`: the terminal chat)
from reasonrec.agent.interfaces import cli_serve  # noqa: E402,F401  (registers `reasonrec serve`: HTTP API + web chat)
from reasonrec.agent.interfaces import cli_train  # noqa: E402,F401  (registers `reasonrec train`: LoRA fine-tuning)

if __name__ == "__main__":
    main()
