"""Tiny synthetic metric series shared by the numeric detector tests (built in code, seconds to score)."""
from __future__ import annotations

import numpy as np

from llmad.data.timeseries import Series
from llmad.data.windows import ZScore, make_windows


def synthetic(n: int = 400, f: int = 3, anomalies: tuple[int, ...] = (), seed: int = 0, name: str = "syn"):
    """Noisy sines; each index in ``anomalies`` starts an 8-point level shift of +6 on every channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    v = np.stack([np.sin(2 * np.pi * t / (20 + 7 * k)) for k in range(f)], axis=1) + 0.1 * rng.normal(size=(n, f))
    lab = np.zeros(n, int)
    for a in anomalies:
        v[a:a + 8] += 6.0
        lab[a:a + 8] = 1
    return Series(name=name, values=v, labels=lab, features=[f"m{k}" for k in range(f)], meta={"group": "g"})


def window_sets(length: int = 32, stride: int = 8):
    """(train, validation, test) WindowSets; train is clean, validation/test hold level shifts."""
    tr = synthetic(400, seed=0, name="train")
    va = synthetic(240, anomalies=(60, 170), seed=1, name="val")
    te = synthetic(240, anomalies=(50, 150), seed=2, name="test")
    z = ZScore().fit([tr])
    return (make_windows([tr], z, length, stride), make_windows([va], z, length, stride),
            make_windows([te], z, length, stride))


def auc(ws, scores) -> float:
    """ROC-AUC of per-point scores against the WindowSet's point labels."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(ws.point_labels(), scores))
