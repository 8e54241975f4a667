"""Collapse guard of SFT runs: a fine-tuned classifier that learned nothing usable is named, not shipped silently.

Measured (issue 17): the default recipe collapsed on montage (paper split) and predict_future_sales (paper
template): validation ROC-AUC near 0.5, or every job flagged at the chosen threshold. ``collapse_reason`` checks a
fitted run on its validation rows; ``fallback_config`` is the recipe that trained those workflows well (a lower
learning rate and a class-balanced loss), which ``llmad.api.sft.run_sft`` retrains with once.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from llmad.detectors.sft.config import SFTConfig

MIN_ROC_AUC = 0.6  # below this on validation the ranking is close to chance
ONE_CLASS_SHARE = 0.98  # predictions this one-sided at the chosen threshold ...
LABEL_SHARE_MAX = 0.9  # ... while no more than this share of the labels is that class
FALLBACK_LR = 5e-5  # the learning rate that trained montage / predict_future_sales (issue 17's table)


def collapse_reason(labels: Sequence[int], scores: Sequence[float], threshold: float) -> str | None:
    """Why a run with these validation scores collapsed, or None.

    Collapsed: a score is not finite; validation ROC-AUC < 0.6 (both classes present); or at the threshold the
    objective chose (the best of every threshold it considers) at least 98% of the jobs get one class although at
    most 90% of them are of it (e.g. every job flagged while a third is anomalous).
    """
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=float)
    if len(y) == 0:
        return None
    bad = int((~np.isfinite(s)).sum())
    if bad:
        return f"{bad} of {len(s)} validation scores are not finite (the weights diverged)"
    if 0 < y.sum() < len(y):
        from sklearn.metrics import roc_auc_score

        auc = float(roc_auc_score(y, s))
        if auc < MIN_ROC_AUC:
            return f"validation ROC-AUC {auc:.3f} < {MIN_ROC_AUC}"
    pred = (s >= threshold).astype(int)
    for cls, name in ((1, "anomalous"), (0, "normal")):
        pred_share, label_share = float(np.mean(pred == cls)), float(np.mean(y == cls))
        if pred_share >= ONE_CLASS_SHARE and label_share <= LABEL_SHARE_MAX:
            return (f"{pred_share:.0%} of validation jobs predicted {name} at threshold {threshold:.4g} "
                    f"({label_share:.0%} are)")
    return None


def fallback_config(cfg: SFTConfig) -> SFTConfig:
    """The retry recipe: learning rate min(lr / 2, 5e-5) and class-balanced cross-entropy; the rest unchanged."""
    return replace(cfg, lr=min(cfg.lr / 2, FALLBACK_LR), class_weight="balanced")


def attempt_record(attempt: int, cfg: SFTConfig, labels: Sequence[int], scores: Sequence[float], threshold: float,
                   reason: str | None, train_s: float) -> dict[str, Any]:
    """One training attempt as ``metrics.json`` records it under ``collapse.attempts``."""
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=float)
    auc = float("nan")
    if 0 < y.sum() < len(y) and np.isfinite(s).all():
        from sklearn.metrics import roc_auc_score

        auc = float(roc_auc_score(y, s))
    return {"attempt": attempt, "lr": cfg.lr, "class_weight": cfg.class_weight, "threshold": float(threshold),
            "validation_roc_auc": auc, "validation_flagged_share": float(np.mean(s >= threshold)) if len(s) else 0.0,
            "collapsed": reason is not None, "reason": reason, "train_s": float(train_s)}


__all__ = ["collapse_reason", "fallback_config", "attempt_record", "MIN_ROC_AUC", "ONE_CLASS_SHARE",
           "LABEL_SHARE_MAX", "FALLBACK_LR"]
