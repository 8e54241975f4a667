"""`llmad` command line: a thin layer over the Python API. Each concern registers its commands in its own module.

Errors caused by input (``LlmadError``) print one line and exit 2, never a traceback.
"""
from __future__ import annotations

import sys

import typer

from llmad.cli.apps import app, data_app

# One module per concern; each adds its commands to `app` (or `data_app`) on import, in this order (`llmad --help`).
from llmad.cli import data, render, baseline, sft, icl, stream, numeric, compare  # noqa: F401

__all__ = ["app", "data_app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; LlmadError -> one line and exit 2; named warnings -> ``warning [name]: ...``."""
    import warnings

    from llmad import interrupts
    from llmad.errors import LlmadError, LlmadWarning

    def show(message, category, filename, lineno, file=None, line=None):
        if isinstance(message, LlmadWarning):
            typer.echo(f"warning [{message.name}]: {message.message}", err=True)
        else:
            shown(message, category, filename, lineno, file, line)

    interrupts.clear()
    with warnings.catch_warnings():
        # Named warnings show once per distinct message per command, in our format, even under pytest's capture.
        warnings.simplefilter("default", LlmadWarning)
        shown, warnings.showwarning = warnings.showwarning, show
        try:
            # With standalone_mode=False typer returns the exit code instead of exiting: pass it on. It turns a
            # KeyboardInterrupt inside a command into exit code 130 (typer.core._main), so 130 means Ctrl-C.
            rc = app(args=argv, standalone_mode=False)
            if rc == 130:
                raise KeyboardInterrupt
            if isinstance(rc, int) and rc:
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
            typer.echo(interrupts.interrupted_message(), err=True)
            sys.exit(130)
        except Exception as e:
            # Usage errors (typer bundles its own click, so match by shape rather than by class).
            if hasattr(e, "show") and hasattr(e, "exit_code"):
                e.show()
                sys.exit(e.exit_code or 2)
            raise
