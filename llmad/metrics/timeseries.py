"""Time-series anomaly metrics on per-point scores: point-wise P/R/F1, PR-AUC, ROC-AUC, FPR at 95% recall,
event-level recall, event F1 and detection delay, VUS-PR (TSB-AD's definition), and (clearly labelled)
point-adjusted F1.

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


def point_f1(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Point precision, recall and F1 of 0/1 predictions (0.0 where a ratio is undefined)."""
    tp = float(np.sum((p == 1) & (y == 1)))
    fp = float(np.sum((p == 1) & (y == 0)))
    fn = float(np.sum((p == 0) & (y == 1)))
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": prec, "recall": rec, "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0}


def ts_report(labels: Sequence[int], scores: Sequence[float], threshold: float,
              event_ids: np.ndarray | None = None, event_types: dict[int, str] | None = None,
              tolerance: int = 0, step_seconds: float | None = None, vus_window: int | None = 100) -> dict[str, Any]:
    """Everything for one detector on one test part: point metrics at the validation ``threshold``, AUCs,
    VUS-PR (sliding window ``vus_window``; None skips it), FPR@95% recall, event recall/F1/delay (overall and per
    type), and the labelled point-adjusted F1."""
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
    if vus_window:
        rep["vus_pr"] = vus_pr(y, s, vus_window)
        rep["vus_window"] = int(vus_window)
    if event_ids is not None:
        rep["event"] = event_metrics(y, pred, event_ids, event_types, tolerance=tolerance,
                                     step_seconds=step_seconds)
        rep["event"]["event_f1"] = event_f1(y, pred)
        if event_types:
            rep["per_type"] = per_type_point_metrics(y, s, pred, np.asarray(event_ids), event_types)
    rep["point_adjusted_INFLATED"] = {
        "note": "point-adjusted (a segment counts as found if any point is flagged); inflates random scores; "
                "reported for comparison with published numbers only, never used for selection",
        **point_f1(y, point_adjust(y, pred)),
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
        out[t] = {"positives": int(yy.sum()), **point_f1(yy, pp),
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


# ---------------------------------------------------------------------------------------------- TSB-AD metrics
def autocorrelation(values: np.ndarray, n_lags: int | None = None) -> np.ndarray:
    """Autocorrelation of a 1-D series at lags 0 .. ``n_lags`` - 1 (all by default): FFT, mean removed, normalised
    by lag 0; all zeros for a constant series."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    f = np.fft.rfft(x - x.mean(), n=2 * n)
    a = np.fft.irfft(f * np.conj(f))[:min(n_lags or n, n)]
    return a / a[0] if a[0] > 0 else np.zeros(len(a))


def find_period(values: np.ndarray, default: int = 125) -> int:
    """TSB-AD's sliding window (``find_length_rank``, rank 1): the lag of the highest local maximum of the
    autocorrelation (lags 3..400) of the first 20,000 points of a univariate series; ``default`` when none lies in
    [3, 300]."""
    x = np.asarray(values, dtype=float).reshape(-1)[:20000]
    x = x[np.isfinite(x)]
    if len(x) < 10 or x.std() == 0:
        return default
    ac = autocorrelation(x, 401)
    base = 3
    a = ac[base:]
    peaks = np.flatnonzero((a[1:-1] > a[:-2]) & (a[1:-1] > a[2:])) + 1
    if not len(peaks):
        return default
    best = int(peaks[np.argmax(a[peaks])])
    return best + base if 3 <= best <= 300 else default


def _segments(labels: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (start, end) of each run of 1s."""
    d = np.diff(np.concatenate([[0], labels.astype(int), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1))


def _merged(segs: list[tuple[int, int]], half: int, n: int) -> list[tuple[int, int]]:
    """Segments widened by ``half`` on each side (clipped), overlapping ones merged (TSB-AD's ``new_sequence``)."""
    out: list[list[int]] = []
    for s, e in segs:
        a, b = max(s - half, 0), min(e + half, n - 1)
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def vus_pr(labels: Sequence[int], scores: Sequence[float], sliding_window: int = 100, thresholds: int = 250) -> float:
    """VUS-PR as TSB-AD defines it (Paparrizos et al. VLDB'22; TSB-AD ``get_metrics``: ``generate_curve(labels,
    score, 2 * slidingWindow)``): the range-PR AUC averaged over buffer widths w = 0 .. 2*sliding_window, where each
    labelled segment gets a soft sqrt-decaying buffer of w/2 points on both sides, recall is weighted by the share of
    buffered segments hit (existence), and ``thresholds`` score quantiles trace the curve.

    Equal to TSB-AD's ``RangeAUC_volume_opt`` (re-derived in closed form: TP = flagged labelled points + buffer
    weight of flagged buffer points); NaN when there is no labelled point. Use ``find_period`` on the series for
    TSB-AD's sliding window."""
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=float)
    n, P = len(y), int(y.sum())
    if P == 0 or n == 0:
        return float("nan")
    seq = _segments(y)
    order = np.sort(s)[::-1]
    thr = order[np.linspace(0, n - 1, thresholds).astype(int)]
    n_pred = np.array([(s >= t).sum() for t in thr], dtype=float)
    pos_sorted = np.sort(s[y == 1])
    tp0 = P - np.searchsorted(pos_sorted, thr, side="left")  # labelled points with score >= t
    aps = []
    for w in range(0, 2 * sliding_window + 1):
        half = w // 2
        ramp = np.zeros(n)
        for a, b in seq:
            x1 = np.arange(b + 1, min(b + half + 1, n))
            ramp[x1] += np.sqrt(1 - (x1 - b) / w) if len(x1) else 0.0
            x2 = np.arange(max(a - half, 0), a)
            ramp[x2] += np.sqrt(1 - (a - x2) / w) if len(x2) else 0.0
        ramp = np.minimum(ramp, 1.0)
        ramp[y == 1] = 0.0
        idx = np.flatnonzero(ramp > 0)
        if len(idx):
            o = np.argsort(-s[idx])
            rs, rw = s[idx][o], np.cumsum(ramp[idx][o])
            k = np.searchsorted(-rs, -thr, side="right")  # ramp points with score >= t
            R = np.where(k > 0, rw[np.maximum(k - 1, 0)], 0.0)
        else:
            R = np.zeros(len(thr))
        L = _merged(seq, half, n)
        seg_max = np.array([s[a:b + 1].max() for a, b in L])
        existence = (seg_max[None, :] >= thr[:, None]).sum(axis=1) / len(L)
        tp = tp0 + R
        p_new = P + R / 2
        tpr = np.minimum(tp / p_new, 1.0) * existence
        prec = tp / n_pred
        aps.append(float(np.sum(np.diff(np.concatenate([[0.0], tpr])) * prec)))
    return float(np.mean(aps))


def event_recall(labels: Sequence[int], predictions: Sequence[int]) -> float:
    """Share of labelled segments with at least one flagged point (NaN when there is none)."""
    y = np.asarray(labels).astype(int)
    p = np.asarray(predictions).astype(int)
    segs = _segments(y)
    return float(np.mean([p[a:b + 1].any() for a, b in segs])) if segs else float("nan")


def event_f1(labels: Sequence[int], predictions: Sequence[int]) -> float:
    """Event-based F1 as TSB-AD reports it (the composite F1 of Garg et al.): harmonic mean of event recall (a
    labelled segment counts when any of its points is flagged) and point precision, here at a given threshold."""
    y = np.asarray(labels).astype(int)
    p = np.asarray(predictions).astype(int)
    segs = _segments(y)
    if not segs:
        return float("nan")
    rec = event_recall(y, p)
    prec = point_f1(y, p)["precision"]
    return 2 * rec * prec / (rec + prec) if rec + prec else 0.0
