"""When each field of a job becomes known: the one reveal model behind streaming replay and SFT prefix augmentation.

A field is known at its *reveal time*: a timestamp at itself; a delay once both of its endpoints have passed
(``runtime`` at ``execute_end``); transfer sizes when their transfer ends; the kickstart record when execution ends;
the host when execution starts; the DAG's static fields (transformation, type) from the start. A peer feature
(``ctx_*``) is known once the job's own fields it needs are (``CTX_NEEDS``): ``ctx_host_slowness`` summarises the
host's *other* jobs, so it is known as soon as the host is (``execute_start``), before the job's own runtime.
A `jobs:` table's numeric features that the map does not tie to timestamps (``attrs["measured"]``) are known
when the job ends.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from llmad.data.flowbench import KICKSTART, PAPER_FEATURES, TIMESTAMPS

NAN = float("nan")
LABEL_COLUMNS = ("label", "anomaly_type")  # never shown to a detector
# field -> the timestamps that must have passed before it is known (max of them); absent = static (job start).
ENDPOINTS: dict[str, tuple[str, ...]] = {
    **{t: (t,) for t in TIMESTAMPS},
    "wms_delay": ("ready", "submit"),
    "pre_script_delay": ("pre_script_start", "pre_script_end"),
    "queue_delay": ("submit", "execute_start"),
    "runtime": ("execute_start", "execute_end"),
    "post_script_delay": ("post_script_start", "post_script_end"),
    "stage_in_delay": ("stage_in_start", "stage_in_end"),
    "stage_in_bytes": ("stage_in_end",),
    "stage_in_effective_bytes_per_sec": ("stage_in_start", "stage_in_end"),
    "stage_out_delay": ("stage_out_start", "stage_out_end"),
    "stage_out_bytes": ("stage_out_end",),
    "stage_out_effective_bytes_per_sec": ("stage_out_start", "stage_out_end"),
    # The node is known once the job runs on it; the kickstart record arrives when execution ends.
    "host": ("execute_start",),
    "kickstart_hostname": ("execute_start",),
    **{k: ("execute_end",) for k in KICKSTART},
}
# Delays a feed may omit: derived from their endpoints (end - start).
DERIVED_DELAYS = {"wms_delay": ("ready", "submit"), "queue_delay": ("submit", "execute_start"),
                  "runtime": ("execute_start", "execute_end"),
                  "post_script_delay": ("post_script_start", "post_script_end"),
                  "stage_in_delay": ("stage_in_start", "stage_in_end"),
                  "stage_out_delay": ("stage_out_start", "stage_out_end"),
                  "pre_script_delay": ("pre_script_start", "pre_script_end")}
# Own fields a peer feature needs (unknown while they are).
CTX_NEEDS = {"ctx_runtime_rel": ("runtime",), "ctx_cpu_rel": ("kickstart_executables_cpu_time",),
             "ctx_queue_rel": ("queue_delay",), "ctx_stage_in_rel": ("stage_in_delay",),
             "ctx_cpu_util": ("runtime", "kickstart_executables_cpu_time"), "ctx_host_slowness": ("host",),
             "ctx_host_cpu_slowness": ("host",), "ctx_host_jobs": ("host",), "ctx_peers": ()}
CTX_INPUTS = ["transformation", "host", "runtime", "kickstart_executables_cpu_time", "queue_delay", "stage_in_delay",
              "execute_end"]
PHASE_INDEX = {t: i for i, t in enumerate(TIMESTAMPS)}


# ---------------------------------------------------------------------------------------------- partial jobs
def timestamp_matrix(jobs: pd.DataFrame) -> np.ndarray:
    """Jobs x TIMESTAMPS matrix of epoch seconds (NaN where a timestamp is missing)."""
    cols = [jobs[t].to_numpy(dtype=np.float64) if t in jobs.columns else np.full(len(jobs), NAN) for t in TIMESTAMPS]
    return np.column_stack(cols) if len(jobs) else np.zeros((0, len(TIMESTAMPS)))


def row_nanreduce(a: np.ndarray, fn) -> np.ndarray:
    """``fn`` (nanmin/nanmax) over each row's finite values; NaN for a row with none."""
    out = np.full(a.shape[0], NAN)
    ok = np.isfinite(a).any(axis=1)
    if ok.any():
        out[ok] = fn(np.where(np.isfinite(a[ok]), a[ok], np.nan), axis=1)
    return out


