"""Why do reconstruction detectors score ROC-AUC below 0.5 on ASD (bench/results/numeric.md: lstm-ae / MOMENT about
0.42 on omi-1..4, iforest 0.60)? Writes bench/results/asd_auc_probe.json.

    nice -n 10 .venv/bin/python bench/asd_auc_probe.py

Fits the numeric bench's lstm-ae (window 64, 2000 train windows, 150 steps) on ASD omi-1..4, keeps the squared
reconstruction error per point *and channel*, and reports ROC-AUC of: the usual score (mean over channels), its
negation (a sign bug would show as AUC > 0.5 here), each channel's error alone, the error standardised per channel
by its train median / IQR and reduced by mean or max, per-series AUCs, and simple label-free signals of the raw
z-scored data (|z| level, 16-step rolling std).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LLMAD_TORCH_THREADS", "1")


def main() -> None:
    import numpy as np
    import pandas as pd
    import torch
    from sklearn.metrics import roc_auc_score

    from llmad.api.numeric import NumericConfig, build_detector, load_split, select_training
    from llmad.data.windows import ZScore, make_windows
    from llmad.io import write_json

    L = 64
    cfg = NumericConfig(method="lstm-ae", data="asd:all", limit_series=4, window=L, stride=L, shots=2000,
                        max_steps=150, seed=0)
    split = load_split(cfg)
    z = ZScore().fit(split.train)
    tr, _, _ = select_training(cfg, split, z, L)
    det = build_detector(cfg).fit(tr)

    def channel_errors(ws):
        x = ws.windows()
        with torch.no_grad():
            e = ((det.model_(torch.from_numpy(x)) - torch.from_numpy(x)) ** 2).numpy()
        out = []
        for i, a in enumerate(ws.arrays):
            acc, cnt = np.zeros(a.shape), np.zeros(len(a))
            for r in np.flatnonzero(ws.index[:, 0] == i):
                s = ws.index[r, 1]
                acc[s:s + L] += e[r]
                cnt[s:s + L] += 1
            out.append(acc / cnt[:, None])
        return out

    etr = np.concatenate(channel_errors(make_windows(split.train, z, L, L)))
    med = np.median(etr, axis=0)
    iqr = np.percentile(etr, 75, axis=0) - np.percentile(etr, 25, axis=0) + 1e-6
    te = make_windows(split.test, z, L, L)
    per_series = channel_errors(te)
    e, y, x = np.concatenate(per_series), te.point_labels(), np.concatenate(te.arrays)
    std = (e - med) / iqr

    def auc(s):
        return round(float(roc_auc_score(y, s)), 3)

    roll = np.concatenate([pd.DataFrame(a).rolling(16, min_periods=1, center=True).std().fillna(0).mean(axis=1)
                           .to_numpy() for a in te.arrays])
    res = {
        "setup": "lstm-ae (hidden 32, 150 steps, 2000 windows of 64) on asd omi-1..4, test = last 70% of each "
                 "labelled test part, non-overlapping windows",
        "auc_mean_error": auc(e.mean(1)), "auc_negated_mean_error": auc(-e.mean(1)),
        "auc_per_channel_error": [auc(e[:, j]) for j in range(e.shape[1])],
        "mean_error_per_channel_normal": np.round(e[y == 0].mean(0), 3).tolist(),
        "mean_error_per_channel_anomalous": np.round(e[y == 1].mean(0), 3).tolist(),
        "auc_channel_standardised_mean": auc(std.mean(1)), "auc_channel_standardised_max": auc(std.max(1)),
        "auc_abs_z_level": auc(np.abs(x).mean(1)), "auc_rolling_std_16": auc(roll),
        "per_series_auc_mean_error": {n: round(float(roc_auc_score(lab, s.mean(1))), 3)
                                      for n, s, lab in zip(te.names, per_series, te.labels) if 0 < lab.sum()},
        "anomalous_points_per_series": {n: int(lab.sum()) for n, lab in zip(te.names, te.labels)},
    }
    write_json(ROOT / "bench" / "results" / "asd_auc_probe.json", res)
    for k, v in res.items():
        print(k, v)


if __name__ == "__main__":
    main()
