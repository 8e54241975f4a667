"""Streaming early detection: replay DAG runs in event time (``llmad replay``) and tail a live feed (``llmad watch``).

Event model (``reveal="events"``). Every timestamp of a job (ready, submit, stage-in start/end, execute start/end,
stage-out start/end, post-script start/end) is an event. A field becomes known at its *reveal time*: a timestamp at
itself; a delay once both of its endpoints have passed (``runtime`` at ``execute_end``, ``queue_delay`` at
``execute_start``, ...); transfer sizes when their transfer ends; the kickstart record (cpu time, I/O counters) when
execution ends; the host when execution starts; the DAG's static fields (transformation, type) when the job appears.
A field whose endpoint is missing is revealed only at the job's end. Before a field is known it is NaN, exactly as
:func:`make_partial` produces it (the SFT ``--prefix-augment`` recipe trains on the same kind of rows).

Peer context (``ctx_*``, ``llmad.data.context``) is causal and incremental: a job's peer features are recomputed at
each of its own events from the peers' fields known at that instant (medians over sorted lists), so at the moment a
job finishes they equal ``add_context_features(causal=True)`` up to ties. A job is rescored only at its own events
and only when its detector input changed (an event before any of the detector's time-revealed inputs is known is
counted but not scored: the score would only be the model's prior for an empty job); identical inputs (across jobs
too) are scored once (a bounded cache), and
scoring is batched over a run (``batch="run"``, max speed) or per time step (``batch="step"``, paced replay, watch).

SFT models score through a backend (``llmad.detectors.sft.fast``, ``--backend``): ``auto`` picks bf16 autocast on
CPUs with native bf16 (AMX / AVX512-BF16), else ONNX Runtime int8 when installed, else torch fp32; the cache makes
the model see ~0.33 sentences per event on casa_nowcast_full, so the model's sentences/s sets the replay's speed.

``reveal="features"`` is the LLM_AD paper's online study (Jin et al., SC'24): the job sentence grows one feature at
a time in the paper's feature order (T1 = wms_delay ... T9 = cpu time) and the first step at which the prediction is
right is recorded. llmad differs in that unrevealed features are NaN (rendered as missing) rather than cut from the
sentence, so every detector sees the same partial rows.

Alerts: a job alerts the first time its score reaches the threshold (``alert="threshold"``) or when k of its last n
observations did (``alert="k-of-n"``). The threshold comes from the model (chosen on validation when it was fitted)
or is re-chosen on a replay of the validation runs (``threshold="validation"``: the per-job statistic that decides
an alert, i.e. the max score or the best k-th largest score over n consecutive observations). Never on test.
"""
from __future__ import annotations

import bisect
import json
import math
import os
import sys
import time
from collections import OrderedDict, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from llmad.data.context import CONTEXT_FEATURES
from llmad.data.flowbench import KICKSTART, NUMERIC, PAPER_FEATURES, TIMESTAMPS
from llmad.data.reveal import (CTX_INPUTS, CTX_NEEDS, DERIVED_DELAYS, ENDPOINTS, LABEL_COLUMNS, NAN, PHASE_INDEX,
                               make_partial, prefix_augment, reveal_features, reveal_times, row_nanreduce,
                               timestamp_matrix)
from llmad.errors import DataError, LlmadError


_PEER_METRICS = {"runtime": "runtime", "kickstart_executables_cpu_time": "cpu", "queue_delay": "queue",
                 "stage_in_delay": "stage_in"}


@dataclass
class StreamConfig:
    """How a stream is replayed and when it alerts."""

    reveal: str = "events"  # events (fields appear as their timestamps pass) | features (paper: one feature a step)
    speed: str = "max"  # max | <N>x (paced: event time runs N times faster than real time; each run on its own clock)
    alert: str = "threshold"  # threshold | k-of-n
    k: int = 2
    n: int = 3
    threshold: str = "model"  # model (fitted on validation) | validation (re-chosen on a validation replay) | number
    threshold_objective: str = "f1"
    batch: str = "run"  # run | step: scoring requests batched per run (max speed) or per time step
    batch_size: int = 1024  # rows per detector call
    cache_size: int = 200_000  # distinct inputs whose score is remembered (LRU: bounded memory)
    quantize: bool = False  # int8 dynamic quantization of an SFT model's linear layers (CPU)
    backend: str = "auto"  # SFT scoring backend: auto | torch | bf16 | onnx | onnx-int8 (llmad.detectors.sft.fast)
    workers: int = 1  # SFT scoring threads (batches in parallel, one intra-op thread each)

    def check(self) -> "StreamConfig":
        """Validate option values (raises LlmadError with the allowed values)."""
        if self.reveal not in ("events", "features"):
            raise LlmadError(f"--reveal {self.reveal!r}: expected events or features")
        if self.alert not in ("threshold", "k-of-n"):
            raise LlmadError(f"--alert {self.alert!r}: expected threshold or k-of-n")
        if self.alert == "k-of-n" and not 1 <= self.k <= self.n:
            raise LlmadError(f"k-of-n needs 1 <= k <= n, got k={self.k} n={self.n}")
        if self.batch not in ("run", "step"):
            raise LlmadError(f"--batch {self.batch!r}: expected run or step")
        from llmad.detectors.sft.fast import check_backend

        check_backend(self.backend)
        if self.workers < 1:
            raise LlmadError(f"--workers {self.workers}: expected >= 1")
        parse_speed(self.speed)
        if self.threshold not in ("model", "validation"):
            try:
                float(self.threshold)
            except ValueError:
                raise LlmadError(f"--threshold {self.threshold!r}: expected model, validation or a number") from None
        return self


def parse_speed(speed: str | float | None) -> float | None:
    """``max`` -> None (no pacing); ``10x`` / ``10`` -> 10.0."""
    if speed is None or str(speed).strip().lower() in ("max", "inf", ""):
        return None
    s = str(speed).strip().lower().rstrip("x")
    try:
        v = float(s)
    except ValueError:
        raise LlmadError(f"--speed {speed!r}: expected max or a factor such as 10x") from None
    if not v > 0:
        raise LlmadError(f"--speed {speed!r}: the factor must be positive")
    return v


# ---------------------------------------------------------------------------------------------- peer context
def _median(v: list[float]) -> float:
    n = len(v)
    if not n:
        return NAN
    m = n // 2
    return v[m] if n % 2 else (v[m - 1] + v[m]) / 2.0


def _div(a: Any, b: float) -> float:
    try:
        a = float(a)
    except (TypeError, ValueError):
        return NAN
    if not (a == a and b == b) or abs(b) <= 1e-9:
        return NAN
    r = a / b
    return r if math.isfinite(r) else NAN


def _known(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and v != v)


