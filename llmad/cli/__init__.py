"""`llmad` command line: a thin layer over the Python API. Each concern registers its commands in its own module.

Errors caused by input (``LlmadError``) print one line and exit 2, never a traceback.
"""
from __future__ import annotations

import sys

# OMP_WAIT_POLICY=PASSIVE is set by importing llmad (its __init__ says why).
import typer

from llmad.cli.apps import app, data_app

# One module per concern; each adds its commands to `app` (or `data_app`) on import, in this order (`llmad --help`).
from llmad.cli import data, jobs, render, baseline, sft, icl, nll, stream, numeric, adapt, transfer, compare  # noqa: F401

__all__ = ["app", "data_app", "main", "show_named_warnings"]


def show_named_warnings() -> None:
    """Show each named warning (``llmad.errors.warn``) once per distinct message as ``warning [name]: message``."""
    import warnings

    from llmad.errors import LlmadWarning

    shown = getattr(warnings.showwarning, "__wrapped__", warnings.showwarning)

    def show(message, category, filename, lineno, file=None, line=None):
        if isinstance(message, LlmadWarning):
            typer.echo(f"warning [{message.name}]: {message.message}", err=True)
        else:
            shown(message, category, filename, lineno, file, line)

    show.__wrapped__ = shown
    warnings.showwarning = show
    # Re-adding the filter also resets what was already shown, so each command (in-process tests too) shows its own.
    warnings.simplefilter("default", LlmadWarning)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; turn LlmadError into a one-line message and exit code 2."""
    from llmad.errors import LlmadError
    from llmad.interrupts import clear, interrupted_message

    clear()
    show_named_warnings()
    try:
        # With standalone_mode=False typer returns the exit code instead of exiting: pass it on.
        rc = app(args=argv, prog_name="llmad", standalone_mode=False)
        if isinstance(rc, int) and rc:
            if rc == 130:  # typer.core._main turns a KeyboardInterrupt inside the command into exit code 130
                raise KeyboardInterrupt
            sys.exit(rc)
    except LlmadError as e:
        typer.echo(f"llmad: error: {e}", err=True)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.echo("llmad: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo(interrupted_message(), err=True)
        sys.exit(130)
    except Exception as e:
        # Usage errors (typer bundles its own click, so match by shape rather than by class).
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            sys.exit(e.exit_code or 2)
        raise
