"""Time-series metrics: event recall and delay, per-type rows, and the labelled point-adjusted F1."""
from __future__ import annotations

import numpy as np
import pytest

from llmad.metrics.timeseries import event_metrics, point_adjust, ts_report


def _case():
    y = np.zeros(40, int)
    y[5:10] = 1  # event 0
    y[20:25] = 1  # event 1
    ev = np.full(40, -1)
    ev[5:10], ev[20:25] = 0, 1
    return y, ev


def test_event_recall_and_delay():
    y, ev = _case()
    p = np.zeros(40, int)
    p[7] = 1  # event 0 found 2 points late; event 1 missed
    p[30] = 1  # one false alarm
    m = event_metrics(y, p, ev, {0: "cpu", 1: "net"}, step_seconds=60)
    assert m["event_recall"] == 0.5 and m["mean_delay_points"] == 2 and m["mean_delay_seconds"] == 120
    assert m["per_type"]["cpu"]["event_recall"] == 1 and m["per_type"]["net"]["event_recall"] == 0
    assert m["false_alarm_points"] == 1 and m["false_alarm_runs"] == 1
    p2 = np.zeros(40, int)
    p2[26] = 1  # just after event 1
    assert event_metrics(y, p2, ev)["event_recall"] == 0
    assert event_metrics(y, p2, ev, tolerance=2)["event_recall"] == 0.5


def test_point_adjust_inflates_and_is_labelled():
    y, ev = _case()
    p = np.zeros(40, int)
    p[[5, 20]] = 1
    assert point_adjust(y, p).sum() == 10
    s = p.astype(float)
    rep = ts_report(y, s, 0.5, event_ids=ev, event_types={0: "a", 1: "b"})
    assert rep["f1"] == pytest.approx(2 * 1.0 * 0.2 / 1.2)
    assert rep["point_adjusted_INFLATED"]["f1"] == 1.0 and "inflates" in rep["point_adjusted_INFLATED"]["note"]
    assert set(rep["per_type"]) == {"a", "b"} and rep["per_type"]["a"]["positives"] == 5
    # random scores: point-adjusted F1 far above point-wise F1 (why it never picks anything)
    rng = np.random.default_rng(0)
    yy = np.zeros(2000, int)
    for a in range(100, 2000, 200):
        yy[a:a + 60] = 1
    r = ts_report(yy, rng.random(2000), 0.95)
    assert r["point_adjusted_INFLATED"]["f1"] > 2 * r["f1"]


def test_non_finite_scores_rejected():
    with pytest.raises(ValueError, match="non-finite"):
        ts_report(np.array([0, 1]), np.array([0.1, np.nan]), 0.5)
