"""When a job alerts: its first score at the threshold, or k of its last n observations (``AlertPolicy``).

The threshold comes from the model (chosen on validation when it was fitted), a number, or a replay of the
validation runs (``llmad.stream.replay.choose_stream_threshold``, on :meth:`AlertPolicy.statistic`). Never on test.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from llmad.data.reveal import NAN


class AlertPolicy:
    """Per-job alert decision: first score >= threshold, or k of the last n observations >= threshold."""

    def __init__(self, threshold: float, mode: str = "threshold", k: int = 2, n: int = 3):
        self.threshold, self.mode, self.k, self.n = float(threshold), mode, int(k), int(n)

    def new_state(self) -> dict[str, Any]:
        """Fresh per-job state."""
        return {"recent": [], "alerted": False}

    def observe(self, state: dict[str, Any], score: float) -> bool:
        """Add one observation; True exactly once, when the job first alerts."""
        if state["alerted"]:
            return False
        hit = score >= self.threshold
        if self.mode == "threshold":
            fire = hit
        else:
            rec = state["recent"]
            rec.append(bool(hit))
            if len(rec) > self.n:
                del rec[0]
            fire = sum(rec) >= self.k
        if fire:
            state["alerted"] = True
        return fire

    def statistic(self, scores: Sequence[float]) -> float:
        """The per-job number that alerts iff >= threshold (for choosing the threshold on validation)."""
        s = np.asarray(scores, dtype=np.float64)
        if not len(s):
            return NAN
        if self.mode == "threshold":
            return float(np.max(s))
        if len(s) < self.k:
            return -np.inf
        w = min(self.n, len(s))
        best = -np.inf
        for i in range(0, max(1, len(s) - w + 1)):
            win = np.sort(s[i:i + w])[::-1]
            best = max(best, float(win[self.k - 1]))
        # Windows shorter than n at the start also count (the rule fires as soon as k hits are in).
        for e in range(self.k, min(self.n, len(s))):
            best = max(best, float(np.sort(s[:e])[::-1][self.k - 1]))
        return best
