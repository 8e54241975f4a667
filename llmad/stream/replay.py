"""The replay engine: DAG runs in event time, fields revealed as their timestamps pass, changed jobs rescored.

``replay_run`` replays one run (``reveal="events"``), ``replay_features_run`` one run of the paper's online study
(``reveal="features"``), ``replay`` many runs one at a time, streaming per-job rows and alerts to files and
accumulating the early-detection metrics (``llmad.metrics.early``); ``choose_stream_threshold`` re-chooses the
alert threshold on a replay of validation runs.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from llmad.data.flowbench import PAPER_FEATURES, TIMESTAMPS
from llmad.data.reveal import (CTX_INPUTS, LABEL_COLUMNS, NAN, PHASE_INDEX, reveal_features, reveal_times,
                               row_nanreduce, timestamp_matrix)
from llmad.errors import LlmadError
from llmad.io import atomic_path
from llmad.metrics.early import ReplaySummary, features_metrics, features_table
from llmad.rundir import current_rss_mb
from llmad.stream.alerts import AlertPolicy
from llmad.stream.config import StreamConfig, parse_speed
from llmad.stream.context import PeerContext, detector_inputs, detector_uses_context
from llmad.stream.scorer import CachedScorer


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
    rc = PeerContext(context)
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


def _open_atomic(stack: contextlib.ExitStack, path: str | Path | None, **kw: Any) -> IO[str] | None:
    """A handle on a temp file that replaces ``path`` only if the replay completes (None without a path)."""
    if path is None:
        return None
    return stack.enter_context(open(stack.enter_context(atomic_path(path)), "w", **kw))


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
    policy = AlertPolicy(threshold, cfg.alert, cfg.k, cfg.n)
    header = True
    with contextlib.ExitStack() as files:  # both files appear (fsynced, renamed) only when every run replayed
        pred_fh = _open_atomic(files, predictions_path, newline="")
        alert_fh = _open_atomic(files, alerts_path)
        t0 = time.perf_counter()
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
            rss.append(current_rss_mb())
            if progress is not None:
                el = time.perf_counter() - t0
                progress(f"run {i + 1} {part['run_id'].iloc[0] if len(part) else ''}: {events} events, "
                         f"{events / max(el, 1e-9):.0f} events/s, rss {rss[-1]:.0f} MiB")
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
