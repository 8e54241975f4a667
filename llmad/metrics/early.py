"""Early-detection metrics of a streaming replay: how many anomalous jobs alert, how early, at what false-alert cost.

``ReplaySummary`` accumulates per-job outcomes run by run (counters, lead times, a histogram per lifetime
fraction) so memory does not grow with the number of jobs; ``features_table`` / ``features_metrics`` summarise
the LLM_AD paper's online study (one feature revealed per step).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd

from llmad.data.flowbench import PAPER_FEATURES

NAN = float("nan")
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
