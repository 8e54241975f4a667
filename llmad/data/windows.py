"""From series to model inputs and back: z-score fitted on train, forward fill, sliding windows, PatchTST-style
patches, and window/step scores mapped back to one score per point.

Choices:
- Missing values (NaN, inf): forward fill within a series, then back fill a leading gap. A feature missing on
  every train row of a group is a ``DataError`` (no statistic to normalise with). A feature missing on a whole
  test series is filled with the train mean (z = 0) and counted in ``WindowSet.info["all_missing"]``.
- The z-score is per feature and per group (service / machine), fitted on the train part only; a constant
  feature gets std 1 (values become 0, not inf); a group never seen in train uses statistics pooled over all
  train groups (counted in ``info["unseen_groups"]``).
- The last window of a series always ends on its last point, so every point is covered by at least one window.
  A series shorter than one window is dropped and named in ``info["dropped"]``; when every series of a part is
  too short, ``make_windows`` raises ``DataError``.
- Step scores of overlapping windows are averaged per point (``how="mean"``) or maxed (``how="max"``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from llmad.data.timeseries import Series
from llmad.errors import DataError


def ffill(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward fill then back fill NaN per column; returns (filled, columns that were entirely NaN)."""
    df = pd.DataFrame(np.asarray(values, dtype=np.float32))
    all_nan = df.isna().all(axis=0).to_numpy()
    out = df.ffill().bfill().to_numpy(dtype=np.float32)
    return out, all_nan