class RunContext:
    """Peer statistics of one run from what is known so far, updated incrementally (causal ``ctx_*`` features).

    ``step(updates)`` applies the fields that became known at one instant (``{job: {field: value}}``), then
    returns the detector rows of the jobs that changed. Medians use sorted lists: the state is a multiset, so it
    can be rebuilt exactly from the jobs' known fields (``watch`` restarts).
    """

    def __init__(self, context: bool = True):
        self.context = context
        self.known: dict[Any, dict[str, Any]] = {}
        self.done: dict[Any, tuple[float, float]] = {}  # job -> (runtime_rel, cpu_rel) at its execute_end
        self.trans: dict[str, dict[str, list[float]]] = defaultdict(lambda: {m: [] for m in _PEER_METRICS.values()})
        self.host_rel: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
        self.host_done: dict[str, int] = defaultdict(int)
        self.peers_done: dict[str, int] = defaultdict(int)

    def _trans_of(self, k: dict[str, Any]) -> str:
        t = k.get("transformation")
        return str(t) if _known(t) else "unknown"

    def _host_of(self, k: dict[str, Any]) -> str | None:
        h = k.get("host", k.get("kickstart_hostname"))
        return str(h) if _known(h) else None

    def ingest(self, job: Any, fields: dict[str, Any]) -> None:
        """Record newly known (or corrected) fields of ``job``."""
        k = self.known.setdefault(job, {})
        for c, v in fields.items():
            if not _known(v):
                continue
            old = k.get(c)
            k[c] = v
            if self.context and c in _PEER_METRICS:
                lst = self.trans[self._trans_of(k)][_PEER_METRICS[c]]
                if _known(old):
                    i = bisect.bisect_left(lst, float(old))
                    if i < len(lst) and lst[i] == float(old):
                        lst.pop(i)
                try:
                    bisect.insort(lst, float(v))
                except (TypeError, ValueError):
                    pass

    def _finish(self, job: Any, rels: tuple[float, float] | None = None) -> None:
        k = self.known[job]
        if rels is None:
            g = self.trans[self._trans_of(k)]
            rels = (_div(k.get("runtime"), _median(g["runtime"])),
                    _div(k.get("kickstart_executables_cpu_time"), _median(g["cpu"])))
        self.done[job] = rels
        self.peers_done[self._trans_of(k)] += 1
        h = self._host_of(k)
        if h is not None:
            self.host_done[h] += 1
            for lst, v in zip(self.host_rel[h], rels):
                if v == v:
                    bisect.insort(lst, v)

    def step(self, updates: dict[Any, dict[str, Any]], changed: Iterable[Any] | None = None) -> dict[Any, dict]:
        """Apply one instant's updates; return ``{job: known fields + ctx_*}`` for the changed jobs."""
        for job, fields in updates.items():
            self.ingest(job, fields)
        changed = list(updates) if changed is None else list(changed)
        if self.context:
            for job in changed:
                if job not in self.done and _known(self.known.get(job, {}).get("execute_end")):
                    self._finish(job)
        return {job: self.row(job) for job in changed}

    def row(self, job: Any) -> dict[str, Any]:
        """Known fields of ``job`` plus its causal peer features now."""
        k = self.known.setdefault(job, {})
        if not self.context:
            return dict(k)
        r = dict(k)
        tr = self._trans_of(k)
        g = self.trans[tr]
        r["ctx_runtime_rel"] = _div(k.get("runtime"), _median(g["runtime"]))
        r["ctx_cpu_rel"] = _div(k.get("kickstart_executables_cpu_time"), _median(g["cpu"]))
        r["ctx_queue_rel"] = _div(k.get("queue_delay"), _median(g["queue"]))
        r["ctx_stage_in_rel"] = _div(k.get("stage_in_delay"), _median(g["stage_in"]))
        rt = k.get("runtime")
        r["ctx_cpu_util"] = _div(k.get("kickstart_executables_cpu_time"), float(rt)) if _known(rt) else NAN
        own = 0 if job in self.done else 1
        h = self._host_of(k)
        if h is None:
            r["ctx_host_slowness"] = r["ctx_host_cpu_slowness"] = r["ctx_host_jobs"] = NAN
        else:
            rl = self.host_rel.get(h, ([], []))
            r["ctx_host_slowness"], r["ctx_host_cpu_slowness"] = _median(rl[0]), _median(rl[1])
            r["ctx_host_jobs"] = float(self.host_done.get(h, 0) + own)
        r["ctx_peers"] = float(self.peers_done.get(tr, 0) + own)
        return r

    # -- persistence for watch: the known fields and the relative values frozen at each job's end are enough.
    def to_state(self) -> dict[str, Any]:
        """JSON-able state (jobs' known fields and frozen peer ratios)."""
        return {"known": {str(j): k for j, k in self.known.items()},
                "done": {str(j): list(v) for j, v in self.done.items()}}

    @classmethod
    def from_state(cls, state: dict[str, Any], context: bool = True) -> "RunContext":
        """Rebuild exactly the multiset statistics of a saved context."""
        rc = cls(context)
        for j, k in state["known"].items():
            rc.ingest(j, k)
        if context:
            for j, rels in state["done"].items():
                if j in rc.known:
                    rc._finish(j, tuple(NAN if v is None else float(v) for v in rels))
        return rc


# ---------------------------------------------------------------------------------------------- scoring
def detector_inputs(detector: Any) -> list[str] | None:
    """Columns a detector's score depends on (None: unknown, so every known field)."""
    cols = getattr(detector, "input_columns", None)
    if callable(cols):
        cols = cols()
    if cols:
        return list(cols)
    from llmad.detectors.baselines import BaselineDetector, feature_columns

    if isinstance(detector, BaselineDetector):
        return feature_columns(detector.features)
    # Text detectors (SFT): the built-in job templates read only these fields.
    tmpl = getattr(getattr(detector, "config", None), "template", None)
    if getattr(detector, "_template_path", None) is None and tmpl in ("paper", "compact"):
        return list(PAPER_FEATURES)
    if getattr(detector, "_template_path", None) is None and tmpl == "context":
        return list(PAPER_FEATURES) + list(CONTEXT_FEATURES) + ["transformation"]
    return None


def detector_uses_context(detector: Any, columns: list[str] | None) -> bool:
    """True when the detector reads peer features (so the replay must compute them)."""
    if columns is not None:
        return any(c.startswith("ctx_") for c in columns)
    tmpl = getattr(getattr(detector, "config", None), "template", None)
    if tmpl:
        if tmpl == "context":
            return True
        try:
            from llmad.render import reads_context

            return reads_context(getattr(detector, "_template_path", None) or tmpl)
        except Exception:
            return True
    return True


def _key(row: dict[str, Any], columns: Sequence[str]) -> tuple:
    return tuple(None if not _known(v := row.get(c)) else v for c in columns)


