"""`reasonrec chat`: talk to the recommender in the terminal, a rich REPL over `ChatSession`.

Examples::

    reasonrec chat                                   # a new user: say what you are in the mood for
    reasonrec chat --user 196 -k 5                   # start from a dataset user's history
    reasonrec chat --session 3f2a9c...               # continue a stored conversation
    reasonrec chat -m "a funny sci-fi from the 80s" -m "not the second"   # scripted, no prompt

In the REPL and in scripted `-m` turns: /like N and /dislike N give a thumbs up or down to item N of the
last list, /state shows what the session remembers, /quit (or Ctrl-D) leaves; the session id is printed
so it can be resumed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.markup import escape

from reasonrec.agent.interfaces import cli_common as cli
from reasonrec.errors import ReasonRecError

_HELP = "/like N, /dislike N (item N of the last list), /state, /quit"


def chat(
    user: Annotated[str | None, typer.Option("--user", "-u", help="Start from this dataset user's history.")] = None,
    session: Annotated[str | None, typer.Option("--session", "-s", help="Continue this stored session.")] = None,
    message: Annotated[
        list[str] | None, typer.Option("--message", "-m", help="Send these messages in order, then exit.")
    ] = None,
    k: Annotated[
        int | None, typer.Option("-k", min=1, max=50, help="List length of a new session (default 5).")
    ] = None,
    sessions: Annotated[
        Path | None, typer.Option("--sessions", help="Session database (default ~/.cache/reasonrec/sessions.sqlite3).")
    ] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="Ranker mode: hybrid, scoring or generative.")] = None,
    config: cli.ConfigOpt = None,
    model: cli.ModelOpt = None,
    adapter: cli.AdapterOpt = None,
    dataset: cli.DatasetOpt = None,
    chroma_url: cli.ChromaOpt = None,
    store: cli.StoreOpt = None,
) -> None:
    """Chat about what to watch: preferences, "more like <title>", critiques ("not that one", "older").

    Example: reasonrec chat --user 196 -m "a comedy from the 80s" -m "no romance"
    """
    from reasonrec.agent.chat.session import open_session
    from reasonrec.agent.chat.store import SessionStore

    agent = cli.make_agent(cli.build_config(config, model, adapter, dataset, chroma_url, store, mode=mode))
    db = SessionStore(sessions) if sessions else None
    with cli.err_console.status("loading the catalogue, the index and the model…"):
        _ = agent.candidate_source
        _ = agent.ranker
    session_obj = open_session(agent, session, user_id=user, store=db, k=None if session else k)
    cli.console.print(f"[dim]session {session_obj.id} · resume with `reasonrec chat --session {session_obj.id}`[/dim]")
    if message:  # scripted turns: the same commands as the REPL ("/state", "/like 2"), then exit
        outcomes = []
        for text in message:
            cli.console.print(f"[bold cyan]you>[/bold cyan] {escape(text)}")
            outcomes.append(handle(session_obj, text.strip()))
            if outcomes[-1] == "quit":
                break
        if "error" in outcomes:  # a script learns that a turn failed; the later turns still ran
            raise typer.Exit(1)
        return
    cli.console.print(f"[dim]Tell me what you are in the mood for. {_HELP}[/dim]")
    repl(session_obj)


def repl(session: Any) -> None:
    """Read messages until /quit or end of input; a mistake in one turn is shown and the chat goes on."""
    while True:
        try:
            text = cli.console.input("[bold cyan]you>[/bold cyan] ").strip()
        except (EOFError, KeyboardInterrupt):
            cli.console.print()
            return
        if text and handle(session, text) == "quit":
            return


def handle(session: Any, text: str) -> Literal["ok", "error", "quit"]:
    """One line of input: a command (/state, /like N, /dislike N, /quit) or a message.

    A mistake is shown as one line and the chat goes on, in the REPL and in scripted `-m` turns alike.
    """
    if text in ("/quit", "/exit", "/q"):
        return "quit"
    try:
        if text == "/state":
            cli.console.print_json(session.state.model_dump_json(exclude={"turns"}))
        elif text.split(maxsplit=1)[0] in ("/like", "/dislike"):
            show_turn(session.feedback(_item_of_last(session, text), liked=text.startswith("/like")))
        elif text.startswith("/"):
            cli.console.print(f"[yellow]unknown command {escape(text)!r}; {_HELP}[/yellow]")
        else:
            show_turn(session.send(text))
    except ReasonRecError as e:
        cli.err_console.print(f"[bold red]error:[/bold red] {escape(str(e))}", soft_wrap=True)
        return "error"
    return "ok"


def show_turn(turn: Any) -> None:
    """The reply, then the recommendations table or the numbered options of a clarifying question."""
    cli.console.print(f"[bold green]reasonrec>[/bold green] {escape(turn.reply)}")
    if turn.clarification:
        for n, ref in enumerate(turn.clarification, 1):
            cli.console.print(f"  {n}. {escape(ref.natural_label())}")
    if turn.recommendations is not None:
        cli.console.print(cli.recommendations_table(turn.recommendations, f"turn {turn.turn}"))
    c = turn.constraints
    chips = [*c.genres, *(f"no {g}" for g in c.excluded_genres)]
    if c.year_min is not None or c.year_max is not None:
        chips.append(f"{c.year_min or '…'}–{c.year_max or '…'}")
    chips += [f"k={c.k}", f"{turn.timings.get('total_ms', 0):.0f} ms"]
    cli.console.print(f"[dim]{escape(' · '.join(chips))}[/dim]")


def _item_of_last(session: Any, command: str) -> str:
    """Item id of "/like 2": the 2nd item of the last list."""
    from reasonrec.errors import ConfigError

    last = session.state.last
    arg = command.split(maxsplit=1)[1].strip() if " " in command else ""
    if not arg.isdigit() or not 1 <= int(arg) <= len(last):
        raise ConfigError(f"`{command}`: give the number of an item of the last list, 1 to {len(last)}")
    return last[int(arg) - 1]
