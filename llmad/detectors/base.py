"""The one detector contract every method implements (SFT, ICL, baselines, numeric detectors).

sklearn-style: ``__init__`` only stores keyword arguments; fitted state ends in ``_``.
``fit`` learns on train and sets ``threshold_`` on validation (never on test).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llmad.metrics.classification import choose_threshold


class Detector:
    """Base class: fit on train, score (higher = more anomalous), predict via a validation threshold."""

    name: str = "detector"
    threshold_: float | None = None

    def fit(self, train: Any, validation: Any | None = None) -> "Detector":
        """Learn from ``train``; choose ``threshold_`` on ``validation``."""
        raise NotImplementedError

    def score(self, items: Any) -> np.ndarray:
        """Anomaly scores, higher = more anomalous, one per item."""
        raise NotImplementedError

    def predict(self, items: Any) -> np.ndarray:
        """0/1 labels from ``score`` and ``threshold_``."""
        if self.threshold_ is None:
            raise RuntimeError(f"{type(self).__name__} has no threshold_: call fit() with validation data first")
        return (np.asarray(self.score(items)) >= self.threshold_).astype(int)

    def set_threshold(self, validation_scores: np.ndarray, validation_labels: np.ndarray,
                      objective: str = "f1") -> float:
        """Choose ``threshold_`` on validation scores/labels (never test)."""
        self.threshold_ = choose_threshold(validation_labels, validation_scores, objective=objective)
        return self.threshold_

    def get_params(self) -> dict[str, Any]:
        """The keyword arguments this detector was built with (JSON-serialisable ones)."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")}

    def save(self, path: str | Path) -> None:
        """Save config + fitted state under ``path`` (safetensors for tensors, JSON for the rest)."""
        raise NotImplementedError

    @classmethod
    def load(cls, path: str | Path) -> "Detector":
        """Load a detector written by ``save``."""
        raise NotImplementedError

