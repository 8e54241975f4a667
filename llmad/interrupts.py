"""What a command interrupted by Ctrl-C leaves behind, in one line.

Run functions that own an output folder call :func:`note_run` once they know it; ``llmad.cli.main`` prints
:func:`interrupted_message` when the user presses Ctrl-C. This sits in the lowest layer so every run function may
note its folder without the CLI knowing each command.
"""
from __future__ import annotations

from pathlib import Path

_runs: list[tuple[Path, str | None, str]] = []


def note_run(out_dir: str | Path, resume_hint: str | None = None, kept: str = "what was saved") -> None:
    """Record that this process writes a run into ``out_dir``; ``resume_hint`` says how to continue it, if it can.

    ``kept`` names what an interrupted run leaves there to resume from (e.g. ``checkpoints``).
    """
    _runs.append((Path(out_dir), resume_hint, kept))


def clear() -> None:
    """Forget the noted runs (the CLI calls it at the start of each command)."""
    _runs.clear()


def interrupted_message() -> str:
    """One line for Ctrl-C: the folder of the run in progress, what it holds, and how to continue."""
    if not _runs:
        return "llmad: interrupted before this command wrote any output"
    out, hint, kept = _runs[0]  # the command's own folder (a compare notes its runs' folders after its own)
    if hint:
        return f"llmad: interrupted; kept {kept} in {out} (resume: {hint})"
    if out.is_dir() and (out / "metrics.json").is_file():
        return f"llmad: interrupted; {out} holds a finished run"
    return (f"llmad: interrupted; {out} was left without a finished run (no metrics.json): run the command again "
            f"with --force (it cannot resume)")


__all__ = ["note_run", "clear", "interrupted_message"]
