"""Context features: a job compared with its peers, as an operator would look at it.

Anomalies in Flow-Bench are injected per executor node, so what tells an anomalous job apart is less its own
runtime than how it and its host's other jobs compare with the same transformation elsewhere in the run.
``causal=True`` uses only peers that finished (``execute_end``) no later than the job itself, which is what a
streaming detector knows when the job's own runtime becomes known.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

CONTEXT_FEATURES = ["ctx_runtime_rel", "ctx_cpu_rel", "ctx_queue_rel", "ctx_stage_in_rel", "ctx_cpu_util",
                    "ctx_host_slowness", "ctx_host_cpu_slowness", "ctx_host_jobs", "ctx_peers"]


def _safe_div(a: pd.Series, b: pd.Series) -> pd.Series:
    b = b.where(b.abs() > 1e-9)
    return (a / b).astype(float)


def _peer_median(df: pd.DataFrame, keys: list[str], col: str, causal: bool, order: pd.Series) -> pd.Series:
    """Median of ``col`` over each job's peer group; causal: only peers earlier in ``order`` (self included)."""
    if not causal:
        return df.groupby(keys, sort=False)[col].transform("median")
    idx = order.sort_values(kind="stable").index
    s = df.loc[idx]
    med = s.groupby(keys, sort=False)[col].transform(lambda x: x.expanding().median())
    return med.reindex(df.index)


def add_context_features(jobs: pd.DataFrame, causal: bool = False) -> pd.DataFrame:
    """Return a copy of ``jobs`` with ``ctx_*`` columns (peer-relative runtime, host slowness, ...).

    A table without some inputs (a ``jobs:`` table with no CPU time, say) gets NaN for the features that need them.
    """
    df = jobs.copy()
    absent = [c for c in ("runtime", "kickstart_executables_cpu_time", "queue_delay", "stage_in_delay")
              if c not in df.columns]
    df[absent] = np.nan
    end = df["execute_end"] if "execute_end" in df.columns else pd.Series(np.nan, index=df.index)
    order = end.fillna(df.get("post_script_end", pd.Series(np.nan, index=df.index))).fillna(np.inf)
    grp = ["run_id", "transformation"]
    for col, name in (("runtime", "ctx_runtime_rel"), ("kickstart_executables_cpu_time", "ctx_cpu_rel"),
                      ("queue_delay", "ctx_queue_rel"), ("stage_in_delay", "ctx_stage_in_rel")):
        med = _peer_median(df, grp, col, causal, order)
        df[name] = _safe_div(df[col], med)
    df["ctx_cpu_util"] = _safe_div(df["kickstart_executables_cpu_time"], df["runtime"])
    hgrp = ["run_id", "host"]
    df["ctx_host_slowness"] = _peer_median(df, hgrp, "ctx_runtime_rel", causal, order)
    df["ctx_host_cpu_slowness"] = _peer_median(df, hgrp, "ctx_cpu_rel", causal, order)
    if causal:
        idx = order.sort_values(kind="stable").index
        df["ctx_host_jobs"] = df.loc[idx].groupby(hgrp, sort=False).cumcount().reindex(df.index) + 1
        df["ctx_peers"] = df.loc[idx].groupby(grp, sort=False).cumcount().reindex(df.index) + 1
    else:
        df["ctx_host_jobs"] = df.groupby(hgrp, sort=False)["job_id"].transform("size")
        df["ctx_peers"] = df.groupby(grp, sort=False)["job_id"].transform("size")
    df[CONTEXT_FEATURES] = df[CONTEXT_FEATURES].replace([np.inf, -np.inf], np.nan)
    return df