class CachedScorer:
    """Scores detector rows in batches, remembering each distinct input's score (bounded cache).

    For a detector that renders text (``render`` + ``score_texts``, the SFT models) the sentence is cached too,
    which merges inputs (of any job, any run) that differ only below the template's rounding. The cache is an LRU
    (``OrderedDict``): memory stays bounded however long the stream, and sentences that recur across runs stay.
    """

    def __init__(self, detector: Any, columns: list[str] | None, batch_size: int = 1024,
                 cache_size: int = 200_000):
        self.detector, self.batch_size, self.cache_size = detector, batch_size, cache_size
        self.columns = columns
        self.by_text = callable(getattr(detector, "render", None)) and callable(
            getattr(detector, "score_texts", None))
        self.cache: OrderedDict[Any, float] = OrderedDict()
        self.pending: dict[Any, dict[str, Any]] = {}
        self.live: set[Any] = set()  # keys requested since the last release(): never evicted before use
        # Fields that say something about the job itself; before one is known the score is only the prior.
        self.evidence = None if columns is None else [
            c for c in columns if c in ENDPOINTS or (c.startswith("ctx_") and c != "ctx_peers")] or None
        self.requests = self.hits = self.model_rows = self.calls = 0
        self.model_s = self.render_s = 0.0

    def key(self, row: dict[str, Any]) -> tuple:
        """The value tuple the score depends on."""
        cols = self.columns if self.columns is not None else sorted(
            c for c in row if c not in LABEL_COLUMNS)
        return (tuple(cols), _key(row, cols)) if self.columns is None else _key(row, cols)

    def informative(self, row: dict[str, Any]) -> bool:
        """False while none of the detector's time-revealed inputs is known (nothing to score yet)."""
        return self.evidence is None or any(_known(row.get(c)) for c in self.evidence)

    def request(self, key: Any, row: dict[str, Any]) -> None:
        """Ask for the score of ``key`` (computed at the next ``flush`` unless cached)."""
        self.requests += 1
        self.live.add(key)
        if key in self.cache:
            self.cache.move_to_end(key)
            self.hits += 1
            return
        if key in self.pending:
            self.hits += 1
            return
        self.pending[key] = row

    def _frame(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        df = pd.DataFrame(rows)
        for c in list(PAPER_FEATURES) + (self.columns or []):
            if c not in df.columns:
                df[c] = np.nan
        for c in df.columns:
            if df[c].dtype == object and c in NUMERIC or c.startswith("ctx_") or c in PAPER_FEATURES:
                df[c] = pd.to_numeric(df[c], errors="coerce")
        return df

    def flush(self) -> None:
        """Score every pending input (batched); evict the cache when it is full."""
        if not self.pending:
            return
        keys = list(self.pending)
        rows = [self.pending[k] for k in keys]
        self.pending = {}
        for i in range(0, len(keys), self.batch_size):
            ks, rs = keys[i:i + self.batch_size], rows[i:i + self.batch_size]
            frame = self._frame(rs)
            if self.by_text:
                t0 = time.perf_counter()
                texts = self.detector.render(frame)
                t1 = time.perf_counter()
                # Distinct inputs can render to one sentence (rounding): score each sentence once.
                uniq = {}
                for t in texts:
                    if ("text", t) in self.cache:
                        self.cache.move_to_end(("text", t))
                    else:
                        uniq[t] = None
                if uniq:
                    s = np.asarray(self.detector.score_texts(list(uniq)), dtype=np.float64)
                    self.model_rows += len(uniq)
                    self.calls += 1
                    for t, v in zip(uniq, s):
                        self.cache[("text", t)] = float(v)
                self.render_s += t1 - t0
                self.model_s += time.perf_counter() - t1
                for k, t in zip(ks, texts):
                    self.cache[k] = self.cache[("text", t)]
            else:
                t0 = time.perf_counter()
                s = np.asarray(self.detector.score(frame), dtype=np.float64)
                self.model_s += time.perf_counter() - t0
                self.model_rows += len(ks)
                self.calls += 1
                for k, v in zip(ks, s):
                    self.cache[k] = float(v)
        self._evict()

    def _evict(self) -> None:
        """Drop least recently used entries beyond ``cache_size``; keys awaiting ``score`` stay."""
        budget = len(self.cache)
        while len(self.cache) > self.cache_size and budget > 0:
            k, v = self.cache.popitem(last=False)
            budget -= 1
            if k in self.live:  # requested since the last release(): re-append, its score is still to be read
                self.cache[k] = v

    def score(self, key: Any) -> float:
        """The score of a requested key (after ``flush``)."""
        return self.cache[key]

    def release(self) -> None:
        """The scores requested so far have been read: their keys may be evicted."""
        self.live = set()

    def stats(self) -> dict[str, Any]:
        """Requests, cache hits, detector rows and calls, seconds in the detector."""
        return {"requests": self.requests, "cache_hits": self.hits, "model_rows": self.model_rows,
                "model_calls": self.calls, "model_s": round(self.model_s, 3), "render_s": round(self.render_s, 3),
                "by_text": self.by_text}


# ---------------------------------------------------------------------------------------------- alerts
class AlertPolicy:
    """Per-job alert decision: first score >= threshold, or k of the last n observations >= threshold."""

    def __init__(self, threshold: float, mode: str = "threshold", k: int = 2, n: int = 3):
        self.threshold, self.mode, self.k, self.n = float(threshold), mode, int(k), int(n)

    def new_state(self) -> dict[str, Any]:
        """Fresh per-job state."""
        return {"recent": [], "alerted": False}

    def observe(self, state: dict[str, Any], score: float) -> bool:
        """Add one observation; True exactly once, when the job first alerts."""
        if state["alerted"]:
            return False
        hit = score >= self.threshold
        if self.mode == "threshold":
            fire = hit
        else:
            rec = state["recent"]
            rec.append(bool(hit))
            if len(rec) > self.n:
                del rec[0]
            fire = sum(rec) >= self.k
        if fire:
            state["alerted"] = True
        return fire

    def statistic(self, scores: Sequence[float]) -> float:
        """The per-job number that alerts iff >= threshold (for choosing the threshold on validation)."""
        s = np.asarray(scores, dtype=np.float64)
        if not len(s):
            return NAN
        if self.mode == "threshold":
            return float(np.max(s))
        if len(s) < self.k:
            return -np.inf
        w = min(self.n, len(s))
        best = -np.inf
        for i in range(0, max(1, len(s) - w + 1)):
            win = np.sort(s[i:i + w])[::-1]
            best = max(best, float(win[self.k - 1]))
        # Windows shorter than n at the start also count (the rule fires as soon as k hits are in).
        for e in range(self.k, min(self.n, len(s))):
            best = max(best, float(np.sort(s[:e])[::-1][self.k - 1]))
        return best


# ---------------------------------------------------------------------------------------------- replay engine
@dataclass
class RunOutcome:
    """One replayed run: per-job results, alerts, counters."""

    jobs: pd.DataFrame
    alerts: list[dict[str, Any]]
    events: int
    observations: int
    statistics: np.ndarray  # per job: the value deciding an alert (for threshold choice)


def replay_run(run: pd.DataFrame, scorer: CachedScorer, policy: AlertPolicy | None, *, context: bool,
               batch: str = "run", speed: float | None = None, on_alert: Callable[[dict], None] | None = None,
               keep_statistic: bool = False) -> RunOutcome:
    """Replay one DAG run in event time: reveal fields, score changed jobs, apply the alert policy."""
    run = run.reset_index(drop=True)
    n = len(run)
    if scorer.columns is not None:
        tracked = list(dict.fromkeys(["job_id"] + list(scorer.columns) + (CTX_INPUTS if context else [])))
        tracked = [c for c in tracked if c in run.columns]
    else:
        tracked = [c for c in run.columns if c not in LABEL_COLUMNS]
    if context and "host" not in tracked and "host" in run.columns:
        tracked.append("host")
    ts = timestamp_matrix(run)
    R = reveal_times(run, tracked)
    present = np.column_stack([~pd.isna(run[c]).to_numpy() for c in tracked]) if tracked else np.zeros((n, 0), bool)
    jj, cc = np.nonzero(np.isfinite(R) & present)
    rt = R[jj, cc]
    ro = np.argsort(rt, kind="stable")
    jj, cc, rt = jj[ro], cc[ro], rt[ro]
    ej, ep = np.nonzero(np.isfinite(ts))
    et = ts[ej, ep]
    eo = np.lexsort((ep, et))
    ej, ep, et = ej[eo], ep[eo], et[eo]
    times = np.unique(et)
    rb = np.searchsorted(rt, times, side="right")
    eb = np.searchsorted(et, times, side="right")
    values = {c: run[c].to_numpy() for c in tracked}
    rc = RunContext(context)
    obs: list[tuple[float, int, Any, int]] = []  # (time, job, key, phase index)
    states = [policy.new_state() for _ in range(n)] if policy is not None else None
    alerts: list[dict[str, Any]] = []
    first_alert = np.full(n, NAN)
    alert_phase = np.full(n, -1)
    alert_score = np.full(n, NAN)
    max_score = np.full(n, -np.inf)
    final_score = np.full(n, NAN)
    n_obs = np.zeros(n, dtype=np.int64)
    per_job_scores: list[list[float]] | None = [[] for _ in range(n)] if keep_statistic else None
    ids = run["job_id"].astype(str).to_numpy() if "job_id" in run.columns else np.arange(n).astype(str)
    run_id = str(run["run_id"].iloc[0]) if "run_id" in run.columns and n else "run"
    labels = run["label"].to_numpy() if "label" in run.columns else None
    done_upto = 0
    wall0, t0 = time.perf_counter(), (times[0] if len(times) else 0.0)

    def resolve(upto: int) -> None:
        nonlocal done_upto
        for t, j, key, ph in obs[done_upto:upto]:
            s = scorer.score(key)
            n_obs[j] += 1
            final_score[j] = s
            if s > max_score[j]:
                max_score[j] = s
            if per_job_scores is not None:
                per_job_scores[j].append(s)
            if states is not None and policy.observe(states[j], s):
                first_alert[j], alert_phase[j], alert_score[j] = t, ph, s
                a = {"run_id": run_id, "job_id": ids[j], "time": float(t), "phase": TIMESTAMPS[ph],
                     "score": round(float(s), 6)}
                if labels is not None:
                    a["label"] = int(labels[j])
                alerts.append(a)
                if on_alert is not None:
                    on_alert(a)
        done_upto = upto
        scorer.release()

    r0 = e0 = 0
    for si, t in enumerate(times):
        if speed is not None:
            wait = wall0 + (t - t0) / speed - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        updates: dict[int, dict[str, Any]] = {}
        for i in range(r0, rb[si]):
            j = int(jj[i])
            c = tracked[cc[i]]
            updates.setdefault(j, {})[c] = values[c][j]
        r0 = rb[si]
        phases: dict[int, int] = {}
        for i in range(e0, eb[si]):
            j = int(ej[i])
            phases[j] = max(phases.get(j, -1), int(ep[i]))
        e0 = eb[si]
        rows = rc.step(updates, changed=phases.keys())
        for j, row in rows.items():
            if not scorer.informative(row):
                continue
            key = scorer.key(row)
            scorer.request(key, row)
            obs.append((float(t), j, key, phases[j]))
        if batch == "step" or speed is not None:
            scorer.flush()
            resolve(len(obs))
    scorer.flush()
    resolve(len(obs))
    end = row_nanreduce(ts, np.nanmax)
    start = row_nanreduce(ts, np.nanmin)
    run_end = float(np.nanmax(end)) if n and np.isfinite(end).any() else NAN
    ex_end = ts[:, PHASE_INDEX["execute_end"]]
    life = np.where(end > start, (first_alert - start) / np.where(end > start, end - start, 1.0), 0.0)
    out = pd.DataFrame({
        "workflow": run["workflow"].to_numpy() if "workflow" in run.columns else "",
        "run_id": run_id, "job_id": ids,
        "label": labels if labels is not None else -1,
        "anomaly_type": run["anomaly_type"].to_numpy() if "anomaly_type" in run.columns else "",
        "job_type": run["job_type"].to_numpy() if "job_type" in run.columns else "",
        "start": start, "execute_start": ts[:, PHASE_INDEX["execute_start"]], "execute_end": ex_end,
        "job_end": end, "run_end": run_end, "observations": n_obs,
        "max_score": np.where(np.isfinite(max_score), max_score, NAN), "final_score": final_score,
        "alerted": np.isfinite(first_alert), "alert_time": first_alert,
        "alert_phase": [TIMESTAMPS[p] if p >= 0 else "" for p in alert_phase], "alert_score": alert_score,
        "lead_job_s": end - first_alert, "lead_run_s": run_end - first_alert,
        "lead_execute_end_s": ex_end - first_alert,
        "alert_before_execute_end": first_alert < ex_end, "alert_by_execute_end": first_alert <= ex_end,
        "alert_life_frac": np.where(np.isfinite(first_alert), life, NAN),
    })
    out["alert_correct"] = np.where(out["alerted"], out["label"] == 1, False)
    stat_fn = policy.statistic if policy is not None else (lambda s: max(s, default=NAN))
    stat = np.array([stat_fn(s) for s in per_job_scores]) if per_job_scores is not None else np.zeros(0)
    return RunOutcome(out, alerts, int(len(et)), len(obs), stat)


def replay_features_run(run: pd.DataFrame, scorer: CachedScorer, threshold: float, *, context: bool,
                        order: Sequence[str] = PAPER_FEATURES) -> pd.DataFrame:
    """The paper's online study on one run: predictions at steps 1..len(order), first correct step per job."""
    from llmad.data.context import add_context_features

    base = run.reset_index(drop=True)
    if context:
        base = add_context_features(base.drop(columns=[c for c in base.columns if c.startswith("ctx_")]),
                                    causal=True)
    cols = scorer.columns
    steps = len(order)
    preds = np.zeros((len(base), steps), dtype=np.int8)
    for k in range(1, steps + 1):
        part = reveal_features(base, k, order)
        recs = [{c: v for c, v in r.items() if c not in LABEL_COLUMNS} for r in part.to_dict(orient="records")]
        keys = [scorer.key(r) for r in recs]
        for key, r in zip(keys, recs):
            scorer.request(key, r if cols is None else {c: r.get(c, NAN) for c in cols})
        scorer.flush()
        preds[:, k - 1] = [scorer.score(key) >= threshold for key in keys]
        scorer.release()
    y = base["label"].to_numpy().astype(int)
    correct = preds == y[:, None]
    first = np.where(correct.any(axis=1), correct.argmax(axis=1) + 1, 0)
    out = pd.DataFrame({"workflow": base.get("workflow", ""), "run_id": base.get("run_id", ""),
                        "job_id": base["job_id"].astype(str), "label": y,
                        "anomaly_type": base.get("anomaly_type", ""), "first_correct_step": first})
    for k in range(steps):
        out[f"pred_T{k + 1}"] = preds[:, k]
    return out


# ---------------------------------------------------------------------------------------------- data sources
def _specs(spec: str) -> list[str]:
    from llmad.data.flowbench import available_workflows
    from llmad.data.specs import parse_spec

    kind, arg = parse_spec(spec) if not Path(spec).exists() else ("flowbench", spec)
    if kind != "flowbench":
        raise LlmadError(f"replay needs Flow-Bench job data (flowbench:<workflow>), got {spec!r}")
    if arg in ("all", "*"):
        return list(available_workflows())
    return [a.strip() for a in arg.split(",") if a.strip()]


def list_run_members(spec: str, data_dir: str | Path | None = None) -> list[tuple[str, str, Callable[[], bytes], str]]:
    """(run_id, member name, reader, workflow) for every run of a spec, without parsing any run."""
    from llmad.data.flowbench import RUN_RE, archive_members, flowbench_source

    out = []
    for arg in _specs(spec):
        src = flowbench_source(arg, data_dir)
        wf = src.stem if src.suffix == ".zip" else src.name
        for name, read in archive_members(src):
            m = RUN_RE.search(name.replace("!", "/"))
            out.append((f"{m.group('wf')}-run{m.group('run')}", name, read, wf))
    return out


def iter_runs(spec: str, data_dir: str | Path | None = None, run_ids: Sequence[str] | None = None
              ) -> Iterator[pd.DataFrame]:
    """Yield one job table per DAG run, parsing one run at a time (memory does not grow with the stream)."""
    from llmad.data.flowbench import read_run_csv

    wanted = None if run_ids is None else set(run_ids)
    for rid, name, read, wf in list_run_members(spec, data_dir):
        if wanted is not None and rid not in wanted:
            continue
        yield read_run_csv(read(), name, workflow=wf)


def _light_run(run_id: str, name: str, read: Callable[[], bytes], workflow: str) -> pd.DataFrame:
    """Only what a run split needs (labels, anomaly types), read with the same normalisation as ``read_run_csv``."""
    import io

    from llmad.data.flowbench import NORMAL_TOKENS

    try:
        df = pd.read_csv(io.BytesIO(read()), usecols=lambda c: c == "anomaly_type", dtype=str, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as e:
        raise DataError(f"malformed CSV ({e})", file=name) from None
    if "anomaly_type" not in df.columns:
        raise DataError("missing column (needed for labels)", file=name, row=1, field="anomaly_type")
    at = df["anomaly_type"].astype("string").fillna("").str.strip()
    at = at.where(~at.str.lower().isin(NORMAL_TOKENS), "normal").astype(str)
    return pd.DataFrame({"workflow": workflow, "run_id": run_id, "label": (at != "normal").astype(int).to_numpy(),
                         "anomaly_type": at.to_numpy()})


def split_run_ids(spec: str, split: str = "run", seed: int = 0, data_dir: str | Path | None = None,
                  test_workflow: str | None = None) -> dict[str, list[str]]:
    """Run ids of train/validation/test, computed from a light (ids + labels) table read one run at a time."""
    from llmad.data.splits import make_split

    if split == "paper":
        raise LlmadError("replay needs whole DAG runs; the paper split is job-level: use --split run or workflow")
    light = pd.concat([_light_run(rid, name, read, wf) for rid, name, read, wf in list_run_members(spec, data_dir)],
                      ignore_index=True)
    sp = make_split(light, kind=split, seed=seed, test_workflow=test_workflow, data_dir=data_dir)
    return {p: sorted(sp.part(p)["run_id"].unique().tolist()) for p in ("train", "validation", "test")}


# ---------------------------------------------------------------------------------------------- summaries
CURVE_X = np.linspace(0.0, 1.0, 101)


class ReplaySummary:
    """Accumulates per-job outcomes run by run: counters, lead times, curve histograms (bounded memory)."""

    def __init__(self):
        self.runs: list[dict[str, Any]] = []
        self.c = defaultdict(int)
        self.leads_job: list[np.ndarray] = []
        self.leads_run: list[np.ndarray] = []
        self.leads_exec: list[np.ndarray] = []
        self.life_hist = np.zeros(len(CURVE_X), dtype=np.int64)  # anomalous jobs alerted by each life fraction
        self.fp_life_hist = np.zeros(len(CURVE_X), dtype=np.int64)
        self.by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])

    def add(self, jobs: pd.DataFrame) -> None:
        """Add one run's per-job outcomes."""
        y = jobs["label"].to_numpy() == 1
        al = jobs["alerted"].to_numpy(dtype=bool)
        before = jobs["alert_before_execute_end"].to_numpy(dtype=bool) & al
        by = jobs["alert_by_execute_end"].to_numpy(dtype=bool) & al
        self.c["jobs"] += len(jobs)
        self.c["anomalous"] += int(y.sum())
        self.c["normal"] += int((~y).sum())
        self.c["caught"] += int((al & y).sum())
        self.c["caught_before_execute_end"] += int((before & y).sum())
        self.c["caught_by_execute_end"] += int((by & y).sum())
        self.c["false_alerts"] += int((al & ~y).sum())
        self.leads_job.append(jobs.loc[al & y, "lead_job_s"].to_numpy(np.float32))
        self.leads_run.append(jobs.loc[al & y, "lead_run_s"].to_numpy(np.float32))
        self.leads_exec.append(jobs.loc[al & y, "lead_execute_end_s"].to_numpy(np.float32))
        lf = jobs["alert_life_frac"].to_numpy()
        for mask, hist in ((al & y, self.life_hist), (al & ~y, self.fp_life_hist)):
            v = np.clip(lf[mask], 0.0, 1.0)
            idx = np.searchsorted(CURVE_X, v - 1e-12, side="left")
            np.add.at(hist, np.clip(idx, 0, len(CURVE_X) - 1), 1)
        for t, a, b in zip(jobs["anomaly_type"].astype(str), y, al):
            if a:
                rec = self.by_type[t]
                rec[0] += 1
                rec[1] += int(b)
        anomalous_run = bool(y.any())
        self.runs.append({"run_id": str(jobs["run_id"].iloc[0]) if len(jobs) else "",
                          "workflow": str(jobs["workflow"].iloc[0]) if len(jobs) else "",
                          "jobs": int(len(jobs)), "anomalous_jobs": int(y.sum()), "anomalous_run": anomalous_run,
                          "caught": int((al & y).sum()), "false_alerts": int((al & ~y).sum()),
                          "first_alert_lead_run_s": float(np.nanmax(jobs.loc[al, "lead_run_s"])) if al.any()
                          else NAN})

    def curve(self) -> pd.DataFrame:
        """Early-detection curve: share of anomalous jobs caught by each fraction of the job's lifetime."""
        na, nn = max(self.c["anomalous"], 1), max(self.c["normal"], 1)
        return pd.DataFrame({"life_fraction": CURVE_X,
                             "caught_share": np.cumsum(self.life_hist) / na,
                             "false_alert_share": np.cumsum(self.fp_life_hist) / nn})

    def metrics(self) -> dict[str, Any]:
        """Headline early-detection numbers."""
        c = self.c
        lj = np.concatenate(self.leads_job) if self.leads_job else np.zeros(0)
        lr = np.concatenate(self.leads_run) if self.leads_run else np.zeros(0)
        le = np.concatenate(self.leads_exec) if self.leads_exec else np.zeros(0)
        le = le[np.isfinite(le)]
        runs = pd.DataFrame(self.runs)
        normal_runs = runs[~runs["anomalous_run"]] if len(runs) else runs
        alerted = c["caught"] + c["false_alerts"]
        prec = c["caught"] / alerted if alerted else NAN
        rec = c["caught"] / c["anomalous"] if c["anomalous"] else NAN
        return {
            "runs": int(len(runs)), "normal_runs": int(len(normal_runs)), "jobs": c["jobs"],
            "anomalous_jobs": c["anomalous"], "normal_jobs": c["normal"],
            "caught_share": rec,
            "caught_before_execute_end_share": c["caught_before_execute_end"] / c["anomalous"] if c["anomalous"]
            else NAN,
            "caught_by_execute_end_share": c["caught_by_execute_end"] / c["anomalous"] if c["anomalous"] else NAN,
            "median_lead_job_s": float(np.median(lj)) if len(lj) else NAN,
            "median_lead_run_s": float(np.median(lr)) if len(lr) else NAN,
            "median_lead_execute_end_s": float(np.median(le)) if len(le) else NAN,
            "false_alerts": c["false_alerts"],
            "false_alert_rate": c["false_alerts"] / c["normal"] if c["normal"] else NAN,
            "false_alerts_per_run": float(runs["false_alerts"].mean()) if len(runs) else NAN,
            "false_alerts_per_normal_run": float(normal_runs["false_alerts"].mean()) if len(normal_runs) else NAN,
            "alert_precision": prec,
            "alert_f1": 2 * prec * rec / (prec + rec) if prec == prec and rec == rec and prec + rec > 0 else NAN,
            "recall_per_anomaly_type": {t: {"n": v[0], "caught_share": v[1] / v[0] if v[0] else NAN}
                                        for t, v in sorted(self.by_type.items())},
        }


