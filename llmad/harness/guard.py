"""The leakage guard: adapters declare which rows (jobs) or point ranges (series) a run learned from, and the
guard refuses the run before test scoring if any of them is a test row."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd

from llmad.errors import LlmadError


class LeakageError(LlmadError):
    """A run would use test rows for fitting, thresholds, demonstrations or normalisation statistics."""


def job_keys(frame: pd.DataFrame, part: str = "") -> np.ndarray:
    """A stable id per job row (workflow/run/job); published rows missing from the data get a per-part id."""
    wf = frame["workflow"].astype(str).to_numpy() if "workflow" in frame else np.full(len(frame), "")
    run = frame["run_id"].astype(str).to_numpy()
    job = frame["job_id"].astype(str).to_numpy()
    keys = np.char.add(np.char.add(np.char.add(np.char.add(wf, "/"), run), "/"), job).astype(object)
    unmatched = run == "unmatched"
    if unmatched.any():
        keys[unmatched] = [f"unmatched/{part}/{i}" for i in np.flatnonzero(unmatched)]
    return keys


class LeakageGuard:
    """Refuses a run when anything it learned from (fit rows, threshold rows, demonstrations, normalisation
    statistics) touches the test part. Adapters declare what they use; the guard checks before test scoring."""

    def __init__(self) -> None:
        self.test_keys: set[Any] | None = None
        self.test_spans: dict[str, list[tuple[int, int]]] | None = None
        self.used: dict[str, int] = {}

    def set_test(self, keys: Iterable[Any]) -> None:
        """The test part's row ids."""
        self.test_keys = set(keys)

    def set_test_spans(self, spans: Iterable[tuple[str, int, int]]) -> None:
        """The test part as (series, start, stop) point ranges."""
        self.test_spans = {}
        for name, a, b in spans:
            self.test_spans.setdefault(name, []).append((a, b))

    def use(self, purpose: str, keys: Iterable[Any]) -> None:
        """Declare rows used for ``purpose``; raises LeakageError if any is a test row."""
        if self.test_keys is None:
            raise LlmadError("leakage guard: the adapter must declare the test part before anything else")
        keys = list(keys)
        bad = [k for k in keys if k in self.test_keys]
        if bad:
            raise LeakageError(f"leakage: {len(bad)} of the {len(keys)} rows used for {purpose} are test rows "
                               f"(e.g. {bad[0]}); run refused")
        self.used[purpose] = self.used.get(purpose, 0) + len(keys)

    def use_spans(self, purpose: str, spans: Iterable[tuple[str, int, int]]) -> None:
        """Declare series point ranges used for ``purpose``; raises LeakageError on overlap with test ranges."""
        if self.test_spans is None:
            raise LlmadError("leakage guard: the adapter must declare the test part before anything else")
        n = 0
        for name, a, b in spans:
            n += b - a
            for ta, tb in self.test_spans.get(name, []):
                if a < tb and ta < b:
                    raise LeakageError(f"leakage: {purpose} uses points {max(a, ta)}..{min(b, tb)} of {name}, "
                                       f"which are test points; run refused")
        self.used[purpose] = self.used.get(purpose, 0) + n

    def report(self) -> dict[str, Any]:
        """What was checked, for provenance."""
        return {"checked": dict(self.used), "test_rows": len(self.test_keys) if self.test_keys is not None else
                sum(b - a for v in (self.test_spans or {}).values() for a, b in v), "verdict": "no overlap with test"}


def series_spans(series: Iterable[Any]) -> list[tuple[str, int, int]]:
    """(series, start, stop) point ranges of split series (a window of a parent series keeps its offsets)."""
    out = []
    for s in series:
        meta = getattr(s, "meta", {}) or {}
        out.append((str(meta.get("parent", s.name)), int(meta.get("_start", 0)),
                    int(meta.get("_stop", meta.get("_start", 0) + len(s)))))
    return out

