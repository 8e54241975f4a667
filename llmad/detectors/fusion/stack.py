"""Fusion of the language model and the numbers, stacked (``llmad sft --fusion stack``, recipe ``method: fusion``): a
tree over [the job's numeric features, its peer-context features (``ctx_*``), the fine-tuned LM's score].

Why stacked and cross-fitted: a tree fed the LM's score on rows the LM trained on would learn to trust an
over-confident score. So every train row's LM score comes from an LM that never saw that row: the train runs are
cut into K folds by run (``GroupKFold``; jobs of one run share peers, so a fold never splits a run), an LM is
fine-tuned on K-1 folds and scores the held-out one. Validation and test rows are scored by the mean of the K fold
LMs (``test_lm: folds``, the default: no extra LM to train, and the tree reads at test time the kind of score, from
LMs of the same size, that it was fitted on), or by one more LM trained on all train rows (``test_lm: full``). Paired
on the same splits and fold LMs, folds scored 0.004-0.014 F1 higher on all five workflows of
bench/results/lm_vs_trees.md (CPU-sized) and trains a quarter less. The saved detector keeps the LMs that score.
The tree is built as the baselines build theirs (``llmad.detectors.baselines.make_estimator``); ``tree: auto`` fits
rf and hgb and keeps the one with the better validation objective. The threshold is chosen on validation, as for
every detector.

Saved as ``detector.json`` (kind ``fusion-stack``) + ``lm/`` (a saved SFT detector; with ``test_lm: folds`` also
``lm1/`` ... for the other folds) + ``tree.pkl``.
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
from llmad.detectors.baselines import feature_columns, fit_tree, make_estimator, tree_inputs
from llmad.detectors.fusion.config import StackConfig
from llmad.detectors.sft.config import SFTConfig
from llmad.errors import LlmadError

class StackDetector(Detector):
    """A tree (rf or hgb) over [numeric + peer-context features, cross-fitted LM score]."""

    kind = "fusion-stack"
    name = "fusion-stack"

    def __init__(self, sft: SFTConfig | None = None, folds: int = 3, seed: int = 0, tree: str = "auto",
                 n_estimators: int = 300, features: str = "auto", test_lm: str = "folds"):
        self.sft = sft if sft is not None else SFTConfig()
        self.folds, self.seed, self.tree, self.n_estimators = folds, seed, tree, n_estimators
        self.features, self.test_lm = features, test_lm
        self.name = f"stack-{Path(str(self.sft.model)).name}-{Path(self.sft.template).stem}"

    @classmethod
    def from_config(cls, stack: StackConfig, sft: SFTConfig, seed: int = 0) -> "StackDetector":
        """Build from a ``StackConfig`` and the LM's ``SFTConfig``."""
        return cls(sft, folds=stack.folds, seed=seed, tree=stack.tree, n_estimators=stack.n_estimators,
                   features=stack.features, test_lm=stack.test_lm)

    # ------------------------------------------------------------------ inputs
    def _x(self, items: pd.DataFrame, lm_scores: np.ndarray, feature_set: str | None = None) -> np.ndarray:
        x = tree_inputs(items, feature_set or self.feature_set_, causal=self.sft.causal,
                        base=getattr(self, "features_", None))
        return np.column_stack([x, np.asarray(lm_scores, dtype=float)])

    @property
    def lm_(self) -> Any:
        """The first of the scoring LMs (the full-train one with ``test_lm: full``): its settings and Trainer log."""
        return self.lms_[0]

    def lm_score(self, items: pd.DataFrame) -> np.ndarray:
        """The text-only score the tree reads: the scoring LM's, or the mean of the fold LMs'."""
        return np.mean([np.asarray(lm.score(items), dtype=float) for lm in self.lms_], axis=0)

    @property
    def tree_name_(self) -> str:
        """The kept tree and its numbers, e.g. ``rf-context``."""
        return f"{self.tree_kind_}-{self.feature_set_}"

    def input_columns(self) -> list[str]:
        """Columns the score depends on (the tree's features and the LM template's), for replays and predict."""
        feature_set = getattr(self, "feature_set_", None) or ("plain" if self.features == "plain" else "context")
        cols = feature_columns(feature_set, getattr(self, "features_", None)) + ["transformation"]
        lm = (getattr(self, "lms_", None) or [None])[0]
        lm_cols = lm.input_columns() if lm is not None else None
        return list(dict.fromkeys(cols + list(lm_cols or [])))

    # ------------------------------------------------------------------ training
    def fit(self, train: pd.DataFrame, validation: pd.DataFrame | None = None, *,
            output_dir: str | Path | None = None, resume: bool = False,
            printer: Callable[[str], None] = print) -> "StackDetector":
        """Cross-fit the LM by run (K folds), fit the tree on [features, out-of-fold LM score], then the LM on all
        of train (``test_lm: full``); threshold on validation. Checkpoints of each LM under ``output_dir/fold<i>``
        and ``/full``."""
        from sklearn.model_selection import GroupKFold

        from llmad.detectors.sft.detector import SFTDetector
        from llmad.detectors.sft.training import validation_rows
        from llmad.metrics.classification import choose_threshold, objective_value

        StackConfig(self.folds, self.tree, self.n_estimators, self.features, self.test_lm).check()
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
        self.folds_, fold_lms = [], []
        for i, (fit_idx, held_idx) in enumerate(GroupKFold(n_splits=k).split(train, y, groups)):
            printer(f"fusion stack: LM fold {i + 1}/{k}: trains on {len(fit_idx)} rows, scores {len(held_idx)} "
                    f"held-out rows of {len(np.unique(groups[held_idx]))} runs")
            lm = SFTDetector(cfg).fit(train.iloc[fit_idx].reset_index(drop=True), validation,
                                      output_dir=out / f"fold{i}", resume=resume, printer=printer)
            self._check_not_paused(lm)
            oof[held_idx] = lm.score(train.iloc[held_idx].reset_index(drop=True))
            fold_lms.append(lm)
            self.folds_.append({"fold": i, "train_rows": int(len(fit_idx)), "held_out_rows": int(len(held_idx)),
                                "train_s": lm.train_info_.get("train_s")})
        if self.test_lm == "folds":
            self.lms_ = fold_lms
        else:
            printer(f"fusion stack: LM on all {len(train)} train rows (scores validation and test)")
            self.lms_ = [SFTDetector(cfg).fit(train, validation, output_dir=out / "full", resume=resume,
                                              printer=printer)]
            self._check_not_paused(self.lms_[0])
        if output_dir is None:
            shutil.rmtree(out, ignore_errors=True)
        # The tree's choice and threshold read every validation row (as the trees' do); ``val_limit`` only
        # shortens the LMs' own evaluation passes, whose scores are reused.
        val = validation.reset_index(drop=True) if validation is not None else None
        lm_val, y_val = None, None
        objective = cfg.threshold_objective if cfg.threshold_objective != "argmax" else "f1"
        self.lm_threshold_ = float(self.lm_.threshold_)
        if val is not None and len(val):
            sub = validation_rows(val.assign(_row=np.arange(len(val))), cfg)  # the rows the LMs evaluated on
            lm_val = np.mean([_validation_scores(lm, val, sub) for lm in self.lms_], axis=0)
            y_val = val["label"].to_numpy().astype(int)
            if len(self.lms_) > 1:  # the fold LMs' mean has no threshold of its own yet: chosen as the stack's is
                self.lm_threshold_ = float(choose_threshold(y_val, lm_val, objective))
        # Without validation rows there is nothing to choose on: auto falls back to hgb on context features.
        chooses = y_val is not None
        kinds = ["rf", "hgb"] if self.tree == "auto" and chooses else ["hgb" if self.tree == "auto" else self.tree]
        sets = ["plain", "context"] if self.features == "auto" and chooses else \
            ["context" if self.features == "auto" else self.features]
        tried = {}
        for feature_set in sets:
            x_train = self._x(train, oof, feature_set)
            x_val = self._x(val, lm_val, feature_set) if chooses else None
            for kind in kinds:
                est = fit_tree(make_estimator(kind, n_estimators=self.n_estimators, seed=self.seed), x_train, y)
                if not chooses:
                    tried[(kind, feature_set)] = (est, None, float("nan"))
                    continue
                s_val = est.predict_proba(x_val)[:, 1]
                thr = choose_threshold(y_val, s_val, objective)
                tried[(kind, feature_set)] = (est, s_val, objective_value(y_val, s_val, thr, objective))
        best = max(tried, key=lambda k: np.nan_to_num(tried[k][2], nan=-1.0))  # ties: the first tried
        (self.tree_kind_, self.feature_set_), (self.tree_, val_scores, _) = best, tried[best]
        # Kept so a run folder can hold every LM score the tree saw (re-fit the tree layer without any LM).
        self.train_lm_scores_, self.validation_lm_scores_ = oof, lm_val
        self.train_info_ = {"folds": self.folds_, "cross_fit_auc": _auc(y, oof), "lm": self.lm_.train_info_,
                            "test_lm": self.test_lm, "lm_threshold": self.lm_threshold_,
                            "tree": self.tree_name_, "objective": objective,
                            "tree_validation": {f"{k}-{f}": v[2] for (k, f), v in tried.items()}}
        if val_scores is None or cfg.threshold_objective == "argmax":
            self.threshold_ = 0.5
            return self
        self.validation_scores_ = val_scores
        self.set_threshold(val_scores, y_val, cfg.threshold_objective)
        return self

    @staticmethod
    def _check_not_paused(lm: Any) -> None:
        if getattr(lm, "paused_", False):
            raise LlmadError("fusion stack: an LM paused on --max-time; stacking needs every LM trained (drop "
                             "--max-time, or rerun with --resume)")

    # ------------------------------------------------------------------ scoring
    def score(self, items: pd.DataFrame) -> np.ndarray:
        """P(anomalous) from the tree, given the job's features and the scoring LM's (or fold LMs' mean) score."""
        return self.score_parts(items)[1]

    def score_parts(self, items: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(the text-only score, the stack's score): the LM alone is reported beside the stack."""
        if len(items) == 0:
            return np.zeros(0), np.zeros(0)
        lm = self.lm_score(items)
        return lm, self.tree_.predict_proba(self._x(items, lm))[:, 1]

    def quantized(self) -> "StackDetector":
        """A copy whose LM scores through its int8 CPU copy (``llmad predict --quantize``, replays)."""
        import copy

        det = copy.copy(self)
        det.lms_ = [lm.quantized() for lm in self.lms_]
        return det

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """``detector.json`` + ``lm/`` (``lm1/`` ...: the scoring SFT detectors) + ``tree.pkl``, replacing ``path``
        whole."""
        from llmad.io import atomic_dir

        if getattr(self, "tree_", None) is None:
            raise RuntimeError("StackDetector.save: fit() or load() first")
        lm_dirs = ["lm"] + [f"lm{i}" for i in range(1, len(self.lms_))]
        with atomic_dir(path) as tmp:
            for name, lm in zip(lm_dirs, self.lms_):
                lm.save(tmp / name)
            with open(tmp / "tree.pkl", "wb") as fh:  # our own fitted sklearn object (as baselines save theirs)
                pickle.dump(self.tree_, fh)
            write_detector_json(tmp, self.kind, {
                "sft": asdict(self.sft), "folds": self.folds, "seed": self.seed, "tree": self.tree,
                "n_estimators": self.n_estimators, "features_choice": self.features, "tree_kind": self.tree_kind_,
                "test_lm": self.test_lm, "lms": lm_dirs, "lm_threshold": getattr(self, "lm_threshold_", None),
                "feature_set": self.feature_set_, "threshold": self.threshold_,
                "features": getattr(self, "features_", None),
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
        det = cls(sft=sft, folds=meta["folds"], seed=meta["seed"], tree=meta.get("tree", "hgb"),
                  n_estimators=meta.get("n_estimators", meta.get("max_iter", 300)),
                  features=meta.get("features_choice", "context"), test_lm=meta.get("test_lm", "full"))
        det.tree_kind_, det.feature_set_ = meta.get("tree_kind", "hgb"), meta.get("feature_set", "context")
        det.lms_ = [SFTDetector.load(p / name, device=device) for name in meta.get("lms", ["lm"])]
        lm_thr = meta.get("lm_threshold")
        det.lm_threshold_ = float(det.lm_.threshold_ if lm_thr is None else lm_thr)
        with open(p / "tree.pkl", "rb") as fh:
            det.tree_ = pickle.load(fh)
        det.threshold_, det.features_ = meta["threshold"], meta.get("features")
        det.train_info_ = meta.get("train_info", {})
        return det.quantized() if quantize else det


def _validation_scores(lm: Any, val: pd.DataFrame, sub: pd.DataFrame) -> np.ndarray:
    """``lm``'s score on every validation row, reusing those its own evaluation pass computed (rows ``sub``)."""
    out = np.full(len(val), np.nan)
    seen = getattr(lm, "validation_scores_", None)
    if seen is not None and len(seen) == len(sub):
        out[sub["_row"].to_numpy()] = seen
    todo = np.flatnonzero(np.isnan(out))
    if len(todo):
        out[todo] = lm.score(val.iloc[todo])
    return out


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC-AUC of the out-of-fold LM scores on train (how well the LM alone ranks unseen runs)."""
    from sklearn.metrics import roc_auc_score

    ok = np.isfinite(s)
    return float(roc_auc_score(y[ok], s[ok])) if 0 < y[ok].sum() < ok.sum() else float("nan")


__all__ = ["StackDetector"]
