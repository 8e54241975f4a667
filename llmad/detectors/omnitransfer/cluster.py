"""OmniTransfer's entity clustering (W-HAC), pure numpy/scipy: baseline extraction, periodicity weights, phase
alignment, hierarchical agglomerative clustering on per-metric distance ranks, and matching a new entity to the
nearest cluster centroid.

Steps for one entity segment (T, F), per metric:
1. baseline: drop the 5% points that deviate most from a centred moving median, interpolate them, smooth with a
   moving average, z-normalise (shape, not scale, is compared);
2. period P from the baseline's autocorrelation (first peak above ``acf_min``; none: P = segment length) and the
   periodicity weight PW = P ** -alpha (strongly periodic, short-period metrics weigh more);
3. pairwise distance of two entities on a metric: the RMS difference after shifting one baseline by the lag
   (|lag| <= half the shorter period) that maximises their cross-correlation (phase alignment);
4. W-HAC: each metric's pairwise distances become ranks in (0, 1] (metrics with large raw distances do not drown
   the others), the ranks are averaged with the pair's mean PW per metric, and average-linkage HAC cuts the tree
   into ``n_clusters`` (or at ``distance_threshold``). A cluster's centroid is its medoid entity.

Where llmad differs from the paper: one segment per entity (its first ``segment`` train points) rather than many
daily segments; the centroid is a medoid (an entity), so "segments near the centroid" are the members nearest it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from llmad.errors import LlmadError
from llmad.metrics.timeseries import autocorrelation


def moving_average(x: np.ndarray, k: int) -> np.ndarray:
    """Centred moving average along axis 0 with edge padding (same length)."""
    k = max(1, int(k))
    if k == 1:
        return x.astype(float)
    pad = np.pad(x.astype(float), [(k // 2, k - 1 - k // 2)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    c = np.cumsum(np.concatenate([np.zeros((1, *x.shape[1:])), pad]), axis=0)
    return (c[k:] - c[:-k]) / k


def extract_baseline(x: np.ndarray, drop: float = 0.05, smooth: int = 5) -> np.ndarray:
    """(T, F) -> (T, F) baselines: the ``drop`` share of most deviating points per metric removed and interpolated,
    then a moving average of ``smooth`` points, then z-normalised (constant metrics become zeros)."""
    from scipy.ndimage import median_filter

    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or len(x) < 4:
        raise LlmadError(f"a segment needs shape (T >= 4, F), got {x.shape}")
    x = np.where(np.isfinite(x), x, np.nan)
    t = np.arange(len(x))
    out = np.empty_like(x)
    for j in range(x.shape[1]):
        v = x[:, j].copy()
        ok = ~np.isnan(v)
        if ok.sum() < 2:
            out[:, j] = 0.0
            continue
        v = np.interp(t, t[ok], v[ok])
        # deviation from a moving median: a spike does not drag its neighbours' reference along
        dev = np.abs(v - median_filter(v, size=max(3, 2 * smooth + 1), mode="nearest"))
        n_drop = int(np.floor(drop * len(v)))
        if n_drop:
            bad = np.argsort(dev, kind="stable")[-n_drop:]
            keep = np.ones(len(v), bool)
            keep[bad] = False
            v = np.interp(t, t[keep], v[keep])
        out[:, j] = moving_average(v[:, None], smooth)[:, 0]
    sd = out.std(axis=0)
    return (out - out.mean(axis=0)) / np.where(sd > 1e-12, sd, 1.0)


def detect_period(v: np.ndarray, min_lag: int = 3, acf_min: float = 0.3) -> int:
    """The period of a 1-D baseline: the lag of the highest local ACF peak above ``acf_min`` (lags ``min_lag`` to
    half the length); no such peak: the series length (aperiodic)."""
    v = np.asarray(v, dtype=float)
    n = len(v)
    a = autocorrelation(v)
    hi = n // 2
    if hi <= min_lag + 1:
        return n
    lags = np.arange(min_lag, hi)
    peak = (a[lags] > a[lags - 1]) & (a[lags] >= a[lags + 1]) & (a[lags] > acf_min)
    if not peak.any():
        return n
    cand = lags[peak]
    return int(cand[np.argmax(a[cand])])


def periodicity_weights(baseline: np.ndarray, alpha: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(periods (F,), PW = P ** -alpha (F,)) of a (T, F) baseline."""
    periods = np.array([detect_period(baseline[:, j]) for j in range(baseline.shape[1])])
    return periods, periods.astype(float) ** -float(alpha)


