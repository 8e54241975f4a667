"""Progress and log hooks a run function reports through (the CLI prints, the harness drives its bars)."""
from __future__ import annotations

from typing import Callable


class RunHooks:
    """No-op progress, ``print`` log; subclass or pass callables to route them elsewhere."""

    def __init__(self, log: Callable[[str], None] | None = print,
                 stage: Callable[[str, float | None], None] | None = None,
                 advance: Callable[[float], None] | None = None, quiet: bool = False):
        self._log, self._stage, self._advance = log, stage, advance
        self.quiet = quiet  # the user asked for silence (-q): library output goes to <out>/warnings.log

    @classmethod
    def of(cls, hooks: "RunHooks | None" = None, printer: Callable[[str], None] | None = None) -> "RunHooks":
        """``hooks`` when given, else hooks that log through ``printer`` (the older keyword) or ``print``."""
        return hooks if hooks is not None else cls(log=printer or print)

    def log(self, msg: str) -> None:
        """A line for the user."""
        if self._log:
            self._log(msg)

    def stage(self, text: str, total: float | None = None) -> None:
        """What the run does now (resets the inner progress bar)."""
        if self._stage:
            self._stage(text, total)

    def advance(self, n: float = 1) -> None:
        """Advance the inner progress bar."""
        if self._advance:
            self._advance(n)


QUIET = RunHooks(log=None)
