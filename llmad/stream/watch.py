"""``llmad watch``: tail a live job-update feed, score new and updated jobs, write each job's first alert once.

``feed_records`` / ``write_feed`` turn replayed runs into such a feed (one record per job and instant, in event
time): the watch tests and demos feed on them.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pandas as pd

from llmad.data.checks import FLOAT32_MAX
from llmad.data.flowbench import NUMERIC, TIMESTAMPS
from llmad.data.reveal import (CTX_INPUTS, DERIVED_DELAYS, LABEL_COLUMNS, NAN, PHASE_INDEX, reveal_times,
                               timestamp_matrix)
from llmad.errors import DataError, LlmadError, warn
from llmad.io import atomic_write_text
from llmad.stream.alerts import AlertPolicy
from llmad.stream.context import PeerContext, detector_inputs, detector_uses_context, is_known
from llmad.stream.scorer import CachedScorer


def feed_records(run: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """One record per (job, instant) in event-time order: the job's fields known then (a Flow-Bench feed)."""
    run = run.reset_index(drop=True)
    cols = [c for c in run.columns if c not in LABEL_COLUMNS and not c.startswith("ctx_")]
    ts = timestamp_matrix(run)
    R = reveal_times(run, cols)
    ej, ep = np.nonzero(np.isfinite(ts))
    et = ts[ej, ep]
    order = np.lexsort((ej, et))
    seen = set()
    vals = {c: run[c].to_numpy() for c in cols}
    for i in order:
        j, t = int(ej[i]), float(et[i])
        if (j, t) in seen:
            continue
        seen.add((j, t))
        rec = {}
        for ci, c in enumerate(cols):
            v = vals[c][j]
            if R[j, ci] <= t and is_known(v):
                rec[c] = v.item() if hasattr(v, "item") else v
        rec.setdefault("run_id", str(run["run_id"].iloc[0]) if "run_id" in run.columns else "feed")
        yield rec


def write_feed(runs: Iterable[pd.DataFrame], path: str | Path, fmt: str = "jsonl") -> int:
    """Write runs as a job-update feed (``jsonl`` or ``csv``) in event-time order per run; returns records."""
    n = 0
    recs = (r for run in runs for r in feed_records(run))
    with open(path, "w", newline="") as fh:
        if fmt == "jsonl":
            for r in recs:
                fh.write(json.dumps(r) + "\n")
                n += 1
        else:
            import csv

            rows = list(recs)
            cols = list(dict.fromkeys(c for r in rows for c in r))
            w = csv.DictWriter(fh, fieldnames=cols, lineterminator="\n")
            w.writeheader()
            for r in rows:
                w.writerow(r)
                n += 1
    return n


_NUMERIC_SET = set(NUMERIC) | {"label"}
FEED_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
SHOWN_MALFORMED = 20  # malformed lines reported one by one; the rest are counted in the summary


def sniff_format(line: str) -> str:
    """``jsonl`` when a feed line looks like a JSON object, else ``csv`` (a header line)."""
    return "jsonl" if line.lstrip().startswith("{") else "csv"


def likely_format(line: str) -> str:
    """What a malformed line looks like, for the error that stops a feed read in the wrong format."""
    text = line.strip()
    if text.startswith(("{", "[")):
        return "JSON lines (--format jsonl)"
    if "," in text:
        return "CSV (--format csv)"
    return "neither CSV nor JSON lines"


