"""Demonstrations for ICL prompts: which train rows (random | balanced | negative | positive | nearest), in which
order, the per-class feature statistics, and the nearest-neighbour pool (log1p features, standardised on train)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from llmad.errors import LlmadError


def select_demonstrations(train: pd.DataFrame, k: int, how: str, seed: int = 0) -> pd.DataFrame:
    """K train rows for a fixed prompt: random | balanced (half each class) | negative | positive."""
    rng = np.random.default_rng(seed)
    if k == 0 or len(train) == 0:
        return train.iloc[:0]
    normal = np.flatnonzero(train["label"].to_numpy() == 0)
    abnormal = np.flatnonzero(train["label"].to_numpy() == 1)

    def take(idx: np.ndarray, n: int, what: str) -> np.ndarray:
        if n > len(idx):
            raise LlmadError(f"--select {how}: {n} {what} demonstrations requested, the train part has {len(idx)}")
        return rng.choice(idx, size=n, replace=False)

    if how == "random":
        chosen = take(np.arange(len(train)), k, "")
    elif how == "negative":
        chosen = take(normal, k, "normal")
    elif how == "positive":
        chosen = take(abnormal, k, "abnormal")
    elif how == "balanced":
        n_ab = k // 2
        # Normal first so that the fixed order alternates classes from a predictable start.
        chosen = np.concatenate([take(normal, k - n_ab, "normal"), take(abnormal, n_ab, "abnormal")])
        if n_ab:
            inter = np.empty(k, dtype=int)
            nn = chosen[:k - n_ab]
            aa = chosen[k - n_ab:]
            inter[0:2 * n_ab:2] = nn[:n_ab]
            inter[1:2 * n_ab:2] = aa
            inter[2 * n_ab:] = nn[n_ab:]
            chosen = inter
    else:
        raise LlmadError(f"unknown selection {how!r}")
    return train.iloc[chosen]


def order_demonstrations(demos: pd.DataFrame, order: str, seed: int = 0) -> pd.DataFrame:
    """Shuffle the demonstrations (seeded) or keep the selection order."""
    if order == "shuffled" and len(demos) > 1:
        return demos.iloc[np.random.default_rng(seed + 1).permutation(len(demos))]
    return demos


def feature_matrix(jobs: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    """log1p of the numeric features, missing as -1 (the nearest-neighbour space)."""
    cols = [pd.to_numeric(jobs[f], errors="coerce") if f in jobs else pd.Series(np.nan, index=jobs.index)
            for f in features]
    x = np.column_stack([c.to_numpy(dtype=float) for c in cols]) if cols else np.zeros((len(jobs), 0))
    x = np.sign(x) * np.log1p(np.abs(x))
    return np.where(np.isfinite(x), x, -1.0)


def class_statistics(train: pd.DataFrame, features: Sequence[str], label_words: Sequence[str]) -> list[dict]:
    """Per-class count, mean and std of each feature on the train part (for the stats prompt)."""
    out = []
    for cls, word in ((0, label_words[0]), (1, label_words[1])):
        part = train[train["label"] == cls]
        feats = []
        for f in features:
            v = pd.to_numeric(part[f], errors="coerce") if f in part else pd.Series(dtype=float)
            feats.append({"name": f, "mean": float(v.mean()) if v.notna().any() else float("nan"),
                          "std": float(v.std()) if v.notna().sum() > 1 else float("nan")})
        out.append({"label": word, "count": int(len(part)), "features": feats})
    return out


def typical_values(train: pd.DataFrame, features: Sequence[str]) -> dict[str, float]:
    """Median of each feature over the normal train rows (all rows when none is normal): what "usual" means in the
    demonstrations' chain-of-thought rationales."""
    part = train[train["label"] == 0] if (train["label"] == 0).any() else train
    out = {}
    for f in features:
        v = pd.to_numeric(part[f], errors="coerce") if f in part else pd.Series(dtype=float)
        out[f] = float(v.median()) if v.notna().any() else float("nan")
    return out


def demo_reasons(jobs: pd.DataFrame, features: Sequence[str], typical: dict[str, float], top: int = 2) -> list[str]:
    """Per job, a one-line rationale from its data only (not its label): its ``top`` features furthest above the
    normal median, as ``runtime 1.52k is 9.9x the normal median 153``.

    Why: with demonstrations that end in a bare ``Answer:``, a 135M model answers CoT prompts with free text that
    never reaches an answer line; demonstrations written as ``Reasoning: ... Answer: <label>`` show it the format
    (few-shot chain-of-thought, Wei et al. 2022), and the facts stated are the comparison the task text asks for."""
    from llmad.render import compact_num

    cols = [f for f in features if f in jobs and np.isfinite(typical.get(f, np.nan)) and typical[f] > 0]
    if not cols:
        return ["no value can be compared with normal jobs."] * len(jobs)
    vals = np.column_stack([pd.to_numeric(jobs[f], errors="coerce").to_numpy(dtype=float) for f in cols])
    ratio = vals / np.array([typical[f] for f in cols])
    # Stable descending order with missing values last (the pool may hold every train row: no per-row pandas).
    order = np.argsort(-np.where(np.isfinite(ratio), ratio, -np.inf), axis=1, kind="stable")[:, :top]
    out = []
    for i, idx in enumerate(order):
        parts = [f"{cols[j]} {compact_num(vals[i, j])} is {ratio[i, j]:.1f}x the normal median "
                 f"{compact_num(typical[cols[j]])}" for j in idx if np.isfinite(ratio[i, j])]
        out.append(("; ".join(parts) + ".") if parts else "no value can be compared with normal jobs.")
    return out


def nearest_pool(train: pd.DataFrame, features: Sequence[str], texts: list[str],
                 reasons: list[str] | None = None) -> dict[str, Any]:
    """The ``select=nearest`` pool: standardised train features, their mean/std, rendered texts and labels (and
    chain-of-thought rationales in cot mode)."""
    x = feature_matrix(train, features)
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-6
    pool = {"x": (x - mu) / sd, "mu": mu, "sd": sd, "texts": texts, "labels": train["label"].to_numpy().astype(int)}
    if reasons is not None:
        pool["reasons"] = reasons
    return pool


def nearest_demos(pool: dict[str, Any], jobs: pd.DataFrame, features: Sequence[str], k: int, order: str, seed: int,
                  exclude_self: bool = False) -> list[list[tuple]]:
    """Per job, its ``k`` nearest pool rows as (text, label) demonstrations, (text, label, rationale) when the pool
    has rationales (``exclude_self``: skip the closest)."""
    from sklearn.neighbors import NearestNeighbors

    x = (feature_matrix(jobs, features) - pool["mu"]) / pool["sd"]
    n = min(len(pool["x"]), k + int(exclude_self))
    if n == 0:
        return [[] for _ in range(len(jobs))]
    nn = NearestNeighbors(n_neighbors=n).fit(pool["x"])
    _, idx = nn.kneighbors(x)
    out = []
    rng = np.random.default_rng(seed + 2)
    for row in idx:
        row = list(row[1:] if exclude_self else row)[:k]
        # Nearest last, right before the query (KATE's finding); shuffled mixes them.
        row = row[::-1] if order == "fixed" else list(rng.permutation(row))
        reasons = pool.get("reasons")
        out.append([(pool["texts"][j], int(pool["labels"][j])) + ((reasons[j],) if reasons else ())
                    for j in row])
    return out
