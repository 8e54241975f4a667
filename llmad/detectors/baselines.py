"""Strong non-LLM references on job features: random forest, gradient boosting, isolation forest, kNN.

``features="plain"`` uses the nine LLM_AD sentence features; ``"context"`` adds the peer/host ``ctx_*`` features
(``llmad.data.context``) that a human operator would look at.
"""
from __future__ import annotations

import os
import pickle
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from llmad.config import option
from llmad.data.checks import clip_features
from llmad.data.context import CONTEXT_FEATURES, add_context_features
from llmad.data.flowbench import PAPER_FEATURES
from llmad.data.jobs import job_features, numeric_matrix
from llmad.detectors.base import Detector, read_detector_json, write_detector_json
from llmad.errors import LlmadError

METHODS = ("rf", "hgb", "iforest", "knn")
FEATURE_SETS = ("plain", "context")


@dataclass
class BaselineConfig:
    """A classical detector on job features."""

    method: str = option("rf", "rf | hgb | iforest | knn")
    features: str = option("plain", "plain (the 9 sentence features) | context (+ peer/host)")
    causal: bool = option(False, "Context from earlier-finished peers only.")
    seed: int = option(0, "Seed of the estimator (and of the split, on the CLI).")
    n_estimators: int = option(300, "Trees (rf, iforest) or boosting iterations (hgb).", cli=False)


def make_estimator(method: str, *, n_estimators: int = 300, seed: int = 0, n_jobs: int = 2, balanced: bool = False,
                   max_samples: int | str = "auto") -> Any:
    """The one place that builds the classical estimators (job baselines and window detectors alike).

    One set of defaults; ``balanced=True`` weights classes by inverse frequency (rf: ``balanced_subsample`` with
    ``min_samples_leaf=2``; hgb: ``balanced``), which the window detectors use because their few-shot label pools
    are small and imbalanced. ``n_jobs`` does not change results (sklearn draws every tree's seed up front).
    """
    if method == "rf":
        extra: dict[str, Any] = ({"class_weight": "balanced_subsample", "min_samples_leaf": 2} if balanced
                                 else {"min_samples_leaf": 1})
        # NaN marks missing stages (no transfer); sklearn's forest handles it natively.
        return RandomForestClassifier(n_estimators=n_estimators, n_jobs=n_jobs, random_state=seed, **extra)
    if method == "hgb":
        return HistGradientBoostingClassifier(max_iter=n_estimators, learning_rate=0.1, random_state=seed,
                                              early_stopping=False, class_weight="balanced" if balanced else None)
    if method == "iforest":
        return IsolationForest(n_estimators=n_estimators, random_state=seed, max_samples=max_samples, n_jobs=n_jobs)
    if method == "knn":
        return KNeighborsClassifier(n_neighbors=15, weights="distance", n_jobs=n_jobs)
    raise LlmadError(f"unknown estimator {method!r}; expected one of {', '.join(METHODS)}")


def feature_columns(features: str, base: list[str] | None = None) -> list[str]:
    """Column names of a feature set; ``base``: the table's own features (a ``jobs:`` map) instead of the nine."""
    base = list(base) if base else list(PAPER_FEATURES)
    if features == "plain":
        return base
    if features == "context":
        return base + CONTEXT_FEATURES
    raise LlmadError(f"unknown feature set {features!r}; expected plain or context")


def feature_matrix(jobs: pd.DataFrame, features: str = "plain", causal: bool = False,
                   base: list[str] | None = None) -> np.ndarray:
    """The numeric matrix of a feature set (context columns computed when missing; categories coded)."""
    cols = feature_columns(features, base)
    if features == "context" and not all(c in jobs.columns for c in CONTEXT_FEATURES):
        jobs = add_context_features(jobs, causal=causal)
    return numeric_matrix(jobs, cols)


def tree_inputs(jobs: pd.DataFrame, features: str = "plain", causal: bool = False,
                base: list[str] | None = None) -> np.ndarray:
    """``feature_matrix`` as the trees read it: finite values beyond float32 clipped, inf as missing (NaN)."""
    # sklearn casts to float32: finite values beyond its range are clipped (the loader warned huge-value).
    x = clip_features(feature_matrix(jobs, features, causal, base))
    return np.where(np.isinf(x), np.nan, x)


