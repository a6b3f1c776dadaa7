"""What `reasonrec recommend` and `reasonrec demo` compute, as JSON-able replies, and how they are printed.

One place for both ways a command runs: in the CLI's own process, or in the background process
(cli_daemon.py), which sends the same reply over its socket. The printing functions read only the reply,
so a table looks the same whichever process computed it.
"""

from __future__ import annotations

from typing import Any

from reasonrec.agent.interfaces.cli_common import console, print_notes, recommendations_table
from reasonrec.agent.timing import timing_line


def recommend(agent: Any, args: dict[str, Any]) -> dict[str, Any]:
    """`agent.recommend(**args)` as a reply: the Recommendations JSON (as `--json` prints it) and the notes."""
    recs = agent.recommend(**args)
    return {"recs": recs.model_dump_json(indent=2), "notes": list(dict.fromkeys(agent.notes))}


def demo(agent: Any, args: dict[str, Any]) -> dict[str, Any]:
    """The demo's index report, the user's last five items and the recommendations (`args`: user, k).

    As the in-process demo (`ensure_index`): new or changed items are embedded, the sequence model is not
    trained (that is `reasonrec index`)."""
    report = agent.index(train=False)
    return {**index_reply(agent, report), **history_reply(agent, args["user"]),
            **recommend(agent, {"user_id": args["user"], "k": args["k"]})}  # fmt: skip


def handle(agent: Any, op: str, args: dict[str, Any]) -> dict[str, Any]:
    """The reply to one request of the background process.

    Raises:
        ConfigError: an unknown `op`. Whatever the agent raises for the request.
    """
    from reasonrec.errors import ConfigError

    forget = getattr(agent.ranker, "forget_prefixes", None)
    if forget is not None:  # the results of a fresh process (cli_daemon.py, "Same results")
        forget()
    if op == "recommend":
        return recommend(agent, args)
    if op == "demo":
        return demo(agent, args)
    raise ConfigError(f"`op` must be 'recommend' or 'demo', got {op!r}")


def index_reply(agent: Any, report: Any) -> dict[str, Any]:
    return {"index": [report.added, report.updated, report.unchanged], "skipped": list(agent.dataset.skipped)}


def history_reply(agent: Any, user: str) -> dict[str, Any]:
    hist = agent.dataset.history(user)
    items = [agent.items[i] for i in hist[-5:]]
    rows = [[it.id, it.title, str(it.year or ""), ", ".join(it.genres)] for it in items]
    return {"n_history": len(hist), "history": rows}


def print_history(reply: dict[str, Any], user: str) -> None:
    from rich.table import Table

    table = Table(title=f"User {user}: last 5 of {reply['n_history']} items watched")
    for col in ("item", "title", "year", "genres"):
        table.add_column(col)
    for row in reply["history"]:
        table.add_row(*row)
    console.print(table)


def print_recommendations(reply: dict[str, Any], title: str, as_json: bool = False, footer: str = "") -> None:
    """The table (or, with `as_json`, the Recommendations JSON) and the footer line.

    `footer` is added after the timings (the demo's wall time); a reply from the background process says so.
    """
    from reasonrec.agent.schemas import Recommendations

    print_notes(reply["notes"])
    if as_json:
        print(reply["recs"])
        return
    recs = Recommendations.model_validate_json(reply["recs"])
    console.print(recommendations_table(recs, title))
    where = f" · background process {reply['pid']} (`reasonrec daemon stop`)" if "pid" in reply else ""
    console.print(
        f"[dim]{recs.model_id} · {recs.mode} · template {recs.template_version} · "
        f"{recs.order_line()} · {timing_line(recs.timings)}{footer}{where} "
        f"(* = reason built from facts)[/dim]"
    )
