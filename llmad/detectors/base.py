"""The one detector contract every method implements, the registry of saved-detector kinds, and ``load``.

sklearn-style: ``__init__`` only stores keyword arguments; fitted state ends in ``_``.
``fit`` learns on train and sets ``threshold_`` on validation (never on test).

Every ``save(path)`` writes ``path/detector.json`` through ``write_detector_json``; its ``"kind"`` names an entry of
``KINDS`` ("module:Class", imported only when a file of that kind is opened), so ``load(path)`` opens any of them.
"""
from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np

from llmad.errors import LlmadError
from llmad.metrics.classification import choose_threshold

META_FILE = "detector.json"

# detector.json "kind" -> "module:Class" with a ``load(path, **kw)`` classmethod. A new detector adds one line here
# (tests/detectors/test_contract.py then fails until it has a contract case).
KINDS: dict[str, str] = {
    "baseline": "llmad.detectors.baselines:BaselineDetector",
    "sft": "llmad.detectors.sft.detector:SFTDetector",
    "fusion-stack": "llmad.detectors.fusion.stack:StackDetector",
    "icl": "llmad.detectors.icl.detector:ICLDetector",
    "window-iforest": "llmad.detectors.windows:IForestDetector",
    "window-forest": "llmad.detectors.windows:ForestDetector",
    "lstm-ae": "llmad.detectors.windows:LSTMAEDetector",
    "moment": "llmad.detectors.moment:MomentDetector",
    "lagllama": "llmad.detectors.lagllama:LagLlamaDetector",
    "duallmad": "llmad.detectors.duallmad:DualLMADDetector",
    "nll": "llmad.detectors.nll.detector:NLLDetector",
    "proto": "llmad.detectors.proto:ProtoDetector",
    "window-nll": "llmad.detectors.nll.detector:WindowNLLDetector",
}

# Window detectors saved before the registry wrote ``"class": <class name>`` instead of a kind; still readable.
LEGACY_CLASSES = {"IForestDetector": "window-iforest", "ForestDetector": "window-forest",
                  "LSTMAEDetector": "lstm-ae", "MomentDetector": "moment", "LagLlamaDetector": "lagllama"}


class Detector:
    """Base class: fit on train, score (higher = more anomalous), predict via a validation threshold."""

    name: str = "detector"
    kind: str = ""  # the registry key written to detector.json (a subclass that saves sets it)
    data_kind: str = "jobs"  # what ``score`` takes: "jobs" (job rows: predict, replay, watch) or "windows"
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
        """The keyword arguments this detector was built with: ``type(self)(**get_params())`` rebuilds it.

        The display ``name`` is derived from the other arguments, so it is left out unless the constructor takes it.
        """
        params = {k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")}
        if "name" not in inspect.signature(type(self).__init__).parameters:
            params.pop("name", None)
        return params

    def save(self, path: str | Path) -> None:
        """Save config + fitted state under ``path`` (safetensors for tensors, JSON for the rest)."""
        raise NotImplementedError

    @classmethod
    def load(cls, path: str | Path) -> "Detector":
        """Load a detector written by ``save``."""
        raise NotImplementedError


def write_detector_json(folder: str | Path, kind: str, meta: dict[str, Any]) -> Path:
    """Write ``folder/detector.json`` = ``{"kind": kind, **meta}`` atomically; every detector's ``save`` uses it."""
    from llmad.io import write_json

    if kind not in KINDS:
        raise LlmadError(f"detector kind {kind!r} is not registered in llmad.detectors.base.KINDS")
    path = Path(folder) / META_FILE
    write_json(path, {"kind": kind, **meta})
    return path


def read_detector_json(folder: str | Path) -> dict[str, Any]:
    """The ``detector.json`` of a saved detector folder, with ``"kind"`` filled in for legacy ``"class"`` files."""
    meta_path = Path(folder) / META_FILE
    if not meta_path.is_file():
        raise LlmadError(f"{folder}: not a saved llmad detector (no {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise LlmadError(f"{meta_path}: unreadable {META_FILE} ({e})") from None
    if not isinstance(meta, dict):
        raise LlmadError(f"{meta_path}: unreadable {META_FILE} (not a JSON object)")
    if "kind" not in meta and meta.get("class") in LEGACY_CLASSES:
        meta["kind"] = LEGACY_CLASSES[meta["class"]]
    return meta


def detector_class(kind: str) -> type:
    """The registered class of a detector kind (imports its module)."""
    if kind not in KINDS:
        raise LlmadError(f"unknown detector kind {kind!r}; known: {', '.join(KINDS)}")
    mod, cls = KINDS[kind].split(":")
    return getattr(importlib.import_module(mod), cls)


def load(path: str | Path, **kw: Any) -> Detector:
    """Open any saved detector folder (or a run folder holding ``model/``) by the kind in its ``detector.json``."""
    p = Path(path)
    if not (p / META_FILE).is_file() and (p / "model" / META_FILE).is_file():
        p = p / "model"
    meta = read_detector_json(p)
    kind = meta.get("kind")
    if kind not in KINDS:
        raise LlmadError(f"{p / META_FILE}: unknown detector kind {kind!r}; known: {', '.join(KINDS)}")
    return detector_class(kind).load(p, **kw)


load_detector = load  # the name used before the registry moved here
