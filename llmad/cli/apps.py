"""The typer apps every command module registers on (kept apart from ``llmad.cli`` so that the command modules
import this one, not the package that imports them: no import cycle)."""
from __future__ import annotations

import typer

app = typer.Typer(help="Anomaly detection for workflow jobs and service metrics with language models.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Find, fetch and describe datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
