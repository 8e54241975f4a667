"""Causal peer context of one run, updated incrementally as fields become known, and what a detector reads.

``PeerContext`` keeps, per transformation and per host, sorted lists of the known peer values, so at each event a
job's ``ctx_*`` features equal ``llmad.data.context.add_context_features(causal=True)`` on what is known then.
``detector_inputs`` / ``detector_uses_context`` say which columns a detector's score depends on, so the replay
tracks only those and computes peer features only when they are read.
"""
from __future__ import annotations

import bisect
import math
from collections import defaultdict
from typing import Any, Iterable

from llmad.data.context import CONTEXT_FEATURES
from llmad.data.flowbench import PAPER_FEATURES
from llmad.data.reveal import NAN

_PEER_METRICS = {"runtime": "runtime", "kickstart_executables_cpu_time": "cpu", "queue_delay": "queue",
                 "stage_in_delay": "stage_in"}


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


def is_known(v: Any) -> bool:
    """False for None and NaN: the field is not known yet."""
    return v is not None and not (isinstance(v, float) and v != v)


class PeerContext:
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
        return str(t) if is_known(t) else "unknown"

    def _host_of(self, k: dict[str, Any]) -> str | None:
        h = k.get("host", k.get("kickstart_hostname"))
        return str(h) if is_known(h) else None

    def ingest(self, job: Any, fields: dict[str, Any]) -> None:
        """Record newly known (or corrected) fields of ``job``."""
        k = self.known.setdefault(job, {})
        for c, v in fields.items():
            if not is_known(v):
                continue
            old = k.get(c)
            k[c] = v
            if self.context and c in _PEER_METRICS:
                lst = self.trans[self._trans_of(k)][_PEER_METRICS[c]]
                if is_known(old):
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
                if job not in self.done and is_known(self.known.get(job, {}).get("execute_end")):
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
        r["ctx_cpu_util"] = _div(k.get("kickstart_executables_cpu_time"), float(rt)) if is_known(rt) else NAN
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
    def from_state(cls, state: dict[str, Any], context: bool = True) -> "PeerContext":
        """Rebuild exactly the multiset statistics of a saved context."""
        rc = cls(context)
        for j, k in state["known"].items():
            rc.ingest(j, k)
        if context:
            for j, rels in state["done"].items():
                if j in rc.known:
                    rc._finish(j, tuple(NAN if v is None else float(v) for v in rels))
        return rc


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
    # Text detectors (SFT, ICL): the built-in job templates read only these fields.
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
