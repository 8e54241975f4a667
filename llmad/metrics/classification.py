"""Classification, threshold and early-detection metrics. Thresholds come from validation, never test."""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np
from sklearn import metrics as skm


def choose_threshold(labels: Sequence[int], scores: Sequence[float], objective: str = "f1") -> float:
    """Pick the score threshold on *validation* data that maximises ``objective`` (f1 | accuracy | youden)."""
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=float)
    if len(y) == 0:
        raise ValueError("cannot choose a threshold on an empty validation set")
    finite = np.isfinite(s)
    y, s = y[finite], s[finite]
    cands = np.unique(s)
    if len(cands) > 2000:
        cands = np.unique(np.quantile(s, np.linspace(0, 1, 2001)))
    # A threshold above every score predicts all-normal; include it so single-class validation works.
    cands = np.append(cands, np.nextafter(cands.max(), np.inf)) if len(cands) else np.array([0.5])
    best_t, best_v = float(cands[0]), -np.inf
    pos = y.sum()
    for t in cands:
        pred = s >= t
        tp = float(np.sum(pred & (y == 1)))
        fp = float(np.sum(pred & (y == 0)))
        fn = float(pos - tp)
        if objective == "f1":
            v = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0  # nothing to find, nothing flagged
        elif objective == "accuracy":
            v = float(np.mean(pred == (y == 1)))
        elif objective == "youden":
            neg = len(y) - pos
            v = (tp / pos if pos else 0.0) - (fp / neg if neg else 0.0)
        else:
            raise ValueError(f"unknown threshold objective {objective!r} (expected f1, accuracy or youden)")
        if v > best_v:
            best_v, best_t = v, float(t)
    return best_t


def fpr_at_recall(labels: Sequence[int], scores: Sequence[float], recall: float = 0.95) -> float:
    """False-positive rate at the smallest threshold reaching ``recall`` on the positives."""
    y = np.asarray(labels).astype(int)
    if y.sum() == 0 or y.sum() == len(y):
        return float("nan")
    fpr, tpr, _ = skm.roc_curve(y, np.asarray(scores, dtype=float))
    idx = np.searchsorted(tpr, recall, side="left")
    return float(fpr[min(idx, len(fpr) - 1)])


def classification_report(labels: Sequence[int], scores: Sequence[float] | None = None,
                          predictions: Sequence[int] | None = None, threshold: float | None = None,
                          anomaly_types: Sequence[str] | None = None) -> dict[str, Any]:
    """Accuracy, precision, recall, F1, ROC-AUC, PR-AUC, FPR@95%recall, confusion matrix, recall per anomaly type."""
    y = np.asarray(labels).astype(int)
    if predictions is None:
        if scores is None or threshold is None:
            raise ValueError("need predictions, or scores and a threshold")
        predictions = (np.asarray(scores, dtype=float) >= threshold).astype(int)
    p = np.asarray(predictions).astype(int)
    out: dict[str, Any] = {
        "n": int(len(y)),
        "positives": int(y.sum()),
        "accuracy": float(skm.accuracy_score(y, p)),
        "precision": float(skm.precision_score(y, p, zero_division=0)),
        "recall": float(skm.recall_score(y, p, zero_division=0)),
        "f1": float(skm.f1_score(y, p, zero_division=0)),
        "confusion_matrix": skm.confusion_matrix(y, p, labels=[0, 1]).tolist(),
    }
    if threshold is not None:
        out["threshold"] = float(threshold)
    if scores is not None:
        s = np.asarray(scores, dtype=float)
        both = 0 < y.sum() < len(y)
        out["roc_auc"] = float(skm.roc_auc_score(y, s)) if both else float("nan")
        out["pr_auc"] = float(skm.average_precision_score(y, s)) if both else float("nan")
        out["fpr_at_95_recall"] = fpr_at_recall(y, s, 0.95)
    if anomaly_types is not None:
        types = np.asarray([str(t) for t in anomaly_types])
        per = {}
        for t in sorted(set(types[y == 1])):
            m = (types == t) & (y == 1)
            per[t] = {"n": int(m.sum()), "recall": float(p[m].mean()) if m.any() else float("nan")}
        out["recall_per_anomaly_type"] = per
    return out


def timed_scoring(score_fn: Callable[[Any], np.ndarray], items: Any, n: int | None = None) -> tuple[np.ndarray, float]:
    """Run ``score_fn(items)``; return scores and latency in ms per item."""
    t0 = time.perf_counter()
    s = np.asarray(score_fn(items))
    dt = time.perf_counter() - t0
    count = n if n is not None else len(s)
    return s, 1000.0 * dt / max(count, 1)


def bootstrap_ci(labels: Sequence[int], predictions: Sequence[int], metric: str = "f1", n_boot: int = 1000,
                 alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of a 0/1-prediction metric."""
    y = np.asarray(labels).astype(int)
    p = np.asarray(predictions).astype(int)
    fn = {"f1": lambda a, b: skm.f1_score(a, b, zero_division=0),
          "accuracy": skm.accuracy_score,
          "precision": lambda a, b: skm.precision_score(a, b, zero_division=0),
          "recall": lambda a, b: skm.recall_score(a, b, zero_division=0)}[metric]
    rng = np.random.default_rng(seed)
    vals = [fn(y[i], p[i]) for i in (rng.integers(0, len(y), len(y)) for _ in range(n_boot))]
    return float(np.quantile(vals, alpha / 2)), float(np.quantile(vals, 1 - alpha / 2))
