"""Executing a plan: each ``RunSpec`` runs (or is reused) in ``<out>/runs/<hash>/``; ``metrics.json`` is written
last, so its presence marks a finished run. A failed run is recorded (``error.json``) and the others continue; a
run the leakage guard refuses gets ``refused.json``."""
from __future__ import annotations

import json
import shutil
import time
import traceback
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from llmad.api.result import RunResult
from llmad.harness.adapters import ADAPTERS
from llmad.harness.context import Progress, RunContext
from llmad.harness.guard import LeakageError, LeakageGuard
from llmad.harness.plan import RunSpec
from llmad.harness.recipe import METHOD_KINDS, ReportConfig
from llmad.io import provenance, write_frame_csv, write_json
from llmad.rundir import PeakRSS, peak_rss_mb


@dataclass
class RunStatus:
    """What happened to one run in this invocation."""

    spec: RunSpec
    status: str  # cached | done | failed | refused | skipped
    run_dir: Path
    seconds: float = 0.0
    message: str = ""


def _run_one(spec: RunSpec, run_dir: Path, resume: bool, cache: dict[str, Any], progress: Progress,
             adapters: dict[str, Callable[[RunContext], RunResult]], report: ReportConfig | None = None,
             models: dict[Any, Any] | None = None) -> RunStatus:
    if (run_dir / "metrics.json").is_file():
        return RunStatus(spec, "cached", run_dir)
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)  # a half-written run from an interrupted invocation: start it again
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("error.json", "refused.json"):
        (run_dir / stale).unlink(missing_ok=True)
    write_json(run_dir / "run.json", {"hash": spec.hash, **asdict(spec), "hash_payload": spec.hash_payload()})
    guard = LeakageGuard()
    ctx = RunContext(spec, run_dir, guard, resume, cache, progress, progress.log, report, models)
    started = datetime.now(timezone.utc).isoformat()
    t0 = time.perf_counter()
    try:
        with PeakRSS() as mem:
            res = adapters[spec.kind](ctx)
    except LeakageError as e:
        write_json(run_dir / "refused.json", {"reason": str(e), "guard": guard.used})
        return RunStatus(spec, "refused", run_dir, time.perf_counter() - t0, str(e))
    except KeyboardInterrupt:
        raise
    except Exception as e:  # one failed run must not stop the comparison
        msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]
        write_json(run_dir / "error.json", {"error": msg, "traceback": traceback.format_exc()})
        return RunStatus(spec, "failed", run_dir, time.perf_counter() - t0, msg)
    wall = time.perf_counter() - t0
    pred = res.predictions
    missing = ["predictions"] if pred is None else [c for c in ("label", "score", "prediction") if c not in pred]
    if missing:
        msg = f"adapter {spec.kind} returned predictions without {missing}"
        write_json(run_dir / "error.json", {"error": msg})
        return RunStatus(spec, "failed", run_dir, wall, msg)
    write_frame_csv(run_dir / "predictions.csv", pred)
    prov = provenance()
    prov.update(started_utc=started, finished_utc=datetime.now(timezone.utc).isoformat(), wall_seconds=wall,
                peak_rss_mb_during_run=mem.peak, process_peak_rss_mb=peak_rss_mb(), seed=spec.seed,
                config_hash=spec.hash, resolved=spec.hash_payload(), leakage_guard=guard.report())
    write_json(run_dir / "provenance.json", prov)
    write_json(run_dir / "details.json", {"details": res.details, "artifacts": res.artifacts})
    metrics = {**res.metrics, "wall_seconds": wall, "peak_rss_mb": mem.peak}
    write_json(run_dir / "metrics.json", metrics)  # last: its presence marks the run finished
    return RunStatus(spec, "done", run_dir, wall)


def execute(specs: list[RunSpec], out: Path, resume: bool = False, quiet: bool = False,
            adapters: dict[str, Callable[[RunContext], RunResult]] | None = None,
            report: ReportConfig | None = None) -> list[RunStatus]:
    """Run (or reuse) every spec under ``out/runs/<hash>``; failures are recorded, the rest continue."""
    adapters = adapters or ADAPTERS
    statuses: list[RunStatus] = []
    cache: dict[str, Any] = {}
    models: dict[Any, Any] = {}
    # Cheap runs first with the same data grouped, so a split is loaded once and results arrive early.
    order = sorted(range(len(specs)), key=lambda i: (json.dumps(specs[i].data, sort_keys=True, default=str),
                                                     METHOD_KINDS.index(specs[i].kind)))
    with Progress(len(specs), quiet) as prog:
        for i in order:
            spec = specs[i]
            prog.run_started(f"{spec.row} on {spec.dataset} (seed {spec.seed})")
            st = _run_one(spec, out / "runs" / spec.hash, resume, cache, prog, adapters, report, models)
            statuses.append(st)
            if st.status in ("failed", "refused"):
                prog.log(f"[{st.status}] {spec.row} on {spec.dataset} seed {spec.seed}: {st.message}")
            elif st.status == "done":
                prog.log(f"[done {st.seconds:.0f}s] {spec.row} on {spec.dataset} seed {spec.seed}")
            prog.run_done()
    cache.clear()
    models.clear()
    return statuses

