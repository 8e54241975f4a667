"""Detectors behind one contract (``llmad.detectors.base.Detector``); ``load_detector`` opens any saved one."""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

# detector.json "kind" -> "module:Class" with a ``load(path, **kw)`` classmethod.
KINDS = {"baseline": "llmad.detectors.baselines:BaselineDetector", "sft": "llmad.detectors.sft.detector:SFTDetector"}


def load_detector(path: str | Path, **kw: Any):
    """Load a saved detector folder by the ``kind`` recorded in its ``detector.json``."""
    from llmad.errors import LlmadError

    p = Path(path)
    meta = p / "detector.json"
    if not meta.is_file() and (p / "model" / "detector.json").is_file():
        p, meta = p / "model", p / "model" / "detector.json"
    if not meta.is_file():
        raise LlmadError(f"{p}: not a saved llmad detector (no detector.json)")
    try:
        kind = json.loads(meta.read_text()).get("kind")
    except (OSError, json.JSONDecodeError, AttributeError) as e:
        raise LlmadError(f"{meta}: unreadable detector.json ({e})") from None
    if kind not in KINDS:
        raise LlmadError(f"{meta}: unknown detector kind {kind!r}; known: {', '.join(KINDS)}")
    mod, cls = KINDS[kind].split(":")
    return getattr(importlib.import_module(mod), cls).load(p, **kw)
