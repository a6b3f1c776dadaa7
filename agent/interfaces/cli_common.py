"""What every `reasonrec` command shares: consoles, common options, the config builder, progress bars.

Command modules (cli.py, cli_chat.py, cli_serve.py, cli_train.py, ...) import from here and never from
each other; `cli.py` registers every command on the app explicitly, so there is no import cycle.
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


def ensure_index(agent: Any, train: bool = False) -> None:
    """Index the catalogue with a progress bar (a no-op costing one count when it is up to date).

    With `train` (what `reasonrec index` does) the collaborative model is trained too when missing,
    with its own bar; other commands serve without it until then and say so.
    """
    bar = progress_bar()
    tasks: dict[str, Any] = {}

    def bar_for(label: str) -> Any:
        def cb(done: int, total: int) -> None:
            if not tasks:  # started at the first batch, so a mistake found earlier prints one line, no bar
                bar.start()
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done, total=total)

        return cb

    try:
        report = agent.index(
            progress=bar_for("indexing catalogue"), train=train, train_progress=bar_for("training SASRec")
        )
    finally:
        bar.stop()
    print_index([report.added, report.updated, report.unchanged], agent.dataset.skipped)
    print_notes(agent.notes)


def print_index(counts: list[int], skipped: list[str]) -> None:
    """The index line (added, updated, unchanged) and the data rows skipped ("file:line: reason")."""
    added, updated, unchanged = counts
    err_console.print(f"[dim]index: {added} added, {updated} updated, {unchanged} unchanged[/dim]")
    if skipped:  # the good rows were kept and indexed
        from rich.markup import escape  # a reason quotes the user's value, which may contain [markup]

        more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
        line = f"{len(skipped)} rows skipped: {' | '.join(skipped[:5])}{more}"
        err_console.print(f"[yellow]{escape(line)}[/yellow]", soft_wrap=True)


def print_notes(notes: list[str]) -> None:
    """What the agent could not do as configured (e.g. the sequence model is not trained yet)."""
    for note in dict.fromkeys(notes):
        err_console.print(f"[yellow]note: {note}[/yellow]", soft_wrap=True)


def recommendations_table(recs: Any, title: str) -> Table:
    table = Table(title=title, show_lines=False)
    for col in ("#", "item", "title", "year", "genres", "source", "reason"):
        table.add_column(col, overflow="fold")
    for r in recs.items:
        src = r.source + ("" if r.reason_source == "model" else "*")
        table.add_row(str(r.rank), r.item_id, r.title, str(r.year or ""), ", ".join(r.genres[:3]), src, r.reason)
    return table


def csv_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def quiet_libraries() -> None:
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
    # The CLI shows its own status line while loading. huggingface_hub reads this when it is imported
    # (transformers asks it), so transformers need not be imported here: a second of every command's start.
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    # transformers' one-time GGUF conversion uses a bare tqdm bar that ignores the setting above (a screen
    # of "Converting and de-quantizing GGUF tensors" on a first `make demo`); our own bars are rich's.
    os.environ.setdefault("TQDM_DISABLE", "1")
    if "huggingface_hub" in sys.modules:  # imported already (a CLI run inside a Python process): tell it
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