def plot_curve(curve: pd.DataFrame, path: str | Path, title: str = "early detection") -> None:
    """Write the early-detection curve as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from llmad.io import atomic_path

    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(curve["life_fraction"], curve["caught_share"], label="anomalous jobs alerted")
    ax.plot(curve["life_fraction"], curve["false_alert_share"], "--", label="normal jobs alerted (false)")
    ax.set_xlabel("fraction of the job's lifetime elapsed (ready -> last event)")
    ax.set_ylabel("share of jobs")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- replay driver
@dataclass
class ReplayResult:
    """What a replay measured (metrics, curve, per-run table, throughput)."""

    metrics: dict[str, Any]
    curve: pd.DataFrame | None
    runs: pd.DataFrame
    throughput: dict[str, Any]
    threshold: float
    features_table: pd.DataFrame | None = None
    predictions_path: str | None = None


def _rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2 ** 20
    except Exception:
        return NAN


def choose_stream_threshold(detector: Any, runs: Iterable[pd.DataFrame], cfg: StreamConfig) -> float:
    """Re-choose the alert threshold on a replay of validation runs (per-job alert statistic vs label)."""
    from llmad.metrics.classification import choose_threshold

    cols = detector_inputs(detector)
    ctx = detector_uses_context(detector, cols)
    scorer = CachedScorer(detector, cols, cfg.batch_size, cfg.cache_size)
    policy = AlertPolicy(0.5, cfg.alert, cfg.k, cfg.n)
    stats, labels = [], []
    for run in runs:
        o = replay_run(run, scorer, policy, context=ctx, keep_statistic=True)
        stats.append(o.statistics)
        labels.append(o.jobs["label"].to_numpy())
    if not stats:
        raise LlmadError("no validation runs to choose a threshold on")
    s, y = np.concatenate(stats), np.concatenate(labels)
    return choose_threshold(y, np.where(np.isfinite(s), s, -1e9), objective=cfg.threshold_objective)


def replay(runs: Iterable[pd.DataFrame], detector: Any, cfg: StreamConfig, threshold: float, *,
           predictions_path: str | Path | None = None, alerts_path: str | Path | None = None,
           on_alert: Callable[[dict], None] | None = None, progress: Callable[[str], None] | None = None
           ) -> ReplayResult:
    """Replay runs one at a time; accumulate early-detection metrics; stream per-job rows and alerts to files."""
    cfg.check()
    cols = detector_inputs(detector)
    ctx = detector_uses_context(detector, cols)
    scorer = CachedScorer(detector, cols, cfg.batch_size, cfg.cache_size)
    speed = parse_speed(cfg.speed)
    summary = ReplaySummary()
    feats: list[pd.DataFrame] = []
    events = observations = 0
    rss: list[float] = []
    pred_fh = alert_fh = None
    pred_tmp = alert_tmp = None
    if predictions_path is not None:
        pred_tmp = Path(predictions_path).with_name(f".{Path(predictions_path).name}.tmp{os.getpid()}")
        pred_tmp.parent.mkdir(parents=True, exist_ok=True)
        pred_fh = open(pred_tmp, "w", newline="")
    if alerts_path is not None:
        alert_tmp = Path(alerts_path).with_name(f".{Path(alerts_path).name}.tmp{os.getpid()}")
        alert_tmp.parent.mkdir(parents=True, exist_ok=True)
        alert_fh = open(alert_tmp, "w")
    policy = AlertPolicy(threshold, cfg.alert, cfg.k, cfg.n)
    header = True
    t0 = time.perf_counter()
    try:
        for i, run in enumerate(runs):
            if cfg.reveal == "features":
                fr = replay_features_run(run, scorer, threshold, context=ctx)
                feats.append(fr)
                part = fr
            else:
                o = replay_run(run, scorer, policy, context=ctx, batch=cfg.batch, speed=speed, on_alert=on_alert)
                events += o.events
                observations += o.observations
                summary.add(o.jobs)
                part = o.jobs
                if alert_fh is not None:
                    for a in o.alerts:
                        alert_fh.write(json.dumps(a, sort_keys=True) + "\n")
            if pred_fh is not None:
                part.to_csv(pred_fh, index=False, header=header)
                header = False
            rss.append(_rss_mb())
            if progress is not None:
                el = time.perf_counter() - t0
                progress(f"run {i + 1} {part['run_id'].iloc[0] if len(part) else ''}: {events} events, "
                         f"{events / max(el, 1e-9):.0f} events/s, rss {rss[-1]:.0f} MiB")
    finally:
        for fh, tmp, dst in ((pred_fh, pred_tmp, predictions_path), (alert_fh, alert_tmp, alerts_path)):
            if fh is not None:
                fh.close()
                if sys.exc_info()[0] is None:
                    os.replace(tmp, dst)
                else:
                    tmp.unlink(missing_ok=True)
    wall = time.perf_counter() - t0
    st = scorer.stats()
    thr = {"wall_s": round(wall, 3), "events": events, "observations": observations,
           "events_per_s": events / wall if wall > 0 else NAN, **st,
           "rss_mb_per_run": [round(r, 1) for r in rss], "rss_mb_first_run": rss[0] if rss else NAN,
           "rss_mb_last_run": rss[-1] if rss else NAN, "batch": cfg.batch, "speed": cfg.speed}
    if cfg.reveal == "features":
        table = features_table(pd.concat(feats, ignore_index=True)) if feats else pd.DataFrame()
        return ReplayResult(features_metrics(feats), None, pd.DataFrame(), thr, threshold, table,
                            str(predictions_path) if predictions_path else None)
    m = summary.metrics()
    m["threshold"] = threshold
    return ReplayResult(m, summary.curve(), pd.DataFrame(summary.runs), thr, threshold, None,
                        str(predictions_path) if predictions_path else None)


def features_table(fr: pd.DataFrame) -> pd.DataFrame:
    """Per step T1..Tk: accuracy, recall on anomalous jobs, false-positive rate, share first right at that step."""
    steps = sorted(int(c[6:]) for c in fr.columns if c.startswith("pred_T"))
    y = fr["label"].to_numpy()
    rows = []
    for k in steps:
        p = fr[f"pred_T{k}"].to_numpy()
        rows.append({"step": f"T{k}", "known_features": ", ".join(PAPER_FEATURES[:k]),
                     "accuracy": float(np.mean(p == y)),
                     "recall_anomalous": float(p[y == 1].mean()) if (y == 1).any() else NAN,
                     "false_positive_rate": float(p[y == 0].mean()) if (y == 0).any() else NAN,
                     "first_correct_share_anomalous": float(np.mean(fr.loc[y == 1, "first_correct_step"] == k))
                     if (y == 1).any() else NAN,
                     "correct_by_step_share_anomalous": float(np.mean(
                         (fr.loc[y == 1, "first_correct_step"] > 0) & (fr.loc[y == 1, "first_correct_step"] <= k)))
                     if (y == 1).any() else NAN})
    return pd.DataFrame(rows)


def features_metrics(feats: list[pd.DataFrame]) -> dict[str, Any]:
    """Headline numbers of the paper-style online study."""
    if not feats:
        return {"jobs": 0}
    fr = pd.concat(feats, ignore_index=True)
    y = fr["label"].to_numpy()
    f = fr["first_correct_step"].to_numpy()
    an = f[y == 1]
    return {"jobs": int(len(fr)), "anomalous_jobs": int((y == 1).sum()),
            "anomalous_ever_correct_share": float(np.mean(an > 0)) if len(an) else NAN,
            "median_first_correct_step_anomalous": float(np.median(an[an > 0])) if (an > 0).any() else NAN,
            "steps": features_table(fr).to_dict(orient="records")}


# ---------------------------------------------------------------------------------------------- feeds
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
            if R[j, ci] <= t and _known(v):
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


# ---------------------------------------------------------------------------------------------- watch
_NUMERIC_SET = set(NUMERIC) | {"label"}


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
                 cache_size: int = 200_000, checkpoint_s: float = 1.0):
        self.detector = detector
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
        self.runs: dict[str, RunContext] = {}
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
        text = json.dumps(self._state(), allow_nan=True)
        tmp = self.state_path.with_name(f".{self.state_path.name}.tmp{os.getpid()}")
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_path)

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
            self.runs[r] = RunContext.from_state(st["runs"][r]["ctx"], self.context)
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
        fmt = self.fmt
        if fmt == "csv":
            import csv

            try:
                row = next(csv.reader([line]))
            except (csv.Error, StopIteration) as e:
                self._bad(lineno, f"unparseable CSV ({e})")
                return None
            if self.header is None:
                self.header = ["job_id" if (h == "" and i == 0) else h for i, h in enumerate(row)]
                return None
            if len(row) != len(self.header):
                self._bad(lineno, f"expected {len(self.header)} fields, found {len(row)}")
                return None
            rec = {h: v for h, v in zip(self.header, row) if v != ""}
        else:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                self._bad(lineno, f"not JSON ({e.msg})")
                return None
            if not isinstance(rec, dict):
                self._bad(lineno, "a JSON record must be an object")
                return None
            rec = {str(k): v for k, v in rec.items() if v is not None and v != ""}
        if "job_id" not in rec and "" in rec:
            rec["job_id"] = rec.pop("")
        if "job_id" not in rec:
            self._bad(lineno, "no job_id")
            return None
        for c, v in list(rec.items()):
            if c in _NUMERIC_SET:
                try:
                    f = float(v)
                except (TypeError, ValueError):
                    self._bad(lineno, f"field {c!r}: expected a number, got {str(v)[:40]!r}")
                    return None
                rec[c] = f
            elif not isinstance(v, (str, int, float, bool)):
                rec[c] = json.dumps(v)
        if "host" not in rec and "kickstart_hostname" in rec:
            rec["host"] = str(rec["kickstart_hostname"])
        if "transformation" not in rec and "kickstart_transformations" in rec:
            rec["transformation"] = str(rec["kickstart_transformations"])
        for d, (a, b) in DERIVED_DELAYS.items():
            if d not in rec and a in rec and b in rec:
                rec[d] = float(rec[b]) - float(rec[a])
        return rec

    def _bad(self, lineno: int, msg: str) -> None:
        self.counts["malformed"] += 1
        self.log(f"llmad watch: line {lineno}: {msg}; record skipped")

    # -- processing
    def _run_key(self, rec: dict[str, Any]) -> str:
        if "run_id" in rec:
            return str(rec["run_id"])
        return str(rec.get("workflow", "feed"))

    def _touch_run(self, run: str) -> None:
        if run in self.runs:
            self.run_order.remove(run)
        else:
            self.runs[run] = RunContext(self.context)
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
        if path == "-":
            return self._run_stdin(resumed)
        p = Path(path)
        if self.fmt is None:
            self.fmt = "csv" if p.suffix.lower() == ".csv" else "jsonl"
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
        return {"resumed": resumed, "offset": self.offset, "lines": self.lines, **dict(self.counts),
                **{f"scorer_{k}": v for k, v in self.scorer.stats().items()}}

    def _run_stdin(self, resumed: bool) -> dict[str, Any]:
        self.fmt = self.fmt or "jsonl"
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
        return {"resumed": resumed, "lines": self.lines, **dict(self.counts)}


def config_dict(cfg: StreamConfig) -> dict[str, Any]:
    """The config as a plain dict (for outputs)."""
    return asdict(cfg)


# ---------------------------------------------------------------------------------------------- orchestration
def _sample_ids(ids: list[str], n: int | None, seed: int) -> list[str]:
    if not n or n >= len(ids):
        return list(ids)
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(np.asarray(ids, dtype=object), size=n, replace=False).tolist())


def fit_baseline(spec: str, data: str, ids: dict[str, list[str]], data_dir: str | Path | None = None,
                 train_runs: int | None = None, seed: int = 0):
    """``baseline:rf`` / ``baseline:hgb-context`` -> a BaselineDetector fit on train runs, threshold on validation."""
    from llmad.data.context import add_context_features
    from llmad.detectors.baselines import METHODS, BaselineDetector

    name = spec.split(":", 1)[1]
    method, _, feats = name.partition("-")
    feats = feats or "plain"
    if method not in METHODS or feats not in ("plain", "context"):
        raise LlmadError(f"--model {spec!r}: expected baseline:<{'|'.join(METHODS)}>[-context]")
    if not ids["validation"]:
        raise LlmadError("a baseline needs validation runs for its threshold; use a split with validation runs")

    def load(part: list[str]) -> pd.DataFrame:
        frames = []
        for r in iter_runs(data, data_dir, part):
            frames.append(add_context_features(r, causal=True) if feats == "context" else r)
        return pd.concat(frames, ignore_index=True)

    train = load(_sample_ids(ids["train"], train_runs, seed))
    val = load(_sample_ids(ids["validation"], train_runs, seed))
    det = BaselineDetector(method, feats, causal=True, seed=seed).fit(train, val)
    det.train_info_ = {"train_runs": int(train["run_id"].nunique()), "train_jobs": int(len(train)),
                       "validation_runs": int(val["run_id"].nunique())}
    return det


def open_detector(model: str, *, data: str | None = None, ids: dict[str, list[str]] | None = None,
                  data_dir: str | Path | None = None, train_runs: int | None = None, seed: int = 0,
                  quantize: bool = False, backend: str | None = "auto", workers: int = 1):
    """A saved detector folder (any kind), or ``baseline:<method>[-context]`` fitted on the split's train runs.

    SFT models are wrapped in a scoring backend (``llmad.detectors.sft.fast``; ``auto``: bf16 on CPUs with native
    bf16, else ONNX Runtime int8 when installed, else torch fp32); ``quantize`` keeps torch's int8 copy instead."""
    if model.startswith("baseline:"):
        if data is None or ids is None:
            raise LlmadError("--model baseline:... needs data with a split (train + validation runs)")
        return fit_baseline(model, data, ids, data_dir, train_runs, seed)
    from llmad.detectors import load_detector

    p = Path(model)
    if not p.exists():
        raise LlmadError(f"--model {model}: no such folder (a saved detector, or baseline:rf / baseline:hgb-context)")
    kw = {"quantize": True} if quantize and _kind(p) == "sft" else {}
    det = load_detector(p, **kw)
    if _kind(p) == "sft" and not quantize and backend is not None:
        from llmad.detectors.sft.fast import with_backend

        det = with_backend(det, backend, workers=workers)
    return det