@dataclass
class ZScore:
    """Per-feature mean/std per group, fitted on train series only."""

    stats_: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    pooled_: tuple[np.ndarray, np.ndarray] | None = None

    def fit(self, train: Sequence[Series]) -> "ZScore":
        """Fit mean/std per ``meta['group']`` (the series name when absent) and pooled over all."""
        if not train:
            raise DataError("no train series to fit the normalisation on")
        by: dict[str, list[np.ndarray]] = {}
        for s in train:
            v = np.asarray(s.values, dtype=np.float64)
            v = np.where(np.isfinite(v), v, np.nan)
            by.setdefault(_group(s), []).append(v)
        allv = []
        for g, vs in by.items():
            v = np.concatenate(vs)
            miss = np.isnan(v).all(axis=0)
            if miss.any():
                feats = [train[0].features[i] for i in np.flatnonzero(miss)[:5]]
                raise DataError(f"group {g!r}: feature(s) {feats} have no finite value in the train part")
            self.stats_[g] = _moments(v)
            allv.append(v)
        self.pooled_ = _moments(np.concatenate(allv))
        return self

    def transform(self, s: Series, info: dict[str, Any] | None = None) -> np.ndarray:
        """Normalised, gap-filled values of ``s`` as float32 (T, F)."""
        if self.pooled_ is None:
            raise RuntimeError("ZScore.transform before fit")
        g = _group(s)
        mu, sd = self.stats_.get(g, self.pooled_)
        if g not in self.stats_ and info is not None:
            info.setdefault("unseen_groups", set()).add(g)
        if len(mu) != s.values.shape[1]:
            raise DataError(f"series {s.name!r} has {s.values.shape[1]} features, the train part had {len(mu)}")
        v = np.asarray(s.values, dtype=np.float64)
        v = np.where(np.isfinite(v), v, np.nan)
        filled, all_nan = ffill(v)
        if all_nan.any():
            filled[:, all_nan] = mu[all_nan]
            if info is not None:
                info["all_missing"] = info.get("all_missing", 0) + int(all_nan.sum())
        return ((filled - mu) / sd).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able statistics (saved beside a detector)."""
        return {"groups": {g: [m.tolist(), s.tolist()] for g, (m, s) in self.stats_.items()},
                "pooled": [self.pooled_[0].tolist(), self.pooled_[1].tolist()] if self.pooled_ else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ZScore":
        """Inverse of ``to_dict``."""
        z = cls()
        z.stats_ = {g: (np.asarray(m), np.asarray(s)) for g, (m, s) in d["groups"].items()}
        z.pooled_ = (np.asarray(d["pooled"][0]), np.asarray(d["pooled"][1])) if d.get("pooled") else None
        return z


def _group(s: Series) -> str:
    return str(s.meta.get("group", s.name))


def _moments(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = np.nanmean(v, axis=0)
    sd = np.nanstd(v, axis=0)
    sd = np.where(sd < 1e-8, 1.0, sd)  # constant feature: keep 0 instead of dividing by zero
    return mu, sd


@dataclass
class WindowSet:
    """Sliding windows over normalised series; ``index`` rows are (series number, start)."""

    arrays: list[np.ndarray]  # normalised (T_i, F) per series
    labels: list[np.ndarray]  # 0/1 per point
    event_ids: list[np.ndarray]
    event_types: list[dict[int, str]]
    names: list[str]
    index: np.ndarray  # (N, 2) int
    length: int
    labeled: list[bool]
    features: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def n_features(self) -> int:
        """Number of channels per window."""
        return self.arrays[0].shape[1] if self.arrays else 0

    def windows(self, rows: np.ndarray | None = None) -> np.ndarray:
        """(N, L, F) float32 windows (materialised on demand; pass ``rows`` for a batch)."""
        idx = self.index if rows is None else self.index[rows]
        L = self.length
        if len(idx) == 0:
            return np.zeros((0, L, self.n_features), np.float32)
        return np.stack([self.arrays[i][s:s + L] for i, s in idx]).astype(np.float32)

    def windows_with_history(self, history: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(N, history+L, F) windows with up to ``history`` earlier points, and an observed mask (N, history+L);
        points before the series start are 0 and marked unobserved (forecasters need past context)."""
        idx = self.index if rows is None else self.index[rows]
        L, F = self.length, self.n_features
        x = np.zeros((len(idx), history + L, F), np.float32)
        m = np.zeros((len(idx), history + L), np.float32)
        for j, (i, s) in enumerate(idx):
            a = max(0, s - history)
            seg = self.arrays[i][a:s + L]
            x[j, history + L - len(seg):] = seg
            m[j, history + L - len(seg):] = 1
        return x, m

    def window_labels(self, rows: np.ndarray | None = None) -> np.ndarray:
        """1 when any point in the window is anomalous."""
        idx = self.index if rows is None else self.index[rows]
        return np.array([int(self.labels[i][s:s + self.length].max()) for i, s in idx], dtype=np.int64)

    def step_labels(self) -> np.ndarray:
        """(N, L) point labels inside each window."""
        return np.stack([self.labels[i][s:s + self.length] for i, s in self.index]) if len(self) else \
            np.zeros((0, self.length), np.int64)

    def subset(self, rows: np.ndarray) -> "WindowSet":
        """A WindowSet over the same series with only ``rows`` of the index."""
        return WindowSet(self.arrays, self.labels, self.event_ids, self.event_types, self.names,
                         self.index[np.asarray(rows, dtype=np.int64)], self.length, self.labeled, self.features,
                         dict(self.info))

    def all_labeled(self) -> bool:
        """True when every series carries real labels (not the unlabeled SMD/ASD train parts)."""
        return all(self.labeled)

    def point_labels(self) -> np.ndarray:
        """All point labels of the (kept) series, concatenated in series order."""
        return np.concatenate(self.labels) if self.labels else np.zeros(0, np.int64)

    def point_events(self) -> tuple[np.ndarray, dict[int, str]]:
        """Concatenated event ids made unique across series, and their types."""
        out, types, off = [], {}, 0
        for ev, ty in zip(self.event_ids, self.event_types):
            e = ev.copy()
            pos = e >= 0
            e[pos] += off
            types.update({int(k) + off: v for k, v in ty.items()})
            off += int(ev.max()) + 1 if pos.any() else 0
            out.append(e)
        return (np.concatenate(out) if out else np.zeros(0, np.int64)), types

    def points_from_steps(self, step_scores: np.ndarray, how: str = "mean") -> np.ndarray:
        """Per-point scores (concatenated over series) from (N, L) step scores of overlapping windows."""
        step_scores = np.asarray(step_scores, dtype=np.float64)
        if step_scores.shape != (len(self), self.length):
            raise ValueError(f"step scores of shape {step_scores.shape}, expected {(len(self), self.length)}")
        outs = []
        for i, a in enumerate(self.arrays):
            rows = np.flatnonzero(self.index[:, 0] == i)
            acc = np.full(len(a), -np.inf if how == "max" else 0.0)
            cnt = np.zeros(len(a))
            for r in rows:
                s = self.index[r, 1]
                if how == "max":
                    acc[s:s + self.length] = np.maximum(acc[s:s + self.length], step_scores[r])
                else:
                    acc[s:s + self.length] += step_scores[r]
                cnt[s:s + self.length] += 1
            if (cnt == 0).any():
                raise RuntimeError(f"series {self.names[i]!r}: points without any window (windowing bug)")
            outs.append(acc if how == "max" else acc / cnt)
        return np.concatenate(outs) if outs else np.zeros(0)

    def points_from_windows(self, window_scores: np.ndarray, how: str = "mean") -> np.ndarray:
        """Per-point scores from one score per window (broadcast over the window's points)."""
        w = np.asarray(window_scores, dtype=np.float64).reshape(-1, 1)
        return self.points_from_steps(np.repeat(w, self.length, axis=1), how=how)


