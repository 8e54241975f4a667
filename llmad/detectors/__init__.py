"""Detectors behind one contract (``llmad.detectors.base.Detector``); ``load(path)`` opens any saved one."""
from llmad.detectors.base import KINDS, Detector, detector_class, load, load_detector, write_detector_json

__all__ = ["KINDS", "Detector", "detector_class", "load", "load_detector", "write_detector_json"]