class Watcher:
    """Tail a growing CSV/JSON-lines feed of job updates, score new and updated jobs, write alerts exactly once.

    Durability: per batch, the new input offset, the full state (jobs' known fields, alert states) and the alert
    lines of the batch are written to the state file atomically *before* the alerts are appended to the alerts
    file at the recorded size. A restart (even after ``kill -9``) truncates/completes the alerts file to match the
    state file and resumes at the saved offset, so alerts are neither lost nor repeated (with ``--alerts FILE``;
    on stdout the last batch may be printed again). State is a function of the record sequence only, never of
    batch boundaries, so a resumed stream alerts exactly as an uninterrupted one.
    """

    VERSION = 1

    def __init__(self, detector: Any, threshold: float, *, alert: str = "threshold", k: int = 2, n: int = 3,
                 fmt: str | None = None, state_path: str | Path | None = None, alerts_path: str | Path | None = None,
                 batch_lines: int = 2000, max_runs: int = 64, log: Callable[[str], None] | None = None,
                 cache_size: int = 200_000, checkpoint_s: float = 1.0, max_bad_run: int = 100,
                 rename: Callable[[dict[str, Any]], dict[str, Any]] | None = None):
        self.detector = detector
        self.rename = rename  # a jobs: column map's renaming (llmad.data.jobs.feed_renamer), applied per record
        self.max_bad_run = max_bad_run  # this many malformed lines in a row: the feed is not in this format
        self.bad_run = 0
        self.huge_fields: set[str] = set()  # fields already named in a huge-value warning
        self.source = "feed"
        self.policy = AlertPolicy(threshold, alert, k, n)
        self.fmt = fmt
        self.state_path = Path(state_path) if state_path else None
        self.alerts_path = Path(alerts_path) if alerts_path else None
        self.batch_lines, self.max_runs, self.checkpoint_s = batch_lines, max_runs, checkpoint_s
        self.log = log or (lambda m: print(m, file=sys.stderr))
        self.columns = detector_inputs(detector)
        self.context = detector_uses_context(detector, self.columns)
        self.scorer = CachedScorer(detector, self.columns, 1024, cache_size)
        # Fields kept per job: what the detector and the peer context read, plus ids and timestamps (alert time).
        self.keep = None if self.columns is None else set(self.columns) | set(CTX_INPUTS) | set(TIMESTAMPS) | {
            "run_id", "job_id", "workflow", "host", "transformation"}
        self.buffer = ""  # alert lines of batches processed since the last checkpoint
        self.last_save = 0.0
        self.runs: dict[str, PeerContext] = {}
        self.jobstate: dict[str, dict[str, dict[str, Any]]] = {}
        self.run_order: list[str] = []  # least recently updated first
        self.offset = 0
        self.lines = 0  # lines consumed (header included)
        self.header: list[str] | None = None
        self.alerts_size = 0
        self.pending_alerts = ""
        self.counts = defaultdict(int)

    # -- state
    def _state(self) -> dict[str, Any]:
        return {"version": self.VERSION, "offset": self.offset, "lines": self.lines, "header": self.header,
                "fmt": self.fmt, "alerts_size": self.alerts_size, "pending_alerts": self.pending_alerts,
                "threshold": self.policy.threshold, "mode": self.policy.mode, "k": self.policy.k, "n": self.policy.n,
                "run_order": self.run_order, "counts": dict(self.counts),
                "runs": {r: {"ctx": self.runs[r].to_state(), "jobs": self.jobstate[r]} for r in self.run_order}}

    def save_state(self) -> None:
        """Atomically write the state file (fsynced)."""
        if self.state_path is None:
            return
        atomic_write_text(self.state_path, json.dumps(self._state(), allow_nan=True))

    def load_state(self) -> bool:
        """Resume from the state file if there is one; reconcile the alerts file with it."""
        if self.state_path is None or not self.state_path.exists():
            return False
        try:
            st = json.loads(self.state_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise LlmadError(f"state file {self.state_path} is unreadable ({e}); remove it to start over") from None
        if st.get("version") != self.VERSION:
            raise LlmadError(f"state file {self.state_path} has version {st.get('version')}, expected {self.VERSION}")
        if (float(st["threshold"]), st["mode"], st["k"], st["n"]) != (
                self.policy.threshold, self.policy.mode, self.policy.k, self.policy.n):
            raise LlmadError(f"state file {self.state_path} was written with another alert rule/threshold; "
                             f"use the same options or remove it to start over")
        self.offset, self.lines, self.header = int(st["offset"]), int(st["lines"]), st["header"]
        self.fmt = self.fmt or st.get("fmt")
        self.alerts_size, self.pending_alerts = int(st["alerts_size"]), st.get("pending_alerts", "")
        self.counts.update(st.get("counts", {}))
        self.run_order = list(st["run_order"])
        for r in self.run_order:
            self.runs[r] = PeerContext.from_state(st["runs"][r]["ctx"], self.context)
            self.jobstate[r] = st["runs"][r]["jobs"]
        self._commit_alerts(resume=True)
        return True

    def _commit_alerts(self, resume: bool = False) -> None:
        """Make the alerts output hold exactly the first ``alerts_size`` bytes plus the pending alert lines."""
        data = self.pending_alerts.encode()
        if self.alerts_path is None:
            if data:
                sys.stdout.write(self.pending_alerts)
                sys.stdout.flush()
            return
        self.alerts_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.alerts_path, "a+b") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            if size < self.alerts_size:
                raise LlmadError(f"alerts file {self.alerts_path} is shorter ({size} bytes) than the state file "
                                 f"records ({self.alerts_size}); it was edited or replaced: remove the state file "
                                 f"to start over")
            if size != self.alerts_size + len(data) or resume:
                fh.truncate(self.alerts_size)
                fh.seek(self.alerts_size)
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    # -- parsing
    def _parse(self, line: str, lineno: int) -> dict[str, Any] | None:
        line = line.rstrip("\r\n")
        if not line.strip():
            return None
        if self.fmt is None:  # stdin or an unknown suffix: the first line says which
            self.fmt = sniff_format(line)
        fmt = self.fmt
        if fmt == "csv":
            import csv

            try:
                row = next(csv.reader([line]))
            except (csv.Error, StopIteration) as e:
                self._bad(lineno, f"unparseable CSV ({e})", line)
                return None
            if self.header is None:
                self.header = ["job_id" if (h == "" and i == 0) else h for i, h in enumerate(row)]
                return None
            if len(row) != len(self.header):
                self._bad(lineno, f"expected {len(self.header)} fields, found {len(row)}", line)
                return None
            rec = {h: v for h, v in zip(self.header, row) if v != ""}
        else:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                self._bad(lineno, f"not JSON ({e.msg})", line)
                return None
            if not isinstance(rec, dict):
                self._bad(lineno, "a JSON record must be an object", line)
                return None
            rec = {str(k): v for k, v in rec.items() if v is not None and v != ""}
        if self.rename is not None:
            rec = self.rename(rec)
        if "job_id" not in rec and "" in rec:
            rec["job_id"] = rec.pop("")
        # The loaders' checks (llmad.data.checks), per record: a feed goes on past one bad record, so a NUL (which
        # a loader refuses) skips the record, and a huge value is named once per field (the detector clips it).
        nul = next((c for c, v in rec.items() if isinstance(v, str) and "\0" in v), None)
        if nul is not None:
            self._bad(lineno, f"field {nul!r}: NUL byte in the value (a damaged or binary feed)", line)
            return None
        if "job_id" not in rec:
            self._bad(lineno, "no job_id", line)
            return None
        for c, v in list(rec.items()):
            if c in _NUMERIC_SET:
                try:
                    f = float(v)
                except (TypeError, ValueError):
                    self._bad(lineno, f"field {c!r}: expected a number, got {str(v)[:40]!r}", line)
                    return None
                rec[c] = f
                if c not in self.huge_fields and math.isfinite(f) and abs(f) > FLOAT32_MAX:
                    self.huge_fields.add(c)
                    warn("huge-value", f"{self.source}, line {lineno}, field {c!r}: {f:.3g} is beyond ±3.4e38; "
                                       f"clipped to ±3.4e38 as a model feature (named once per field)")
            elif not isinstance(v, (str, int, float, bool)):
                rec[c] = json.dumps(v)
        if "host" not in rec and "kickstart_hostname" in rec:
            rec["host"] = str(rec["kickstart_hostname"])
        if "transformation" not in rec and "kickstart_transformations" in rec:
            rec["transformation"] = str(rec["kickstart_transformations"])
        for d, (a, b) in DERIVED_DELAYS.items():
            if d not in rec and a in rec and b in rec:
                rec[d] = float(rec[b]) - float(rec[a])
        self.bad_run = 0
        return rec

    def _bad(self, lineno: int, msg: str, line: str = "") -> None:
        self.counts["malformed"] += 1
        self.bad_run += 1
        n = self.counts["malformed"]
        if n <= SHOWN_MALFORMED:
            warn("malformed-line", f"{self.source}, line {lineno}: {msg}; record skipped")
        elif n == SHOWN_MALFORMED + 1:
            warn("malformed-line", f"{self.source}: more malformed lines; counted, not shown")
        if self.bad_run >= self.max_bad_run:
            self._forget_empty_state()
            raise LlmadError(
                f"{self.source}, line {lineno}: {self.bad_run} malformed lines in a row read as "
                f"{'JSON lines' if self.fmt == 'jsonl' else 'CSV'} (last: {msg}); the feed looks like "
                f"{likely_format(line)}: pass the right --format, or fix the feed")

    def _forget_empty_state(self) -> None:
        """A feed read in the wrong format has saved nothing worth resuming (no record); its state file would make
        a rerun with the right ``--format`` start past the CSV header, so it goes."""
        if not self.counts["records"] and self.state_path is not None and self.state_path.exists():
            self.state_path.unlink()

    def _all_bad(self) -> None:
        """A feed that gave malformed lines and not one record is broken input, not a quiet success."""
        if self.counts["malformed"] and not self.counts["records"]:
            self._forget_empty_state()
            raise LlmadError(f"{self.source}: none of the {self.counts['malformed']} non-empty lines read as "
                             f"{'JSON lines' if self.fmt == 'jsonl' else 'CSV'} is a valid record; pass the "
                             f"right --format (csv | jsonl), or fix the feed")

    # -- processing
    def _run_key(self, rec: dict[str, Any]) -> str:
        if "run_id" in rec:
            return str(rec["run_id"])
        return str(rec.get("workflow", "feed"))

    def _touch_run(self, run: str) -> None:
        if run in self.runs:
            self.run_order.remove(run)
        else:
            self.runs[run] = PeerContext(self.context)
            self.jobstate[run] = {}
        self.run_order.append(run)
        while len(self.run_order) > self.max_runs:
            old = self.run_order.pop(0)
            del self.runs[old], self.jobstate[old]
            self.counts["runs_evicted"] += 1

    def process_lines(self, lines: list[tuple[int, str]]) -> list[dict[str, Any]]:
        """Apply records in order; score changed jobs (batched); return this batch's alerts in record order."""
        obs = []
        for lineno, line in lines:
            rec = self._parse(line, lineno)
            if rec is None:
                continue
            self.counts["records"] += 1
            run = self._run_key(rec)
            self._touch_run(run)
            job = str(rec["job_id"])
            fields = {c: v for c, v in rec.items() if c not in LABEL_COLUMNS and (self.keep is None or c in self.keep)}
            rc = self.runs[run]
            row = rc.step({job: fields})[job]
            js = self.jobstate[run].setdefault(job, self.policy.new_state())
            if not self.scorer.informative(row):
                continue
            key = self.scorer.key(row)
            self.scorer.request(key, row)
            k = rc.known[job]
            ts = [(PHASE_INDEX[t], k[t]) for t in TIMESTAMPS if t in k]
            t_ev = max((v for _, v in ts), default=NAN)
            phase = max((p for p, v in ts if v == t_ev), default=-1)
            # Everything an alert reports is captured now: later records of the batch must not change it.
            info = {"run_id": run, "job_id": job, "time": t_ev, "phase": TIMESTAMPS[phase] if phase >= 0 else "",
                    "line": lineno, "host": k.get("host"), "transformation": k.get("transformation")}
            obs.append((key, js, info))
        self.scorer.flush()
        alerts = []
        for key, js, info in obs:
            s = self.scorer.score(key)
            self.counts["scored"] += 1
            if self.policy.observe(js, s):
                alerts.append({**info, "score": round(float(s), 6)})
        self.scorer.release()
        self.counts["alerts"] += len(alerts)
        return alerts

    def _emit(self, alerts: list[dict[str, Any]], new_offset: int, new_lines: int, force: bool = False) -> None:
        """Checkpoint (at most every ``checkpoint_s``): state with the new alert lines first, then the alerts.

        Between checkpoints nothing is durable: a crash re-reads those records and regenerates the same alerts.
        """
        self.buffer += "".join(json.dumps(a, sort_keys=True) + "\n" for a in alerts)
        self.offset, self.lines = new_offset, new_lines
        if not force and time.monotonic() - self.last_save < self.checkpoint_s:
            return
        self.alerts_size += len(self.pending_alerts.encode())
        self.pending_alerts, self.buffer = self.buffer, ""
        self.save_state()
        self._commit_alerts()
        self.last_save = time.monotonic()

    def run(self, path: str, follow: bool = True, poll_s: float = 0.2, idle_exit_s: float | None = None,
            stop: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Consume the feed from the saved offset; with ``follow`` keep polling for appended lines."""
        resumed = self.load_state()
        self.source = "stdin" if path == "-" else f"feed {path}"
        if path == "-":
            return self._run_stdin(resumed)
        p = Path(path)
        if self.fmt is None:
            self.fmt = FEED_SUFFIXES.get(p.suffix.lower())  # None: sniffed from the first line
        if not p.exists() and not follow:
            raise DataError("no such feed file", file=str(p))
        idle_since = time.monotonic()
        warned_partial = None
        while True:
            if stop is not None and stop():
                break
            size = p.stat().st_size if p.exists() else 0
            if size < self.offset:
                raise LlmadError(f"feed {p} is shorter ({size} bytes) than the saved offset ({self.offset}); it was "
                                 f"truncated or replaced: remove the state file {self.state_path} to start over")
            progressed = False
            if size > self.offset:
                with open(p, "rb") as fh:
                    fh.seek(self.offset)
                    chunk = fh.read(min(size - self.offset, 8 << 20))
                cut = chunk.rfind(b"\n")
                if cut >= 0:
                    body = chunk[:cut + 1]
                    raw_lines = body.split(b"\n")[:-1]
                    pos, lineno = self.offset, self.lines
                    for i in range(0, len(raw_lines), self.batch_lines):
                        part = raw_lines[i:i + self.batch_lines]
                        batch = []
                        for b in part:
                            lineno += 1
                            batch.append((lineno, b.decode("utf-8", errors="replace")))
                            pos += len(b) + 1
                        alerts = self.process_lines(batch)
                        self._emit(alerts, pos, lineno)
                        if stop is not None and stop():
                            break
                    progressed = True
                    idle_since = time.monotonic()
                    warned_partial = None
                tail = size - self.offset
                if tail > 0 and not progressed and warned_partial != (self.offset, tail):
                    if not follow:
                        self.counts["partial_last_line"] += 1
                        self.log(f"llmad watch: line {self.lines + 1}: partial last line ({tail} bytes, no newline) "
                                 f"left unread; it is read once it is complete")
                    warned_partial = (self.offset, tail)
            if progressed:
                continue
            self._emit([], self.offset, self.lines, force=True)  # idle: make what was read durable
            if not follow:
                break
            if idle_exit_s is not None and time.monotonic() - idle_since >= idle_exit_s:
                break
            time.sleep(poll_s)
        self._emit([], self.offset, self.lines, force=True)
        self._all_bad()
        return {"resumed": resumed, "offset": self.offset, "lines": self.lines, **dict(self.counts),
                **{f"scorer_{k}": v for k, v in self.scorer.stats().items()}}

    def _run_stdin(self, resumed: bool) -> dict[str, Any]:
        skip = self.lines
        batch: list[tuple[int, str]] = []
        lineno = 0
        for line in sys.stdin:
            lineno += 1
            if lineno <= skip:
                continue
            if not line.endswith("\n"):
                self.counts["partial_last_line"] += 1
                self.log(f"llmad watch: line {lineno}: partial last line (no newline) skipped")
                break
            batch.append((lineno, line))
            if len(batch) >= self.batch_lines:
                self._emit(self.process_lines(batch), 0, lineno)
                batch = []
        if batch:
            self._emit(self.process_lines(batch), 0, batch[-1][0])
        self._emit([], 0, self.lines, force=True)
        self._all_bad()
        return {"resumed": resumed, "lines": self.lines, **dict(self.counts)}