def window_starts(n: int, length: int, stride: int) -> np.ndarray:
    """Starts of windows of ``length`` every ``stride`` points, the last one ending exactly at ``n``."""
    if n < length:
        return np.zeros(0, dtype=np.int64)
    starts = np.arange(0, n - length + 1, max(1, stride), dtype=np.int64)
    if starts[-1] != n - length:
        starts = np.append(starts, n - length)
    return starts


def make_windows(series: Sequence[Series], scaler: ZScore, length: int = 256, stride: int | None = None,
                 part: str = "data") -> WindowSet:
    """Normalise each series with ``scaler`` and cut sliding windows (stride defaults to length // 4)."""
    if length < 2:
        raise DataError(f"window length must be >= 2, got {length}")
    stride = stride or max(1, length // 4)
    info: dict[str, Any] = {"dropped": [], "length": length, "stride": stride}
    arrays, labels, evs, tys, names, idx, labeled = [], [], [], [], [], [], []
    for s in series:
        if len(s) < length:
            info["dropped"].append(f"{s.name} ({len(s)} < {length} points)")
            continue
        k = len(arrays)
        arrays.append(scaler.transform(s, info))
        labels.append(s.labels.astype(np.int64))
        evs.append(s.event_ids)
        tys.append(dict(s.event_types))
        names.append(s.name)
        labeled.append(bool(s.labeled))
        for st in window_starts(len(s), length, stride):
            idx.append((k, int(st)))
    if not arrays:
        lens = sorted(len(s) for s in series)
        raise DataError(f"{part}: every series is shorter than one window of {length} points "
                        f"(lengths {lens[:5]}{'...' if len(lens) > 5 else ''}); use a shorter --window")
    if "unseen_groups" in info:
        info["unseen_groups"] = sorted(info["unseen_groups"])
    return WindowSet(arrays, labels, evs, tys, names, np.asarray(idx, dtype=np.int64).reshape(-1, 2), length,
                     labeled, list(series[0].features), info)


def patchify(windows: np.ndarray, patch_len: int, stride: int | None = None) -> np.ndarray:
    """PatchTST-style patches: (N, L, F) -> (N, F, n_patches, patch_len), channel-independent."""
    stride = stride or patch_len
    x = np.asarray(windows)
    if x.shape[1] < patch_len:
        raise DataError(f"window of {x.shape[1]} points is shorter than one patch of {patch_len}")
    n = (x.shape[1] - patch_len) // stride + 1
    xt = np.transpose(x, (0, 2, 1))
    return np.stack([xt[:, :, i * stride:i * stride + patch_len] for i in range(n)], axis=2)


def window_features(windows: np.ndarray) -> np.ndarray:
    """Summary features per channel (mean, std, min, max, last, last - mean, slope) for tree models."""
    x = np.asarray(windows, dtype=np.float64)
    L = x.shape[1]
    t = np.arange(L) - (L - 1) / 2
    slope = np.einsum("nlf,l->nf", x - x.mean(axis=1, keepdims=True), t) / max((t ** 2).sum(), 1e-9)
    feats = [x.mean(1), x.std(1), x.min(1), x.max(1), x[:, -1], x[:, -1] - x.mean(1), slope]
    return np.concatenate(feats, axis=1).astype(np.float32)
