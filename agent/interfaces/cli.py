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
from rich.table import Table

from reasonrec.agent.interfaces import cli_chat, cli_daemon, cli_handlers, cli_serve, cli_sessions, cli_train
from reasonrec.agent.interfaces.cli_common import (
    AdapterOpt,
    ChromaOpt,
    ConfigOpt,
    DatasetOpt,
    ModelOpt,
    StoreOpt,
    build_config,
    console,
    csv_list,
    ensure_index,
    err_console,
    make_agent,
    print_index,
    progress_bar,
    quiet_libraries,
)
from reasonrec.errors import ReasonRecError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="LLM recommender agent: retrieve, rank with reasons, validate.",
)


@app.command()
def index(
    config: ConfigOpt = None, dataset: DatasetOpt = None, chroma_url: ChromaOpt = None, store: StoreOpt = None
) -> None:
    """Embed the catalogue into Chroma and train the collaborative model; re-running redoes only what changed.

    Example: reasonrec index --dataset items.csv,interactions.csv
    """
    agent = make_agent(build_config(config, dataset=dataset, chroma_url=chroma_url, store=store))
    cli_daemon.stop_all()  # a background process would keep serving the old index
    ensure_index(agent, train=True)


@app.command()
def recommend(
    user: Annotated[str | None, typer.Option("--user", "-u", help="User id from the interactions.")] = None,
    history: Annotated[str | None, typer.Option("--history", help="Comma-separated item ids, oldest first.")] = None,
    query: Annotated[str | None, typer.Option("--query", "-q", help="Free-text request.")] = None,
    k: Annotated[int | None, typer.Option("-k", min=1, help="Number of recommendations (default ranker.k).")] = None,
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
    cfg = build_config(config, model, adapter, dataset, chroma_url, store)
    hist = [h.strip() for h in history.split(",") if h.strip()] if history else None
    args = {"user_id": user, "history": hist, "query": query, "k": k}
    with err_console.status("ranking…"):
        reply = cli_daemon.ask(cfg, "recommend", args)  # the background process, when one runs (cli_daemon.py)
        if reply is None:
            reply = cli_handlers.recommend(make_agent(cfg), args)
            cli_daemon.start(cfg, "recommend", args)
    cli_handlers.print_recommendations(reply, f"Recommendations for {user or 'you'}", as_json)


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
    cfg = build_config(config, model, adapter, store=store)
    args = {"user": user, "k": k}
    with err_console.status("ranking…"):
        reply = cli_daemon.ask(cfg, "demo", args)
    if reply is not None:
        print_index(reply["index"], reply["skipped"])
        cli_handlers.print_history(reply, user)
    else:  # in-process: each step shows as it happens (a first run indexes and converts the model)
        agent = make_agent(cfg)
        ensure_index(agent)
        cli_handlers.print_history(cli_handlers.history_reply(agent, user), user)
        with err_console.status("loading the model (the first run converts SmolLM2 once)…"):
            _ = agent.ranker
        reply = cli_handlers.recommend(agent, {"user_id": user, "k": k})
        cli_daemon.start(cfg, "demo", args)
    footer = f" · demo {time.perf_counter() - t0:.1f} s"
    cli_handlers.print_recommendations(reply, f"Top {k} for user {user}", footer=footer)


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
    batch_size: Annotated[
        int | None, typer.Option(help="Users per batched LLM forward pass (default: the config's ranker.batch_size).")
    ] = None,
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
        "methods": csv_list(methods),
        "users": users,
        "llm_users": llm_users,
        "seed": seed,
        "name": name,
        "out_dir": out_dir,
        "adapter": adapter,
        "batch_size": batch_size,
        "agent_config": config,
        "machine": machine,
        "positions": [int(p) for p in csv_list(positions)] if positions else None,
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


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user mistakes become one line on stderr and exit status 2.

    Args:
        argv: the arguments after the program name (default: the process's own), e.g. ["train", "-o", "runs/x"].
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    quiet_libraries()
    try:
        # Standalone mode: click/typer print usage errors (bad option, -k 0) as a short message, exit 2.
        app(args=argv, prog_name="reasonrec")
    except ReasonRecError as e:
        err_console.print(f"[bold red]error:[/bold red] {e}", soft_wrap=True)
        sys.exit(2)


# Every command, registered in one place (the command modules import nothing from this one).
app.command("chat")(cli_chat.chat)
app.command("serve")(cli_serve.serve)
app.command("train")(cli_train.train)
app.command("calibrate")(cli_train.calibrate_cmd)
app.add_typer(cli_sessions.app, name="sessions")
app.add_typer(cli_daemon.app, name="daemon")

if __name__ == "__main__":
    main()
