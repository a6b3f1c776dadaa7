"""`reasonrec sessions list|delete|purge`: see and remove the chat sessions stored on this machine.

    reasonrec sessions list                        # newest first: id, user, turns, likes, last active
    reasonrec sessions list --limit 50 --offset 50 --json
    reasonrec sessions delete 3f2c9a...            # one session with every turn and like
    reasonrec sessions purge --idle-days 30        # every session idle for more than 30 days
    reasonrec sessions purge --all                 # every session

Chat sessions are personal data (what someone asked for, liked and disliked). They live only in one
SQLite file (`--sessions`, default <REASONREC_HOME>/sessions.sqlite3); nothing is sent anywhere.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.table import Table

from reasonrec.agent.interfaces.cli_common import console, err_console
from reasonrec.agent.interfaces.cli_serve import DEFAULT_IDLE_DAYS, SessionsOpt, open_sessions
from reasonrec.errors import ConfigError, UnknownSessionError

app = typer.Typer(no_args_is_help=True, help="List and delete stored chat sessions (personal data).")


@app.command("list")
def list_sessions(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Sessions per page.")] = 20,
    offset: Annotated[int, typer.Option(min=0, help="Sessions to skip (newest first).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object with the page and the total.")] = False,
    sessions: SessionsOpt = None,
) -> None:
    """Stored sessions, most recently active first.

    Example: reasonrec sessions list --limit 10
    """
    store = open_sessions(sessions, 0)
    page, total = store.summaries(limit, offset), store.count()
    if as_json:
        print(json.dumps({"total": total, "offset": offset, "sessions": [s.model_dump() for s in page]}, indent=1))
        return
    table = Table(title=f"{len(page)} of {total} sessions in {store.path}")
    for col in ("id", "user", "turns", "liked", "disliked", "last active"):
        table.add_column(col)
    for s in page:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.updated_at))
        table.add_row(s.id, s.user_id or "-", str(s.n_turns), str(s.n_liked), str(s.n_disliked), when)
    console.print(table)


@app.command("delete")
def delete_sessions(
    session_ids: Annotated[list[str], typer.Argument(help="Session ids (from `reasonrec sessions list`).")],
    sessions: SessionsOpt = None,
) -> None:
    """Delete sessions with every stored turn and like; an unknown id is an error (exit 2).

    Example: reasonrec sessions delete 3f2c9a0b1e5d4c7a8b9c0d1e2f3a4b5c
    """
    store = open_sessions(sessions, 0)
    missing = [sid for sid in session_ids if not store.delete(sid)]
    deleted = len(session_ids) - len(missing)
    err_console.print(f"deleted {deleted} session(s)")
    if missing:
        raise UnknownSessionError(f"unknown chat session(s) {missing} in {store.path}; see `reasonrec sessions list`")


@app.command("purge")
def purge_sessions(
    idle_days: Annotated[
        float | None,
        typer.Option(min=0.0, help=f"Delete sessions idle for more than this (default {DEFAULT_IDLE_DAYS:g})."),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Delete every session.")] = False,
    sessions: SessionsOpt = None,
) -> None:
    """Delete every session idle for longer than `--idle-days` (or all of them with `--all`).

    Example: reasonrec sessions purge --idle-days 7
    """
    if all_ and idle_days is not None:
        raise ConfigError("give either --all or --idle-days, not both")
    store = open_sessions(sessions, 0)
    idle_s = 0.0 if all_ else (DEFAULT_IDLE_DAYS if idle_days is None else idle_days) * 86400
    n = store.purge(idle_s)
    err_console.print(f"deleted {n} session(s); {store.count()} left")
