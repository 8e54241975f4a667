"""Windows, normalisation, gap handling and the csv: loader / generic splits."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmad.data.timeseries import (Series, alternate_event_segments, load_csv_series, split_at_gaps,
                                   time_split_series)
from llmad.data.windows import ZScore, make_windows, patchify, window_features, window_starts
from llmad.errors import DataError


def _s(values, labels=None, name="s", group=None, **kw):
    v = np.asarray(values, np.float32)
    if v.ndim == 1:
        v = v[:, None]
    lab = np.zeros(len(v), int) if labels is None else labels
    return Series(name=name, values=v, labels=lab, features=[f"f{i}" for i in range(v.shape[1])],
                  meta={"group": group or name}, **kw)


def test_zscore_uses_train_statistics_only():
    train = _s(np.array([[1.0, 5.0], [3.0, 5.0]]), group="g")
    test = _s(np.array([[101.0, 5.0], [103.0, 6.0]]), group="g")
    z = ZScore().fit([train])
    out = z.transform(test)
    np.testing.assert_allclose(out[:, 0], [99.0, 101.0])  # (x - 2) / 1, not re-centred on test
    np.testing.assert_allclose(out[:, 1], [0.0, 1.0])  # constant in train: std 1, no inf
    info = {}
    z.transform(_s(np.array([[2.0, 5.0]]), group="other"), info)
    assert info["unseen_groups"] == {"other"}


def test_missing_values_are_filled_and_all_missing_train_fails():
    v = np.array([[np.nan, 1], [2, np.nan], [np.inf, 3], [4, 4]], np.float32)
    z = ZScore().fit([_s(np.array([[0.0, 0], [4, 4]]))])
    out = z.transform(_s(v))
    assert np.isfinite(out).all()
    assert out[0, 0] == out[1, 0] and out[2, 0] == out[1, 0]  # back-filled lead, forward-filled inf
    with pytest.raises(DataError, match="no finite value"):
        ZScore().fit([_s(np.array([[np.nan, 1.0], [np.nan, 2.0]]))])


def test_windows_cover_every_point_and_map_back():
    assert window_starts(10, 4, 3).tolist() == [0, 3, 6]
    assert window_starts(11, 4, 3).tolist() == [0, 3, 6, 7]
    assert len(window_starts(3, 4, 1)) == 0
    s = _s(np.arange(11, dtype=float))
    ws = make_windows([s], ZScore().fit([s]), length=4, stride=3)
    assert len(ws) == 4 and ws.windows().shape == (4, 4, 1)
    steps = np.tile(np.arange(4, dtype=float), (4, 1))  # step score = position in window
    pts = ws.points_from_steps(steps)
    assert pts.shape == (11,)
    assert pts[0] == 0 and pts[3] == pytest.approx((3 + 0) / 2)  # point 3: last of window 0, first of window 1
    assert ws.points_from_steps(steps, how="max")[3] == 3
    np.testing.assert_allclose(ws.points_from_windows(np.array([1.0, 1, 1, 1])), 1.0)


def test_short_series_dropped_or_error():
    long, short = _s(np.arange(10.0), name="long"), _s(np.arange(3.0), name="short")
    ws = make_windows([long, short], ZScore().fit([long]), length=5, stride=5)
    assert ws.names == ["long"] and "short" in ws.info["dropped"][0]
    with pytest.raises(DataError, match="shorter than one window"):
        make_windows([short], ZScore().fit([long]), length=5)


def test_history_window_marks_missing_past_as_unobserved():
    s = _s(np.arange(1.0, 9.0))
    ws = make_windows([s], ZScore().fit([s]), length=4, stride=4)
    x, m = ws.windows_with_history(3)
    assert x.shape == (2, 7, 1)
    assert m[0].tolist() == [0, 0, 0, 1, 1, 1, 1] and m[1].tolist() == [1] * 7


def test_labels_events_and_features():
    lab = np.zeros(12, int)
    lab[5:7] = 1
    s = _s(np.random.default_rng(0).normal(size=(12, 2)), labels=lab)
    ws = make_windows([s], ZScore().fit([s]), length=4, stride=4)
    assert ws.window_labels().tolist() == [0, 1, 0]
    ev, types = ws.point_events()
    assert set(ev[ev >= 0]) == {0} and (ev >= 0).sum() == 2
    assert patchify(ws.windows(), 2).shape == (3, 2, 2, 2)
    assert window_features(ws.windows()).shape == (3, 14)


def test_gaps_split_series():
    t = np.array(["2023-01-01T00:00", "2023-01-01T00:01", "2023-01-01T00:02", "2023-01-01T05:00",
                  "2023-01-01T05:01"], dtype="datetime64[s]")
    parts = split_at_gaps(_s(np.arange(5.0), timestamps=t))
    assert [len(p) for p in parts] == [3, 2]


def test_time_split_and_event_alternation():
    lab = np.zeros(100, int)
    lab[[10, 40, 70]] = 1
    s = _s(np.arange(100.0), labels=lab)
    sp = time_split_series([s], (0.5, 0.2, 0.3))
    assert [len(p[0]) for p in (sp.train, sp.validation, sp.test)] == [50, 20, 30]
    a, b = alternate_event_segments([s])
    ids_a = {int(e) for x in a for e in np.unique(x.event_ids) if e >= 0}
    ids_b = {int(e) for x in b for e in np.unique(x.event_ids) if e >= 0}
    assert ids_a == {0, 2} and ids_b == {1}


def test_csv_loader(tmp_path):
    f = tmp_path / "m.csv"
    pd.DataFrame({"timestamp": pd.date_range("2024-01-01", periods=6, freq="min").astype(str),
                  "cpu": [1, 2, np.nan, 4, 5, 6], "mem": [1.0] * 6, "label": [0, 0, 0, 1, 0, 0]}).to_csv(f, index=False)
    s = load_csv_series(f)
    assert s.features == ["cpu", "mem"] and s.labels.sum() == 1 and s.timestamps is not None
    pd.DataFrame({"cpu": [1, 2], "label": [0, 7]}).to_csv(f, index=False)
    with pytest.raises(DataError, match="row 3"):
        load_csv_series(f)
    pd.DataFrame({"cpu": [1, 2]}).to_csv(f, index=False)
    with pytest.raises(DataError, match="no label column"):
        load_csv_series(f)
    f.write_text("cpu,label\n")
    with pytest.raises(DataError, match="no rows"):
        load_csv_series(f)