def reveal_times(jobs: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """When each of ``columns`` becomes known, per job (epoch seconds, shape jobs x columns)."""
    ts = timestamp_matrix(jobs)
    start, end = row_nanreduce(ts, np.nanmin), row_nanreduce(ts, np.nanmax)
    out = np.empty((len(jobs), len(columns)))
    measured = set(jobs.attrs.get("measured", ()))  # a jobs: table's numeric features: trusted at the job's end
    for i, c in enumerate(columns):
        eps = ENDPOINTS.get(c)
        if eps is None and c in measured:
            out[:, i] = end
            continue
        if eps is None:
            out[:, i] = start
            continue
        r = np.max(np.column_stack([ts[:, PHASE_INDEX[e]] for e in eps]), axis=1)
        # An endpoint that never happened: the value (if any) is only trusted once the job is over.
        out[:, i] = np.where(np.isfinite(r), r, end)
    return out


def make_partial(jobs: pd.DataFrame, as_of: float | Sequence[float] | pd.Series) -> pd.DataFrame:
    """Copy of ``jobs`` as known at ``as_of`` (one time, or one per row): fields not yet known become NaN.

    Ids, labels and the DAG's static fields stay. Peer features already present (``ctx_*``) are kept only where
    the job's own fields they need are known (they were computed on the whole table, so a streaming replay
    recomputes them causally instead).
    """
    if isinstance(as_of, pd.Series):
        t = as_of.reindex(jobs.index).to_numpy(dtype=np.float64)
    else:
        t = np.broadcast_to(np.asarray(as_of, dtype=np.float64), (len(jobs),))
    out = jobs.copy()
    # Static DAG fields (transformation, type, ...) are planned before the run starts: always known.
    cols = [c for c in out.columns if c in ENDPOINTS or c in jobs.attrs.get("measured", ())]
    r = reveal_times(out, cols)
    for i, c in enumerate(cols):
        hidden = ~(r[:, i] <= t)
        if hidden.any():
            if out[c].dtype.kind in "iub":
                out[c] = out[c].astype(np.float64)
            out.loc[hidden, c] = np.nan
    for c, needs in CTX_NEEDS.items():
        if c in out.columns:
            hidden = np.zeros(len(out), dtype=bool)
            for f in needs:
                if f in out.columns:
                    hidden |= pd.isna(out[f]).to_numpy()
            out.loc[hidden, c] = np.nan
    return out


def prefix_augment(jobs: pd.DataFrame, copies: int = 1, seed: int = 0) -> pd.DataFrame:
    """``jobs`` plus ``copies`` partial versions of each, cut at a random one of its events before the last."""
    rng = np.random.default_rng(seed)
    ts = timestamp_matrix(jobs)
    parts = [jobs]
    for _ in range(copies):
        cut = np.full(len(jobs), np.nan)
        for i, row in enumerate(ts):
            ev = np.unique(row[np.isfinite(row)])
            if len(ev) > 1:
                cut[i] = ev[rng.integers(0, len(ev) - 1)]
        ok = np.isfinite(cut)
        parts.append(make_partial(jobs[ok], cut[ok]))
    return pd.concat(parts, ignore_index=True)


def reveal_features(jobs: pd.DataFrame, k: int, order: Sequence[str] = PAPER_FEATURES) -> pd.DataFrame:
    """The paper's online step ``k``: only the first ``k`` features of ``order`` known (peer features masked)."""
    out = jobs.copy()
    hidden = [c for c in order[k:] if c in out.columns]
    out[hidden] = np.nan
    for c, needs in CTX_NEEDS.items():
        if c in out.columns and any(f in hidden for f in needs):
            out[c] = np.nan
    return out



# ---------------------------------------------------------------------------------------------- stage cuts
# The stages of a job's life in event order, each closed by these timestamps (ready -> submit: wms; stage-in;
# submit -> execute_start: queue, host; execute_end: runtime, kickstart; stage-out; post-script). A table without
# timestamps (synthetic or feature-only jobs) cannot be cut at event times, so it is cut at a stage instead; what a
# stage reveals comes from ENDPOINTS and CTX_NEEDS, the same tables make_partial uses.
STAGE_EVENTS: list[tuple[str, ...]] = [("submit",), ("stage_in_start", "stage_in_end"), ("execute_start",),
                                       ("execute_end",), ("stage_out_start", "stage_out_end"),
                                       ("post_script_start", "post_script_end")]
_EVENT_STAGE = {t: k for k, events in enumerate(STAGE_EVENTS) for t in events}
# Timestamps that event-time cuts need; a table without them is cut at stages.
EVENT_COLUMNS = ("submit", "execute_start", "execute_end")


def reveal_stage(column: str) -> int:
    """Index into STAGE_EVENTS of the stage whose events reveal ``column``; -1 when known before the first stage
    (ids, the DAG's static fields, ``ready``, the pre-script)."""
    needs = CTX_NEEDS.get(column)
    if needs is not None:
        return max((reveal_stage(f) for f in needs), default=-1)
    return max((_EVENT_STAGE.get(e, -1) for e in ENDPOINTS.get(column, ())), default=-1)


# The paper features each stage reveals (wms | stage-in delay, bytes | queue | runtime, cpu | stage-out | post).
PREFIX_STAGES: list[list[str]] = [[f for f in PAPER_FEATURES if reveal_stage(f) == k] for k in range(len(STAGE_EVENTS))]


def partial_at_stage(jobs: pd.DataFrame, stage: int) -> pd.DataFrame:
    """Copy of ``jobs`` as seen before stage ``stage`` (0-based into STAGE_EVENTS): what it or a later stage
    reveals (fields, timestamps, peer features via CTX_NEEDS) becomes NaN."""
    if not 0 <= stage <= len(STAGE_EVENTS):
        raise ValueError(f"stage must be in 0..{len(STAGE_EVENTS)}")
    out = jobs.copy()
    cols = [c for c in out.columns if reveal_stage(c) >= stage]
    out[cols] = np.nan
    return out


def stage_prefix_augment(jobs: pd.DataFrame, copies: int = 1, seed: int = 0) -> pd.DataFrame:
    """``jobs`` plus ``copies`` partial versions of each, cut before a random stage 1..5 (same labels)."""
    rng = np.random.default_rng(seed)
    parts = [jobs]
    for _ in range(copies):
        cut = rng.integers(1, len(STAGE_EVENTS), size=len(jobs))
        for k in np.unique(cut):
            parts.append(partial_at_stage(jobs[cut == k], int(k)))
    return pd.concat(parts, ignore_index=True)


def augment_with_prefixes(jobs: pd.DataFrame, copies: int = 1, seed: int = 0) -> tuple[pd.DataFrame, str]:
    """(``jobs`` + partial copies, how they were cut): at event times (``prefix_augment``, the rows a streaming
    replay scores) when the table has timestamps, else at stages (``stage_prefix_augment``)."""
    if set(EVENT_COLUMNS) <= set(jobs.columns):
        return prefix_augment(jobs, copies=copies, seed=seed), "events"
    return stage_prefix_augment(jobs, copies=copies, seed=seed), "stages"
