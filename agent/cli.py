"""The `reasonrec` command line.

Examples (all run offline on the packaged defaults)::

    reasonrec demo                       # index ML-100K if needed, recommend for one user
    reasonrec index                      # embed the catalogue into Chroma (only new/changed items)
    reasonrec recommend --user 196 -k 5  # a table; --json prints the Recommendations object
    reasonrec recommend --history 50,172,181 --query "a funny sci-fi"

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

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="LLM recommender agent: retrieve, rank with reasons, validate.")
console = Console()
err_console = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML/JSON AgentConfig file.")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="HF id, local folder or .gguf (default: packaged SmolLM2).")]
AdapterOpt = Annotated[str | None, typer.Option("--adapter", help="LoRA adapter folder from `reasonrec train`.")]
DatasetOpt = Annotated[str | None, typer.Option("--dataset", help="'ml-100k', a GroupLens folder, or 'items.csv,interactions.csv'.")]
ChromaOpt = Annotated[str | None, typer.Option("--chroma-url", help="Use a Chroma server (http://host:port) instead of the embedded store.")]
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
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err_console, transient=False)


def make_agent(cfg: Any) -> Any:
    from reasonrec.agent.agent import RecommenderAgent

    return RecommenderAgent(cfg)


def ensure_index(agent: Any) -> None:
    """Index the catalogue with a progress bar (a no-op costing one count when it is up to date)."""
    with progress_bar() as bar:
        task = bar.add_task("indexing catalogue", total=None)

        def cb(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        report = agent.index(progress=cb)
    err_console.print(f"[dim]index: {report.added} added, {report.updated} updated, {report.unchanged} unchanged[/dim]")


def recommendations_table(recs: Any, title: str) -> Table:
    table = Table(title=title, show_lines=False)
    for col in ("#", "item", "title", "year", "genres", "source", "reason"):
        table.add_column(col, overflow="fold")
    for r in recs.items:
        src = r.source + ("" if r.reason_source == "model" else "*")
        table.add_row(str(r.rank), r.item_id, r.title, str(r.year or ""), ", ".join(r.genres[:3]), src, r.reason)
    return table


@app.command()
def index(config: ConfigOpt = None, dataset: DatasetOpt = None, chroma_url: ChromaOpt = None, store: StoreOpt = None) -> None:
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
    config: ConfigOpt = None, model: ModelOpt = None, adapter: AdapterOpt = None, dataset: DatasetOpt = None,
    chroma_url: ChromaOpt = None, store: StoreOpt = None,
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
    console.print(f"[dim]{recs.model_id} · {recs.mode} · template {recs.template_version} · "
                  f"{recs.n_model} by model, {recs.n_fallback} fallback · {recs.timings['total']:.0f} ms "
                  f"(* = reason built from facts)[/dim]")


@app.command()
def demo(
    user: Annotated[str, typer.Option("--user", "-u", help="ML-100K user to show.")] = "196",
    k: Annotated[int, typer.Option("-k", min=1, help="Number of recommendations.")] = 5,
    config: ConfigOpt = None, model: ModelOpt = None, adapter: AdapterOpt = None, store: StoreOpt = None,
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
    console.print(f"[dim]{recs.model_id} · {recs.mode} · {recs.n_model} by model, {recs.n_fallback} fallback · "
                  f"recommend {recs.timings['total']:.0f} ms · demo {time.perf_counter() - t0:.1f} s "
                  f"(* = reason built from facts)[/dim]")


def main() -> None:
    """Console entry point: user mistakes become one line on stderr and exit status 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    try:
        app(standalone_mode=False)
    except ReasonRecError as e:
        err_console.print(f"[bold red]error:[/bold red] {e}")
        sys.exit(2)
    except Exception as e:  # click's usage errors are printed by click already in standalone mode
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(2)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()
