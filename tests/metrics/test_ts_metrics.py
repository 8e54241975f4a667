"""Time-series metrics: event recall and delay, per-type rows, the labelled point-adjusted F1, VUS-PR (checked
against a transcription of TSB-AD's loop), event F1 and the TSB-AD sliding window."""
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


# ---------------------------------------------------------------------------------------------- TSB-AD metrics
def _tsb_ad_vus_pr(lab, score, window_size, thre=250):
    """A direct loop transcription of TSB-AD's ``RangeAUC_volume_opt`` (VUS-PR part) as the reference."""
    def conv(label):
        st, (en,) = np.where(np.diff(label) == 1)[0] + 1, np.where(np.diff(label) == -1)
        if len(en) and (not len(st) or en[0] < st[0]):
            st = np.concatenate([[0], st])
        if len(st) and (not len(en) or en[-1] < st[-1]):
            en = np.concatenate([en, [len(label) - 1]])
        return list(zip(st, en))

    def newseq(n, so, w):
        a, out = max(so[0][0] - w // 2, 0), []
        for i in range(len(so) - 1):
            if so[i][1] + w // 2 < so[i + 1][0] - w // 2:
                out.append((a, so[i][1] + w // 2))
                a = so[i + 1][0] - w // 2
        return out + [(a, min(so[-1][1] + w // 2, n - 1))]

    n, P, seq = len(lab), lab.sum(), conv(lab)
    big, ss = newseq(n, seq, window_size), -np.sort(-score)
    ths = [ss[i] for i in np.linspace(0, n - 1, thre).astype(int)]
    aps = []
    for w in range(window_size + 1):
        ext = lab.astype(float).copy()
        for s, e in seq:
            x1 = np.arange(e + 1, min(e + w // 2 + 1, n))
            ext[x1] += np.sqrt(1 - (x1 - e) / w)
            x2 = np.arange(max(s - w // 2, 0), s)
            ext[x2] += np.sqrt(1 - (s - x2) / w)
        ext = np.minimum(1, ext)
        segs, tpr, prec = newseq(n, seq, w), [0.0], []
        for t in ths:
            pred = score >= t
            lab2, hit = ext.copy(), 0
            for a, b in segs:
                lab2[a:b + 1] = ext[a:b + 1] * pred[a:b + 1]
                hit += pred[a:b + 1].any()
            for a, b in seq:
                lab2[a:b + 1] = 1
            tp = sum(np.dot(lab2[a:b + 1], pred[a:b + 1]) for a, b in big)
            nl = sum(lab2[a:b + 1].sum() for a, b in big)
            tpr.append(min(tp / ((P + nl) / 2), 1) * hit / len(segs))
            prec.append(tp / pred.sum())
        aps.append(np.dot(np.diff(tpr), prec))
    return float(np.mean(aps))


def test_vus_pr_equals_tsb_ad_and_orders_detectors():
    from llmad.metrics.timeseries import vus_pr

    rng = np.random.default_rng(0)
    for case in range(3):
        y = np.zeros(400, int)
        for a in rng.integers(0, 380, 4):
            y[a:a + rng.integers(1, 12)] = 1
        if case == 2:
            y[:4], y[-2:] = 1, 1  # segments touching both ends
        s = np.round(rng.normal(size=400) + 1.5 * y * rng.random(), 1)  # ties too
        assert vus_pr(y, s, 8) == pytest.approx(_tsb_ad_vus_pr(y, s, 16), abs=1e-12)
    y = np.zeros(500, int)
    y[100:110] = y[300:320] = 1
    assert vus_pr(y, y + 0.01 * rng.random(500), 10) > 0.9
    assert vus_pr(y, rng.random(500), 10) < 0.2
    assert np.isnan(vus_pr(np.zeros(50, int), rng.random(50)))


def test_event_f1_and_period():
    from llmad.metrics.timeseries import event_f1, find_period

    y = np.array([0, 1, 1, 0, 0, 1, 1, 0, 0, 0])
    p = np.array([0, 1, 0, 0, 0, 0, 0, 0, 1, 0])  # one of two events; precision 1/2
    assert event_f1(y, p) == pytest.approx(0.5)
    assert event_f1(y, np.zeros(10, int)) == 0.0
    t = np.arange(3000)
    assert find_period(np.sin(2 * np.pi * t / 48)) == 48
    assert find_period(np.ones(100)) == 125  # no period: TSB-AD's default
