"""Run output directories: resolved config, metrics.json, per-job predictions, provenance; all written atomically."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from llmad.io import provenance, write_frame_csv, write_json


def default_out(command: str, name: str) -> Path:
    """``runs/<command>/<name>-<UTC timestamp>``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / command / f"{name}-{stamp}"


def write_run(out_dir: str | Path, *, config: Any, metrics: dict[str, Any], predictions: pd.DataFrame | None = None,
              summary: str | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write config.json, predictions.csv, provenance.json, then metrics.json last (its presence means done)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", config)
    if predictions is not None:
        write_frame_csv(out / "predictions.csv", predictions)
    prov = provenance()
    prov["finished_utc"] = datetime.now(timezone.utc).isoformat()
    if extra:
        prov.update(extra)
    write_json(out / "provenance.json", prov)
    write_json(out / "metrics.json", metrics)
    if summary:
        print(summary)
    return out


class Timer:
    """Wall-clock timer as a context manager (``with Timer() as t: ...; t.seconds``)."""

    def __enter__(self) -> "Timer":
        self.t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.t0


def peak_rss_mb() -> float:
    """Peak resident memory of this process since it started (MiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    """Resident memory of this process now (MiB); NaN where psutil cannot tell."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2 ** 20
    except Exception:
        return float("nan")


class PeakRSS:
    """Peak resident memory while a block runs, sampled every 0.2 s (``ru_maxrss`` only ever grows)."""

    def __enter__(self) -> "PeakRSS":
        import threading

        self.peak, self._stop = 0.0, threading.Event()
        self._sample()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        return self

    def _sample(self) -> None:
        rss = current_rss_mb()
        if rss == rss:
            self.peak = max(self.peak, rss)

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join(timeout=2)
        self._sample()
