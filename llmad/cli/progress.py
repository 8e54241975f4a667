"""The hooks every command reports through: a rich progress bar per stage and log lines above it on stderr;
with ``--quiet`` nothing but the final summary line (printed by the command)."""
from __future__ import annotations

import contextlib
from typing import Iterator

import typer

from llmad.api.hooks import RunHooks


@contextlib.contextmanager
def cli_hooks(quiet: bool = False, err: bool = False) -> Iterator[RunHooks]:
    """``RunHooks`` drawing a rich bar on stderr (one task per ``stage``) with log lines on stdout (``err``:
    stderr), or silent ones with ``quiet``."""
    if quiet:
        yield RunHooks(log=None, quiet=True)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=console, transient=True)
    task: dict[str, object] = {}

    def stage(text: str, total: float | None = None) -> None:
        if "id" in task:
            bar.update(task["id"], visible=False)
        task["id"] = bar.add_task(text, total=total)
        if not console.is_terminal:  # no bar is drawn into a pipe or a log: say the stage once instead
            console.print(text, markup=False, highlight=False)

    def advance(n: float = 1) -> None:
        if "id" in task:
            bar.advance(task["id"], n)

    def log(msg: str) -> None:
        typer.echo(msg, err=err)  # the live bar redirects stdout/stderr above itself

    with bar:
        yield RunHooks(log=log, stage=stage, advance=advance)


__all__ = ["cli_hooks"]