def _kind(p: Path) -> str | None:
    for m in (p / "detector.json", p / "model" / "detector.json"):
        if m.is_file():
            try:
                return json.loads(m.read_text()).get("kind")
            except (OSError, json.JSONDecodeError):
                return None
    return None


def run_replay(model: str, data: str, cfg: StreamConfig, *, split: str = "run", part: str = "test",
               seed: int = 0, runs: int | None = None, val_runs: int | None = None, train_runs: int | None = None,
               test_workflow: str | None = None, data_dir: str | Path | None = None, out: str | Path | None = None,
               progress: Callable[[str], None] | None = None, detector: Any = None,
               on_alert: Callable[[dict], None] | None = None) -> tuple[ReplayResult, Path]:
    """``llmad replay``: choose runs, open/fit the detector, set the threshold, replay, write the run folder."""
    from llmad.io import write_frame_csv
    from llmad.rundir import default_out, write_run

    cfg.check()
    if detector is None and not model.startswith("baseline:") and not Path(model).exists():
        raise LlmadError(f"--model {model}: no such folder (a saved detector, or baseline:rf / baseline:hgb-context)")
    if split == "none":
        ids = None
        members = [m[0] for m in list_run_members(data, data_dir)]
        chosen = _sample_ids(sorted(members), runs, seed)
    else:
        ids = split_run_ids(data, split, seed, data_dir, test_workflow)
        if part not in ids:
            raise LlmadError(f"--part {part!r}: expected train, validation or test")
        chosen = _sample_ids(ids[part], runs, seed)
    if not chosen:
        raise LlmadError("no runs to replay")
    det = detector if detector is not None else open_detector(
        model, data=data, ids=ids, data_dir=data_dir, train_runs=train_runs, seed=seed, quantize=cfg.quantize,
        backend=cfg.backend, workers=cfg.workers)
    if cfg.threshold == "model":
        if getattr(det, "threshold_", None) is None:
            raise LlmadError("the model has no validation threshold; pass --threshold validation or a number")
        thr = float(det.threshold_)
    elif cfg.threshold == "validation":
        if ids is None or not ids["validation"]:
            raise LlmadError("--threshold validation needs a split with validation runs")
        vids = _sample_ids(ids["validation"], val_runs, seed)
        thr = choose_stream_threshold(det, iter_runs(data, data_dir, vids), cfg)
    else:
        thr = float(cfg.threshold)
    name = Path(model).name if not model.startswith("baseline:") else model.replace(":", "-")
    out_dir = Path(out) if out else default_out("replay", name)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = replay(iter_runs(data, data_dir, chosen), det, cfg, thr, predictions_path=out_dir / "predictions.csv",
                 alerts_path=out_dir / "alerts.jsonl" if cfg.reveal == "events" else None, progress=progress,
                 on_alert=on_alert)
    config = {"stream": config_dict(cfg), "model": model, "detector": getattr(det, "name", type(det).__name__),
              "data": data, "split": split, "part": part, "seed": seed, "runs": chosen,
              "runs_subsample": None if runs is None else int(runs), "test_workflow": test_workflow,
              "threshold": thr, "train_info": getattr(det, "train_info_", None)}
    metrics = {"mode": cfg.reveal, **res.metrics, "throughput": res.throughput}
    if res.curve is not None:
        write_frame_csv(out_dir / "early_curve.csv", res.curve)
        plot_curve(res.curve, out_dir / "early_curve.png",
                   title=f"early detection: {getattr(det, 'name', 'detector')} on {data} ({len(chosen)} runs)")
        write_frame_csv(out_dir / "runs.csv", res.runs)
    if res.features_table is not None:
        write_frame_csv(out_dir / "features_steps.csv", res.features_table)
    write_run(out_dir, config=config, metrics=metrics, summary=summary_line(res, cfg))
    return res, out_dir


