"""IsolationForest, LSTM autoencoder and forest baselines on windows: detection, thresholds, persistence, errors;
and each end to end on a small real ASD slice."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from numeric_fixtures import auc, window_sets  # noqa: E402

from llmad.detectors.windows import ForestDetector, IForestDetector, LSTMAEDetector  # noqa: E402
from llmad.errors import LlmadError  # noqa: E402


@pytest.fixture(scope="module")
def sets():
    return window_sets()


def test_iforest_finds_level_shifts_and_round_trips(sets, tmp_path):
    tr, va, te = sets
    det = IForestDetector(n_estimators=50).fit(tr, va)
    assert det.threshold_ is not None
    s = det.score_points(te)
    assert auc(te, s) > 0.9
    det.save(tmp_path / "d")
    np.testing.assert_allclose(IForestDetector.load(tmp_path / "d").score_points(te), s)
    assert det.predict_points(te).sum() > 0


def test_lstm_ae_learns_and_round_trips(sets, tmp_path):
    tr, va, te = sets
    det = LSTMAEDetector(hidden=8, epochs=10, max_steps=60, batch_size=16, lr=1e-2).fit(tr, va)
    assert np.mean(det.losses_[-5:]) < np.mean(det.losses_[:5])
    s = det.score_points(te)
    assert auc(te, s) > 0.9
    det.save(tmp_path / "d")
    np.testing.assert_allclose(LSTMAEDetector.load(tmp_path / "d").score_points(te), s, rtol=1e-5)


def test_forest_is_supervised(sets):
    tr, va, te = sets
    with pytest.raises(LlmadError, match="both normal and anomalous"):
        ForestDetector("rf", n_estimators=20).fit(tr, None)  # clean train part: one class only
    from llmad.data.windows import ZScore, make_windows
    from numeric_fixtures import synthetic

    pool = make_windows([synthetic(240, anomalies=(60, 170), seed=1)], ZScore().fit([synthetic(400)]), 32, 2)
    for method in ("rf", "hgb"):
        det = ForestDetector(method, n_estimators=30).fit(pool, None)
        assert auc(te, det.score_points(te)) > 0.9, method
    with pytest.raises(LlmadError):
        ForestDetector("svm")


def test_nan_windows_and_unlabeled_validation_are_errors(sets):
    tr, va, _ = sets
    det = IForestDetector(n_estimators=10).fit(tr, None)
    bad = tr.windows()[:2].copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(LlmadError, match="NaN"):
        det.score(bad)
    va.labeled = [False] * len(va.labeled)
    try:
        with pytest.raises(LlmadError, match="no labels"):
            det.calibrate(va)
    finally:
        va.labeled = [True] * len(va.labeled)


@pytest.mark.integration
@pytest.mark.parametrize("method", ["iforest", "lstm-ae", "rf"])
def test_end_to_end_on_real_asd(method, tmp_path):
    from llmad.api.numeric import NumericConfig, run_numeric

    cfg = NumericConfig(method=method, data="asd:omi-1", shots=200, max_steps=20, hidden=8, n_estimators=30,
                        window=32, stride=16, out=str(tmp_path / "run"))
    m = run_numeric(cfg).metrics
    t = m["test"]
    assert 0 <= t["f1"] <= 1 and np.isfinite(t["roc_auc"]) and t["score_std"] > 0
    assert m["threshold_source"].startswith("validation")
    assert (tmp_path / "run" / "metrics.json").is_file() and (tmp_path / "run" / "predictions.csv").is_file()
    assert m["selection"]["train_windows"] <= 200