def fit_tree(model: Any, x: np.ndarray, y: np.ndarray, **fit_params: Any) -> Any:
    """Fit a classifier (or a pipeline ending in one) on ``tree_inputs``; hgb's binning fails on a column with no
    value at all (a jobs: table without CPU times, say), so one 0 makes such a column constant and uninformative."""
    est = model[-1] if isinstance(model, Pipeline) else model
    if est is model and isinstance(model, HistGradientBoostingClassifier) and len(x):
        x = x.copy()
        x[0, np.isnan(x).all(axis=0)] = 0.0
    # HGB opens an OpenMP region per node; with llmad's OMP_WAIT_POLICY=PASSIVE (llmad/__init__.py) each one wakes
    # sleeping threads: 2 threads fitted 5-11x slower than one on 2k-33k real rows (bench/results/tree_threads.md).
    one = isinstance(est, HistGradientBoostingClassifier) and os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
    with threadpool_limits(1, user_api="openmp") if one else nullcontext():
        return model.fit(x, y, **fit_params)


class BaselineDetector(Detector):
    """sklearn detectors behind the common contract; supervised ones use labels, iforest does not."""

    kind = "baseline"

    def __init__(self, method: str = "rf", features: str = "plain", causal: bool = False, seed: int = 0,
                 n_estimators: int = 300, columns: list[str] | None = None):
        self.method, self.features, self.causal, self.seed, self.n_estimators = (
            method, features, causal, seed, n_estimators)
        # The table's own feature columns (a jobs: map), learned at fit and saved; None: the nine Flow-Bench ones.
        self.columns = list(columns) if columns else None
        self.name = f"{method}-{features}"

    @classmethod
    def from_config(cls, cfg: BaselineConfig) -> "BaselineDetector":
        """Build from a ``BaselineConfig``."""
        return cls(**asdict(cfg))

    def _model(self):
        if self.method not in METHODS:
            raise LlmadError(f"unknown baseline method {self.method!r}; expected one of {', '.join(METHODS)}")
        est = make_estimator(self.method, n_estimators=self.n_estimators, seed=self.seed)
        if self.method in ("rf", "hgb"):
            return est
        # knn and iforest do not take NaN: missing stages become -1 (knn also standardises its inputs)
        scale = [StandardScaler()] if self.method == "knn" else []
        return make_pipeline(SimpleImputer(strategy="constant", fill_value=-1.0), *scale, est)

    def input_columns(self) -> list[str]:
        """The columns the score depends on (the replay reveals exactly these)."""
        return feature_columns(self.features, self.columns)

    def _x(self, jobs: pd.DataFrame) -> np.ndarray:
        return tree_inputs(jobs, self.features, self.causal, self.columns)

    def fit(self, train: pd.DataFrame, validation: pd.DataFrame | None = None) -> "BaselineDetector":
        """Fit on train (labels unused by iforest); threshold on validation."""
        self.model_ = self._model()
        if self.columns is None and train.attrs.get("features"):
            self.columns = job_features(train)
        x = self._x(train)
        if self.method == "iforest":
            self.model_.fit(x)
        else:
            y = train["label"].to_numpy()
            if len(np.unique(y)) < 2:
                raise LlmadError(f"{self.method} needs both classes in train; got only label {y[0]}")
            fit_tree(self.model_, x, y)
        if validation is not None and len(validation):
            self.set_threshold(self.score(validation), validation["label"].to_numpy())
        else:
            self.threshold_ = 0.5
        return self

    def score(self, items: pd.DataFrame) -> np.ndarray:
        """Probability of anomaly (supervised) or negated isolation-forest score."""
        x = self._x(items)
        if self.method == "iforest":
            return -self.model_.score_samples(x)
        return self.model_.predict_proba(x)[:, 1]

    def save(self, path: str | Path) -> None:
        """Pickle the sklearn model (our own object, trusted) plus detector.json with the config and threshold."""
        from llmad.io import atomic_path

        p = Path(path)
        with atomic_path(p / "model.pkl") as tmp, open(tmp, "wb") as fh:
            pickle.dump(self.model_, fh)
        write_detector_json(p, self.kind, {**self.get_params(), "threshold": self.threshold_})

    @classmethod
    def load(cls, path: str | Path) -> "BaselineDetector":
        """Load a saved baseline."""
        p = Path(path)
        meta = read_detector_json(p)
        thr = meta.pop("threshold")
        meta.pop("kind", None)
        meta.pop("name", None)  # written by versions before get_params left the derived name out
        det = cls(**meta)
        with open(p / "model.pkl", "rb") as fh:
            det.model_ = pickle.load(fh)
        det.threshold_ = thr
        return det