def aligned_distance(a: np.ndarray, b: np.ndarray, max_lag: int) -> float:
    """RMS difference of two 1-D baselines after shifting ``b`` by the lag in [-max_lag, max_lag] that maximises
    their cross-correlation (phase alignment); compared on the overlap."""
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    max_lag = int(min(max(0, max_lag), n // 2))
    if max_lag:
        m = 1 << int(np.ceil(np.log2(2 * n)))
        xc = np.fft.irfft(np.fft.rfft(a, m) * np.conj(np.fft.rfft(b, m)), m)
        lags = np.arange(-max_lag, max_lag + 1)
        lag = int(lags[np.argmax(xc[lags % m])])
    else:
        lag = 0
    if lag > 0:
        d = a[lag:] - b[:n - lag]
    elif lag < 0:
        d = a[:n + lag] - b[-lag:]
    else:
        d = a - b
    return float(np.sqrt(np.mean(d ** 2)))


@dataclass
class Profile:
    """One entity segment reduced for clustering: baselines (T, F), periods and PW per metric."""

    name: str
    baseline: np.ndarray
    periods: np.ndarray
    weights: np.ndarray


def profile(name: str, segment: np.ndarray, alpha: float = 0.5, drop: float = 0.05, smooth: int = 5) -> Profile:
    """Baseline + periodicity of one entity segment (T, F)."""
    b = extract_baseline(segment, drop=drop, smooth=smooth)
    p, w = periodicity_weights(b, alpha)
    return Profile(name, b, p, w)


def metric_distances(a: Profile, b: Profile) -> np.ndarray:
    """Phase-aligned distance per metric (F,) between two profiles."""
    if a.baseline.shape[1] != b.baseline.shape[1]:
        raise LlmadError(f"entities {a.name!r} and {b.name!r} have {a.baseline.shape[1]} and "
                         f"{b.baseline.shape[1]} metrics: OmniTransfer needs the same metrics on every entity")
    lags = np.minimum(a.periods, b.periods) // 2
    return np.array([aligned_distance(a.baseline[:, j], b.baseline[:, j], int(lags[j]))
                     for j in range(a.baseline.shape[1])])


@dataclass
class Clustering:
    """W-HAC result: cluster id per offline entity, medoid per cluster, and what matching a new entity needs."""

    names: list[str]
    labels: np.ndarray  # (n,) cluster ids 0..k-1
    medoids: list[int]  # entity index of each cluster's centroid
    distance: np.ndarray  # (n, n) combined rank distance
    raw: np.ndarray  # (F, n, n) per-metric aligned distances (reference distributions for ranks)
    profiles: list[Profile] = field(repr=False, default_factory=list)

    @property
    def n_clusters(self) -> int:
        """Number of clusters."""
        return len(self.medoids)

    def members(self, c: int) -> list[int]:
        """Entity indices of cluster ``c``, nearest its medoid first."""
        idx = np.flatnonzero(self.labels == c)
        return [int(i) for i in idx[np.argsort(self.distance[self.medoids[c], idx], kind="stable")]]

    def _rank(self, d: np.ndarray) -> np.ndarray:
        """Per metric: the share of offline pairwise distances at or below ``d`` (F,)."""
        iu = np.triu_indices(len(self.names), 1)
        out = np.empty(len(d))
        for j in range(len(d)):
            ref = np.sort(self.raw[j][iu])
            out[j] = (np.searchsorted(ref, d[j], side="right") + 1) / (len(ref) + 1)
        return out

    def match(self, new: Profile) -> tuple[int, np.ndarray]:
        """(nearest cluster, combined rank distance to every centroid) of a new entity's profile."""
        dist = np.empty(self.n_clusters)
        for c, m in enumerate(self.medoids):
            med = self.profiles[m]
            r = self._rank(metric_distances(new, med))
            w = (new.weights + med.weights) / 2
            dist[c] = float(np.dot(w, r) / w.sum())
        return int(np.argmin(dist)), dist


def whac(profiles: Sequence[Profile], n_clusters: int | None = 2, distance_threshold: float | None = None
         ) -> Clustering:
    """W-HAC over entity profiles: rank-normalised, PW-weighted distances, average linkage, medoid centroids."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform
    from scipy.stats import rankdata

    n = len(profiles)
    if n < 1:
        raise LlmadError("clustering needs at least one offline entity")
    if (n_clusters is None) == (distance_threshold is None):
        raise LlmadError("give exactly one of n_clusters or distance_threshold")
    if n_clusters is not None and n_clusters < 1:
        raise LlmadError(f"n_clusters must be >= 1, got {n_clusters}")
    F = profiles[0].baseline.shape[1]
    raw = np.zeros((F, n, n))
    for i in range(n):
        for j in range(i + 1, n):
            raw[:, i, j] = raw[:, j, i] = metric_distances(profiles[i], profiles[j])
    D = np.zeros((n, n))
    if n > 1:
        iu = np.triu_indices(n, 1)
        W = np.stack([(profiles[i].weights + profiles[j].weights) / 2 for i, j in zip(*iu)], axis=1)  # (F, pairs)
        R = np.stack([rankdata(raw[f][iu]) / len(iu[0]) for f in range(F)])  # (F, pairs)
        D[iu] = (W * R).sum(axis=0) / W.sum(axis=0)
        D = D + D.T
        Z = linkage(squareform(D, checks=False), method="average")
        if n_clusters is not None:
            labels = fcluster(Z, t=min(n_clusters, n), criterion="maxclust")
        else:
            labels = fcluster(Z, t=float(distance_threshold), criterion="distance")
    else:
        labels = np.ones(1, int)
    _, labels = np.unique(labels, return_inverse=True)
    medoids = []
    for c in range(labels.max() + 1):
        idx = np.flatnonzero(labels == c)
        medoids.append(int(idx[np.argmin(D[np.ix_(idx, idx)].sum(axis=1))]))
    return Clustering([p.name for p in profiles], labels, medoids, D, raw, list(profiles))
