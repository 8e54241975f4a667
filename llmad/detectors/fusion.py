"""Fusion of the language model and the numbers, stacked (``llmad sft --fusion stack``): a gradient-boosted tree
over [the job's numeric features, its peer-context features (``ctx_*``), the fine-tuned LM's score].

Why stacked and cross-fitted: a tree fed the LM's score on rows the LM trained on would learn to trust an
over-confident score. So every train row's LM score comes from an LM that never saw that row: the train runs are
cut into K folds by run (``GroupKFold``; jobs of one run share peers, so a fold never splits a run), an LM is
fine-tuned on K-1 folds and scores the held-out one. Validation and test rows are scored by one more LM trained on
all train rows (what the saved detector keeps). The threshold is chosen on validation, as for every detector.

Saved as ``detector.json`` (kind ``fusion-stack``) + ``lm/`` (a saved SFT detector) + ``tree.pkl``.
"""
from __future__ import annotations

import pickle
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from llmad.detectors.base import Detector, read_detector_json, write_detector_json
from llmad.detectors.baselines import feature_columns, feature_matrix
from llmad.detectors.sft.config import SFTConfig
from llmad.errors import LlmadError

FUSION_KINDS = ("none", "stack")


class StackDetector(Detector):
    """A HistGradientBoosting tree over [numeric + peer-context features, cross-fitted LM score]."""

    kind = "fusion-stack"
    name = "fusion-stack"

    def __init__(self, sft: SFTConfig | None = None, folds: int = 3, seed: int = 0, max_iter: int = 200):
        self.sft = sft if sft is not None else SFTConfig()
        self.folds, self.seed, self.max_iter = folds, seed, max_iter
        self.name = f"stack-{Path(str(self.sft.model)).name}-{Path(self.sft.template).stem}"

    # ------------------------------------------------------------------ inputs
    def _features(self, items: pd.DataFrame) -> np.ndarray:
        return feature_matrix(items, "context", causal=self.sft.causal, base=getattr(self, "features_", None))

    def _x(self, items: pd.DataFrame, lm_scores: np.ndarray) -> np.ndarray:
        return np.column_stack([self._features(items), np.asarray(lm_scores, dtype=float)])

    def input_columns(self) -> list[str]:
        """Columns the score depends on (the tree's features and the LM template's), for replays and predict."""
        cols = feature_columns("context", getattr(self, "features_", None)) + ["transformation"]
        lm = getattr(self, "lm_", None)
        lm_cols = lm.input_columns() if lm is not None else None
        return list(dict.fromkeys(cols + list(lm_cols or [])))

    # ------------------------------------------------------------------ training
    def fit(self, train: pd.DataFrame, validation: pd.DataFrame | None = None, *,
            output_dir: str | Path | None = None, resume: bool = False,
            printer: Callable[[str], None] = print) -> "StackDetector":
        """Cross-fit the LM by run (K folds), fit the tree on [features, out-of-fold LM score], then the LM on all
        of train; threshold on validation. Checkpoints of each LM under ``output_dir/fold<i>`` and ``/full``."""
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.model_selection import GroupKFold

        from llmad.detectors.sft.detector import SFTDetector
        from llmad.detectors.sft.training import validation_rows

        cfg = self.sft
        groups = train["run_id"].astype(str).to_numpy() if "run_id" in train.columns else np.arange(len(train))
        k = min(int(self.folds), len(np.unique(groups)))
        if k < 2:
            raise LlmadError(f"fusion stack: cross-fitting needs at least 2 train runs (folds {self.folds}); "
                             f"the train part has {len(np.unique(groups))}")
        out = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="llmad-stack-"))
        self.features_ = train.attrs.get("features")
        y = train["label"].to_numpy().astype(int)
        oof = np.full(len(train), np.nan)
        self.folds_ = []
        for i, (fit_idx, held_idx) in enumerate(GroupKFold(n_splits=k).split(train, y, groups)):
            printer(f"fusion stack: LM fold {i + 1}/{k}: trains on {len(fit_idx)} rows, scores {len(held_idx)} "
                    f"held-out rows of {len(np.unique(groups[held_idx]))} runs")
            lm = SFTDetector(cfg).fit(train.iloc[fit_idx].reset_index(drop=True), validation,
                                      output_dir=out / f"fold{i}", resume=resume, printer=printer)
            self._check_not_paused(lm)
            oof[held_idx] = lm.score(train.iloc[held_idx].reset_index(drop=True))
            self.folds_.append({"fold": i, "train_rows": int(len(fit_idx)), "held_out_rows": int(len(held_idx)),
                                "train_s": lm.train_info_.get("train_s")})
        printer(f"fusion stack: LM on all {len(train)} train rows (scores validation and test)")
        self.lm_ = SFTDetector(cfg).fit(train, validation, output_dir=out / "full", resume=resume, printer=printer)
        self._check_not_paused(self.lm_)
        self.tree_ = HistGradientBoostingClassifier(max_iter=self.max_iter, random_state=self.seed)
        self.tree_.fit(self._x(train, oof), y)
        if output_dir is None:
            shutil.rmtree(out, ignore_errors=True)
        self.train_info_ = {"folds": self.folds_, "cross_fit_auc": _auc(y, oof), "lm": self.lm_.train_info_}
        val = validation_rows(validation, cfg)
        if val is None or not len(val) or cfg.threshold_objective == "argmax":
            self.threshold_ = 0.5
            return self
        lm_val = getattr(self.lm_, "validation_scores_", None)  # validation scored once: the LM's own evaluation
        if lm_val is None or len(lm_val) != len(val):
            lm_val = self.lm_.score(val)
        self.validation_scores_ = self.tree_.predict_proba(self._x(val, lm_val))[:, 1]
        self.set_threshold(self.validation_scores_, val["label"].to_numpy(), cfg.threshold_objective)
        return self

    @staticmethod
    def _check_not_paused(lm: Any) -> None:
        if getattr(lm, "paused_", False):
            raise LlmadError("fusion stack: an LM paused on --max-time; stacking needs every LM trained (drop "
                             "--max-time, or rerun with --resume)")

    # ------------------------------------------------------------------ scoring
    def score(self, items: pd.DataFrame) -> np.ndarray:
        """P(anomalous) from the tree, given the job's features and the full-train LM's score."""
        if len(items) == 0:
            return np.zeros(0)
        return self.tree_.predict_proba(self._x(items, self.lm_.score(items)))[:, 1]

    def quantized(self) -> "StackDetector":
        """A copy whose LM scores through its int8 CPU copy (``llmad predict --quantize``, replays)."""
        import copy

        det = copy.copy(self)
        det.lm_ = self.lm_.quantized()
        return det

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """``detector.json`` + ``lm/`` (the full-train SFT detector) + ``tree.pkl``, replacing ``path`` whole."""
        from llmad.io import atomic_dir

        if getattr(self, "tree_", None) is None:
            raise RuntimeError("StackDetector.save: fit() or load() first")
        with atomic_dir(path) as tmp:
            self.lm_.save(tmp / "lm")
            with open(tmp / "tree.pkl", "wb") as fh:  # our own fitted sklearn object (as baselines save theirs)
                pickle.dump(self.tree_, fh)
            write_detector_json(tmp, self.kind, {
                "sft": asdict(self.sft), "folds": self.folds, "seed": self.seed, "max_iter": self.max_iter,
                "threshold": self.threshold_, "features": getattr(self, "features_", None),
                "train_info": {k: v for k, v in getattr(self, "train_info_", {}).items() if k != "lm"}})

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, quantize: bool = False) -> "StackDetector":
        """Load a detector written by ``save``; scores equal the saved object's (``quantize``: int8 LM)."""
        from llmad.config import from_dict
        from llmad.detectors.sft.detector import SFTDetector

        p = Path(path)
        meta = read_detector_json(p)
        if meta.get("kind") != cls.kind:
            raise LlmadError(f"{p}: detector.json is of kind {meta.get('kind')!r}, not {cls.kind}")
        sft = from_dict(SFTConfig, meta["sft"], where=str(p / "detector.json"))
        det = cls(sft=sft, folds=meta["folds"], seed=meta["seed"], max_iter=meta["max_iter"])
        det.lm_ = SFTDetector.load(p / "lm", device=device)
        with open(p / "tree.pkl", "rb") as fh:
            det.tree_ = pickle.load(fh)
        det.threshold_, det.features_ = meta["threshold"], meta.get("features")
        det.train_info_ = meta.get("train_info", {})
        return det.quantized() if quantize else det


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC-AUC of the out-of-fold LM scores on train (how well the LM alone ranks unseen runs)."""
    from sklearn.metrics import roc_auc_score

    ok = np.isfinite(s)
    return float(roc_auc_score(y[ok], s[ok])) if 0 < y[ok].sum() < ok.sum() else float("nan")


__all__ = ["StackDetector", "FUSION_KINDS"]
