"""The typer apps every command module registers on (kept apart from ``llmad.cli`` so that the command modules
import this one, not the package that imports them: no import cycle)."""
from __future__ import annotations

from typing import Optional

import typer

from llmad.cli.options import LlmadGroup

# -h is --help on every command (click passes help_option_names down to the sub-commands).
CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(help="Anomaly detection for workflow jobs and service metrics with language models.",
                  no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False, cls=LlmadGroup,
                  context_settings=CONTEXT)
data_app = typer.Typer(help="Find, fetch and describe datasets.", no_args_is_help=True, cls=LlmadGroup)
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("llmad")
        except PackageNotFoundError:  # a source checkout that was never installed
            from llmad import __version__ as v
        typer.echo(f"llmad {v}")
        raise typer.Exit()


@app.callback()
def _root(version: Optional[bool] = typer.Option(None, "--version", "-V", callback=_version, is_eager=True,
                                                 help="Print the version and exit.")) -> None:
    """Anomaly detection for workflow jobs and service metrics with language models."""
