"""Walk every llmad command (the root, groups, sub-commands) with its generated options built: for the CLI tests."""
from __future__ import annotations

import typer
from typer.main import get_command

from llmad.cli import app
from llmad.cli.options import ConfigCommand

Click = typer.core._click  # typer bundles its own click


def all_commands() -> dict[str, object]:
    """Command path ("" for llmad itself, "data info" ...) -> its click command, generated options built."""
    out = {}

    def walk(cmd, path):
        if isinstance(cmd, ConfigCommand):
            cmd.load()
        out[path] = cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}".strip())

    walk(get_command(app), "")
    return out


COMMANDS = all_commands()


def context(path: str):
    """A click context for command ``path`` with its parents (the help option names come from the root)."""
    root = get_command(app)
    ctx = Click.core.Context(root, info_name="llmad", **root.context_settings)
    cmd = root
    for part in path.split()[:-1]:
        cmd = cmd.commands[part]
        ctx = Click.core.Context(cmd, info_name=part, parent=ctx)
    return ctx


def options(path: str) -> list:
    """The options of ``path``, the help option included."""
    cmd = COMMANDS[path]
    return [p for p in cmd.get_params(context(path)) if p.param_type_name == "option"]


def long_flag(p) -> str:
    return next(o for o in p.opts if o.startswith("--"))
