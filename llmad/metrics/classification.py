"""Classification metrics, validation thresholds (via sklearn's roc_curve) and the one bootstrap of llmad."""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np
from sklearn import metrics as skm

from llmad.errors import LlmadError


OBJECTIVES = ("f1", "accuracy", "youden")


def threshold_counts(labels: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(u, tp, fp)``: the distinct scores ascending and, for each, the true/false positives of ``score >= u``.

    The counts come from sklearn's ``roc_curve`` (``drop_intermediate=False`` keeps every distinct score).
    """
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=float)
    pos = int(y.sum())
    neg = len(y) - pos
    if pos and neg:
        fpr, tpr, thr = skm.roc_curve(y, s, drop_intermediate=False)
        # thr[0] is +inf (nothing flagged); rates back to counts (exact integers after rounding)
        return thr[1:][::-1], np.rint(tpr[1:] * pos)[::-1], np.rint(fpr[1:] * neg)[::-1]
    # one class only: roc_curve's rates are undefined; every flagged item is of that class
    u, counts = np.unique(s, return_counts=True)
    flagged = np.cumsum(counts[::-1])[::-1].astype(float)
    zero = np.zeros(len(u))
    return u, (flagged if pos else zero), (zero if pos else flagged)


def choose_threshold(labels: Sequence[int], scores: Sequence[float], objective: str = "f1") -> float:
    """Pick the score threshold on *validation* data that maximises ``objective`` (f1 | accuracy | youden).

    Candidates: every distinct score (at most 2,001 quantiles of them) and one just above the maximum
    (all-normal, so single-class validation works); ties go to the lowest threshold.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown threshold objective {objective!r} (expected f1, accuracy or youden)")
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=float)
    if len(y) == 0:
        raise ValueError("cannot choose a threshold on an empty validation set")
    finite = np.isfinite(s)
    y, s = y[finite], s[finite]
    if len(s) == 0:
        return 0.5
    u, tp_u, fp_u = threshold_counts(y, s)
    cands = u if len(u) <= 2000 else np.unique(np.quantile(s, np.linspace(0, 1, 2001)))
    cands = np.append(cands, np.nextafter(cands.max(), np.inf))
    # ``s >= t`` flags the same items as ``s >= `` the smallest distinct score not below t
    at = np.searchsorted(u, cands, side="left")
    inside = at < len(u)
    tp = np.where(inside, tp_u[np.minimum(at, len(u) - 1)], 0.0)
    fp = np.where(inside, fp_u[np.minimum(at, len(u) - 1)], 0.0)
    pos = float(y.sum())
    neg = len(y) - pos
    fn = pos - tp
    if objective == "f1":
        d = 2 * tp + fp + fn
        v = np.where(d > 0, 2 * tp / np.where(d > 0, d, 1.0), 1.0)  # nothing to find, nothing flagged: 1
    elif objective == "accuracy":
        v = (tp + (neg - fp)) / len(y)
    else:
        v = (tp / pos if pos else 0.0) - (fp / neg if neg else 0.0)
    return float(cands[int(np.argmax(v))])


def objective_value(labels: Sequence[int], scores: Sequence[float], threshold: float, objective: str = "f1") -> float:
    """The value of a threshold objective (f1 | accuracy | youden) with ``scores >= threshold`` flagged."""
    y = np.asarray(labels).astype(int)
    pred = (np.asarray(scores, dtype=float) >= threshold).astype(int)
    if objective == "f1":
        return float(skm.f1_score(y, pred, zero_division=1.0))
    if objective == "accuracy":
        return float(skm.accuracy_score(y, pred))
    if objective == "youden":
        tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
        return float((tp / (tp + fn) if tp + fn else 0.0) - (fp / (fp + tn) if fp + tn else 0.0))
    raise ValueError(f"unknown threshold objective {objective!r} (expected f1, accuracy or youden)")


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


BOOTSTRAP_METRICS = ("f1", "accuracy", "precision", "recall")


def metric_from_counts(metric: str, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, n: int) -> np.ndarray:
    """A 0/1-prediction metric from confusion counts (vectorised; 0 where undefined, as sklearn's zero_division=0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "f1":
            d = 2 * tp + fp + fn
            return np.where(d > 0, 2 * tp / np.where(d > 0, d, 1), 0.0)
        if metric == "precision":
            d = tp + fp
            return np.where(d > 0, tp / np.where(d > 0, d, 1), 0.0)
        if metric == "recall":
            d = tp + fn
            return np.where(d > 0, tp / np.where(d > 0, d, 1), 0.0)
        if metric == "accuracy":
            return (n - fp - fn) / n
    raise LlmadError(f"unknown headline metric {metric!r}; expected one of {', '.join(BOOTSTRAP_METRICS)}")


def bootstrap_replicates(labels: Sequence[int], predictions: Sequence[int], metric: str = "f1", n_boot: int = 1000,
                         seed: int = 0) -> np.ndarray:
    """The metric on ``n_boot`` seeded resamples (with replacement) of the items; THE bootstrap of llmad."""
    y = np.asarray(labels).astype(bool)
    p = np.asarray(predictions).astype(bool)
    n = len(y)
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    step = max(1, min(n_boot, 4_000_000 // max(n, 1)))  # resample in blocks: bounded memory, same draws
    for a in range(0, n_boot, step):
        k = min(step, n_boot - a)
        idx = np.stack([rng.integers(0, n, n) for _ in range(k)])
        yy, pp = y[idx], p[idx]
        tp = (yy & pp).sum(1)
        fp = (~yy & pp).sum(1)
        fn = (yy & ~pp).sum(1)
        out[a:a + k] = metric_from_counts(metric, tp, fp, fn, n)
    return out


def bootstrap_ci(labels: Sequence[int], predictions: Sequence[int], metric: str = "f1", n_boot: int = 1000,
                 alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of a 0/1-prediction metric (over ``bootstrap_replicates``)."""
    vals = bootstrap_replicates(labels, predictions, metric, n_boot, seed)
    return float(np.quantile(vals, alpha / 2)), float(np.quantile(vals, 1 - alpha / 2))
