"""Time-series anomaly metrics on per-point scores: point-wise P/R/F1, PR-AUC, ROC-AUC, FPR at 95% recall,
event-level recall and detection delay, and (clearly labelled) point-adjusted F1.

Point adjustment (Xu et al., 2018) marks a whole labelled segment detected when any one of its points is
flagged. It inflates scores a lot (random scores reach high PA-F1 on SMD, Kim et al. AAAI'22), so it is
reported under ``point_adjusted_INFLATED`` only and never used to choose a threshold or a model.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from llmad.errors import LlmadError
from llmad.metrics.classification import classification_report


def event_spans(event_ids: np.ndarray) -> dict[int, tuple[int, int]]:
    """Event id -> (first index, last index + 1) in a concatenated point array."""
    ev = np.asarray(event_ids)
    out: dict[int, tuple[int, int]] = {}
    for e in np.unique(ev[ev >= 0]):
        idx = np.flatnonzero(ev == e)
        out[int(e)] = (int(idx[0]), int(idx[-1]) + 1)
    return out


def event_metrics(labels: np.ndarray, predictions: np.ndarray, event_ids: np.ndarray,
                  event_types: dict[int, str] | None = None, tolerance: int = 0,
                  step_seconds: float | None = None) -> dict[str, Any]:
    """Per-event recall (detected = any flagged point in the event, or within ``tolerance`` points after it)
    and detection delay (points from the event's first point to its first flagged point)."""
    p = np.asarray(predictions).astype(bool)
    spans = event_spans(event_ids)
    per_type: dict[str, list[tuple[bool, float]]] = {}
    delays, hits = [], []
    for e, (a, b) in spans.items():
        seg = p[a:min(len(p), b + tolerance)]
        det = bool(seg.any())
        d = float(np.argmax(seg)) if det else float("nan")
        hits.append(det)
        if det:
            delays.append(d)
        t = (event_types or {}).get(e, "event")
        per_type.setdefault(t, []).append((det, d))
    out: dict[str, Any] = {
        "events": len(spans),
        "event_recall": float(np.mean(hits)) if hits else float("nan"),
        "mean_delay_points": float(np.mean(delays)) if delays else float("nan"),
        "median_delay_points": float(np.median(delays)) if delays else float("nan"),
        "event_tolerance_points": int(tolerance),
    }
    if step_seconds:
        out["mean_delay_seconds"] = out["mean_delay_points"] * step_seconds
    out["per_type"] = {t: {"events": len(v), "event_recall": float(np.mean([h for h, _ in v])),
                           "mean_delay_points": float(np.nanmean([d for _, d in v])) if any(h for h, _ in v)
                           else float("nan")}
                       for t, v in sorted(per_type.items())}
    # False alarms outside events: flagged points with label 0, and alarm runs (contiguous flagged normal points)
    lab = np.asarray(labels).astype(bool)
    fa = p & ~lab
    out["false_alarm_points"] = int(fa.sum())
    out["false_alarm_runs"] = int(np.sum(np.diff(np.concatenate([[0], fa.astype(int)])) == 1))
    return out


def point_adjust(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Point-adjusted predictions: a labelled segment with any flagged point becomes fully flagged."""
    lab = np.asarray(labels).astype(int)
    adj = np.asarray(predictions).astype(int).copy()
    starts = np.flatnonzero(np.diff(np.concatenate([[0], lab])) == 1)
    ends = np.flatnonzero(np.diff(np.concatenate([lab, [0]])) == -1) + 1
    for a, b in zip(starts, ends):
        if adj[a:b].any():
            adj[a:b] = 1
    return adj


def _f1(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    tp = float(np.sum((p == 1) & (y == 1)))
    fp = float(np.sum((p == 1) & (y == 0)))
    fn = float(np.sum((p == 0) & (y == 1)))
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": prec, "recall": rec, "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0}


def ts_report(labels: Sequence[int], scores: Sequence[float], threshold: float,
              event_ids: np.ndarray | None = None, event_types: dict[int, str] | None = None,
              tolerance: int = 0, step_seconds: float | None = None) -> dict[str, Any]:
    """Everything for one detector on one test part: point metrics at the validation ``threshold``, AUCs,
    FPR@95% recall, event recall/delay (overall and per type), and the labelled point-adjusted F1."""
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=float)
    if len(y) != len(s):
        raise ValueError(f"{len(y)} labels for {len(s)} scores")
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} non-finite scores: a detector must not emit NaN/inf")
    pred = (s >= threshold).astype(int)
    rep = classification_report(y, scores=s, predictions=pred, threshold=threshold)
    rep.pop("accuracy", None)
    rep["predicted_positive_rate"] = float(pred.mean()) if len(pred) else float("nan")
    rep["score_std"] = float(s.std()) if len(s) else float("nan")
    if event_ids is not None:
        rep["event"] = event_metrics(y, pred, event_ids, event_types, tolerance=tolerance,
                                     step_seconds=step_seconds)
        if event_types:
            rep["per_type"] = per_type_point_metrics(y, s, pred, np.asarray(event_ids), event_types)
    rep["point_adjusted_INFLATED"] = {
        "note": "point-adjusted (a segment counts as found if any point is flagged); inflates random scores; "
                "reported for comparison with published numbers only, never used for selection",
        **_f1(y, point_adjust(y, pred)),
    }
    return rep


def per_type_point_metrics(y: np.ndarray, s: np.ndarray, pred: np.ndarray, event_ids: np.ndarray,
                           event_types: dict[int, str]) -> dict[str, dict[str, float]]:
    """Point metrics restricted to normal points plus the points of one fault type (one row per type)."""
    from sklearn import metrics as skm

    out = {}
    types = np.array([event_types.get(int(e), "") if e >= 0 else "" for e in event_ids])
    for t in sorted(set(event_types.values())):
        m = (y == 0) | (types == t)
        yy, ss, pp = y[m], s[m], pred[m]
        both = 0 < yy.sum() < len(yy)
        out[t] = {"positives": int(yy.sum()), **_f1(yy, pp),
                  "roc_auc": float(skm.roc_auc_score(yy, ss)) if both else float("nan"),
                  "pr_auc": float(skm.average_precision_score(yy, ss)) if both else float("nan")}
    return out


# ---------------------------------------------------------------------------------------------- threshold rules
THRESHOLD_RULES = "val | val-robust | contamination:Q"
# Below these, a validation-chosen threshold rests on too little to transfer (a warning says so).
MIN_VALIDATION_POINTS = 500
MIN_VALIDATION_EVENTS = 5


def parse_threshold_rule(rule: str) -> tuple[str, float | None]:
    """``val`` | ``val-robust`` | ``contamination:Q`` -> (rule, Q or None); anything else is one clear error."""
    text = str(rule).strip().lower()
    if text in ("val", "val-robust"):
        return text, None
    if text.startswith("contamination:"):
        try:
            q = float(text.split(":", 1)[1])
        except ValueError:
            q = float("nan")
        if 0 < q < 0.5:
            return "contamination", q
    raise LlmadError(f"--threshold {rule!r}: expected {THRESHOLD_RULES} (0 < Q < 0.5, e.g. contamination:0.05)")


def robust_standardise(scores: np.ndarray, lengths: Sequence[int]) -> np.ndarray:
    """Each series' scores as (score - its median) / (1.4826 * its MAD): a series whose whole score level drifts
    between parts keeps its anomalies at the same standardised height, so a validation threshold transfers."""
    s = np.asarray(scores, dtype=float)
    out = np.empty_like(s)
    start = 0
    for n in lengths:
        seg = s[start:start + n]
        med = np.median(seg) if n else 0.0
        mad = 1.4826 * np.median(np.abs(seg - med)) if n else 0.0
        scale = mad if mad > 0 else (seg.std() or 1.0)
        out[start:start + n] = (seg - med) / scale
        start += n
    return out


def contamination_threshold(scores: np.ndarray, q: float) -> float:
    """The score above which the top ``q`` share of this part's own scores lie (labels unused)."""
    return float(np.quantile(np.asarray(scores, dtype=float), 1.0 - q))


def validation_warning(labels: np.ndarray, event_ids: np.ndarray) -> str | None:
    """The ``thin-validation`` warning's text when the validation part is too short or holds too few anomalous
    events to set a threshold (None when it is fine)."""
    n = len(labels)
    events = len({int(e) for e in np.unique(event_ids) if e >= 0})
    if n >= MIN_VALIDATION_POINTS and events >= MIN_VALIDATION_EVENTS:
        return None
    return (f"the validation part has {n} points and {events} anomalous event(s) "
            f"(fewer than {MIN_VALIDATION_POINTS} / {MIN_VALIDATION_EVENTS}): a threshold chosen on it may not "
            f"transfer to test; consider --threshold contamination:Q or val-robust")


# ---------------------------------------------------------------------------------------------- VUS-PR, event F1
def _segments(labels: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of every run of 1s (inclusive ends, as TSB-AD's ``range_convers_new``)."""
    y = np.asarray(labels).astype(int)
    d = np.diff(np.concatenate([[0], y, [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), (np.flatnonzero(d == -1) - 1).tolist()))


def _merged(seq: list[tuple[int, int]], window: int, n: int) -> list[tuple[int, int]]:
    """Segments widened by ``window // 2`` on both sides, overlapping ones merged (TSB-AD's ``new_sequence``)."""
    h = window // 2
    out, a = [], max(seq[0][0] - h, 0)
    for (s0, e0), (s1, _) in zip(seq[:-1], seq[1:]):
        if e0 + h < s1 - h:
            out.append((a, e0 + h))
            a = s1 - h
    out.append((a, min(seq[-1][1] + h, n - 1)))
    return out


def vus_pr(labels: Sequence[int], scores: Sequence[float], sliding_window: int = 100, n_thresholds: int = 250
           ) -> float:
    """VUS-PR (Paparrizos et al., PVLDB'22) as TSB-AD's ``get_metrics`` computes it: range-based precision/recall
    with labels softened over a buffer, averaged over buffer widths 0..2*``sliding_window`` and 250 score-quantile
    thresholds. NaN when the labels hold no anomaly. A vectorised re-implementation (same definition)."""
    y = np.asarray(labels).astype(float)
    s = np.asarray(scores, dtype=float)
    if len(y) != len(s):
        raise ValueError(f"{len(y)} labels for {len(s)} scores")
    if y.sum() == 0 or len(y) < 2:
        return float("nan")
    n, size = len(y), 2 * int(sliding_window)
    seq = _segments(y)
    P = float(y.sum())
    ranked = -np.sort(-s)
    thr = ranked[np.linspace(0, n - 1, n_thresholds).astype(int)]
    pred = (s[None, :] >= thr[:, None]).astype(float)  # (thresholds, n)
    n_pred = pred.sum(axis=1)
    csum = np.concatenate([np.zeros((len(thr), 1)), np.cumsum(pred, axis=1)], axis=1)
    ap = np.zeros(size + 1)
    for w in range(size + 1):
        ext = y.copy()
        h = w // 2
        for a, b in seq:  # sqrt-decaying soft labels around each segment (TSB-AD's ``sequencing``)
            x1 = np.arange(b + 1, min(b + h + 1, n))
            ext[x1] += np.sqrt(1 - (x1 - b) / w)
            x2 = np.arange(max(a - h, 0), a)
            ext[x2] += np.sqrt(1 - (a - x2) / w)
        ext = np.minimum(ext, 1.0)
        L = _merged(seq, w, n)
        # inside the buffer a predicted point earns its soft label; the labelled segments count fully
        tp = pred @ ext
        n_labels = pred @ (ext * (1 - y)) + P
        existence = sum((csum[:, min(b, n - 1) + 1] - csum[:, a]) > 0 for a, b in L) / len(L)
        p_new = (P + n_labels) / 2
        tpr = np.minimum(tp / p_new, 1.0) * existence
        prec = tp / n_pred
        tpr_all = np.concatenate([[0.0], tpr])
        ap[w] = float(np.dot(tpr_all[1:] - tpr_all[:-1], prec))
    return float(ap.mean())


def event_f1(labels: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
    """Event-based F1 as TSB-AD's ``metric_EventF1PA`` at one threshold: event recall (an event is found when any
    of its points is flagged) with point precision."""
    y = np.asarray(labels).astype(int)
    p = np.asarray(predictions).astype(int)
    seq = _segments(y)
    rec = float(np.mean([p[a:b + 1].any() for a, b in seq])) if seq else float("nan")
    prec = _f1(y, p)["precision"]
    f = 2 * rec * prec / (rec + prec) if seq and rec + prec > 0 else 0.0
    return {"event_recall": rec, "point_precision": prec, "event_f1": f}
