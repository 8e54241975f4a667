"""What an adapter gets for one run (``RunContext``: spec, folder, leakage guard, progress, caches) and the rich
progress display the harness drives."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from llmad.api.hooks import RunHooks
from llmad.data.splits import subsample
from llmad.harness.guard import LeakageGuard
from llmad.harness.plan import RunSpec
from llmad.harness.recipe import ReportConfig


class Progress:
    """One bar over runs and one inner bar for the current run (rich); silent when ``quiet``."""

    def __init__(self, total: int, quiet: bool):
        self.quiet = quiet
        self._p = None
        if not quiet:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                       TimeElapsedColumn)

            self._p = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TimeElapsedColumn(), transient=False)
            self._runs = self._p.add_task("runs", total=total)
            self._inner = self._p.add_task("", total=None)

    def __enter__(self) -> "Progress":
        if self._p:
            self._p.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._p:
            self._p.stop()

    def log(self, msg: str) -> None:
        """Print a line above the bars (plain print without them, nothing when quiet)."""
        if self._p:
            self._p.console.print(msg, markup=False, highlight=False)
        elif not self.quiet:
            print(msg)

    def run_started(self, label: str) -> None:
        """Name the run now executing on the outer bar."""
        if self._p:
            self._p.update(self._runs, description=f"runs: {label}")

    def run_done(self) -> None:
        """Advance the outer bar by one run."""
        if self._p:
            self._p.advance(self._runs)

    def stage(self, text: str, total: float | None = None) -> None:
        """Show what the current run does now and reset the inner bar."""
        if self._p:
            self._p.reset(self._inner, total=total, description=f"  {text}")

    def advance(self, n: float = 1) -> None:
        """Advance the inner bar."""
        if self._p:
            self._p.advance(self._inner, n)


class RunContext:
    """What an adapter gets: its spec, its folder, the guard, progress hooks and shared caches.

    ``cache`` holds one loaded split at a time (job tables are large); ``models`` keeps loaded language models
    across runs of one invocation.
    """

    def __init__(self, spec: RunSpec, run_dir: Path, guard: LeakageGuard, resume: bool, cache: dict[str, Any],
                 progress: Progress, log: Callable[[str], None], report: ReportConfig | None = None,
                 models: dict[Any, Any] | None = None):
        self.spec, self.run_dir, self.guard, self.resume, self.cache = spec, run_dir, guard, resume, cache
        self.progress, self.log = progress, log
        self.report = report or ReportConfig()
        self.models = models if models is not None else {}

    def stage(self, text: str, total: float | None = None) -> None:
        """Show what the run is doing now (and reset the inner bar)."""
        self.progress.stage(text, total)

    def advance(self, n: float = 1) -> None:
        """Advance the inner bar."""
        self.progress.advance(n)

    @property
    def hooks(self) -> RunHooks:
        """The run's progress and log as the hooks an ``llmad.api`` run function reports through."""
        return RunHooks(log=self.log, stage=self.stage, advance=self.advance)

    def job_split(self, context: bool = False, causal: bool = False):
        """The split of this run's dataset, loaded once per process (peer features on the whole table)."""
        from llmad.data import load_split

        d = self.spec.data
        key = json.dumps([d, context and "ctx", causal], sort_keys=True, default=str)
        if key not in self.cache:
            self.stage(f"loading {d['spec']} ({d['split']} split)")
            self.cache.clear()  # one split in memory at a time: job tables are large
            self.cache[key] = load_split(d["spec"], split=d["split"], seed=d["seed"], data_dir=d["data_dir"],
                                         test_workflow=d["test_workflow"], limit=d["limit"], context=context,
                                         causal=causal)
        return self.cache[key]

    def shared_lm(self, cfg: Any) -> Any:
        """The causal LM of an ICL config, loaded once per invocation (one model in memory at a time)."""
        key = (cfg.model, cfg.load_in_4bit)
        if key not in self.models:
            from llmad.models.causal_lm import load_causal_lm

            self.stage(f"loading {cfg.model}")
            self.models.clear()
            self.models[key] = load_causal_lm(cfg.model, load_in_4bit=cfg.load_in_4bit,
                                              trust_remote_code=cfg.trust_remote_code)
        return self.models[key]

    def limited(self, frame: pd.DataFrame, part: str) -> pd.DataFrame:
        """Seeded subsample of a part per the method entry's ``<part>_limit``."""
        return subsample(frame, self.spec.limits.get(part) or None, self.spec.seed)
