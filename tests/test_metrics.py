import numpy as np
import pytest

from llmad.metrics.classification import bootstrap_ci, choose_threshold, classification_report, fpr_at_recall


def test_choose_threshold_maximises_f1_on_validation():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.35, 0.3, 0.8, 0.9])
    t = choose_threshold(y, s)
    assert t == pytest.approx(0.3)
    assert choose_threshold(y, s, "accuracy") == pytest.approx(0.8) or choose_threshold(y, s, "accuracy") <= 0.8
    with pytest.raises(ValueError):
        choose_threshold(y, s, "nope")


def test_single_class_validation_gives_finite_threshold():
    t = choose_threshold([0, 0, 0], [0.1, 0.2, 0.3])
    assert np.isfinite(t) and t > 0.3


def test_report_fields_and_per_type_recall():
    y = [0, 1, 1, 0, 1]
    s = [0.1, 0.9, 0.2, 0.4, 0.7]
    r = classification_report(y, s, threshold=0.5, anomaly_types=["normal", "cpu", "hdd", "normal", "cpu"])
    assert r["accuracy"] == pytest.approx(0.8) and r["recall"] == pytest.approx(2 / 3)
    assert r["confusion_matrix"] == [[2, 0], [1, 2]]
    assert r["recall_per_anomaly_type"]["cpu"]["recall"] == 1.0 and r["recall_per_anomaly_type"]["hdd"]["recall"] == 0
    assert 0 < r["roc_auc"] <= 1 and "pr_auc" in r and "fpr_at_95_recall" in r


def test_fpr_at_recall_and_bootstrap():
    y = np.array([0] * 50 + [1] * 50)
    s = np.r_[np.linspace(0, 0.6, 50), np.linspace(0.4, 1, 50)]
    assert 0 < fpr_at_recall(y, s) < 0.5
    lo, hi = bootstrap_ci(y, (s > 0.5).astype(int), n_boot=200)
    assert 0 <= lo <= hi <= 1