def summary_line(res: ReplayResult, cfg: StreamConfig) -> str:
    """One human line per replay."""
    m, t = res.metrics, res.throughput
    speed = f"{t['events']} events in {t['wall_s']:.1f} s ({t['events_per_s']:.0f} events/s)" if t.get("events") \
        else f"{t['wall_s']:.1f} s"
    if cfg.reveal == "features":
        return (f"features reveal: {m.get('jobs', 0)} jobs; anomalous ever right "
                f"{m.get('anomalous_ever_correct_share', NAN):.3f}, median first right step "
                f"T{m.get('median_first_correct_step_anomalous', NAN)}; {speed}")
    return (f"{m['runs']} runs, {m['anomalous_jobs']} anomalous jobs: caught {m['caught_share']:.3f}, before "
            f"execute_end {m['caught_before_execute_end_share']:.3f}, median lead {m['median_lead_job_s']:.0f} s "
            f"(job) / {m['median_lead_run_s']:.0f} s (run); false alerts/normal run "
            f"{m['false_alerts_per_normal_run']:.2f}; threshold {res.threshold:.4g}; {speed}")


__all__ = ["prefix_augment", "run_replay", "open_detector", "fit_baseline", "StreamConfig", "make_partial", "reveal_times", "reveal_features", "RunContext", "CachedScorer",
           "AlertPolicy", "replay_run", "replay_features_run", "replay", "ReplayResult", "ReplaySummary",
           "iter_runs", "split_run_ids", "choose_stream_threshold", "feed_records", "write_feed", "Watcher",
           "plot_curve", "detector_inputs", "parse_speed", "ENDPOINTS"]
