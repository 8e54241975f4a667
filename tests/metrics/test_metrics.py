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


def _choose_threshold_before_sklearn(labels, scores, objective="f1"):
    """A verbatim copy of choose_threshold before it used sklearn's roc_curve (the reference it must equal)."""
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=float)
    if len(y) == 0:
        raise ValueError("cannot choose a threshold on an empty validation set")
    finite = np.isfinite(s)
    y, s = y[finite], s[finite]
    cands = np.unique(s)
    if len(cands) > 2000:
        cands = np.unique(np.quantile(s, np.linspace(0, 1, 2001)))
    cands = np.append(cands, np.nextafter(cands.max(), np.inf)) if len(cands) else np.array([0.5])
    best_t, best_v = float(cands[0]), -np.inf
    pos = y.sum()
    for t in cands:
        pred = s >= t
        tp = float(np.sum(pred & (y == 1)))
        fp = float(np.sum(pred & (y == 0)))
        fn = float(pos - tp)
        if objective == "f1":
            v = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0
        elif objective == "accuracy":
            v = float(np.mean(pred == (y == 1)))
        elif objective == "youden":
            neg = len(y) - pos
            v = (tp / pos if pos else 0.0) - (fp / neg if neg else 0.0)
        else:
            raise ValueError(objective)
        if v > best_v:
            best_v, best_t = v, float(t)
    return best_t


def _threshold_cases():
    rng = np.random.default_rng(12)
    cases = [([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.35, 0.3, 0.8, 0.9]),
             ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]),  # one tied score
             ([0, 0, 1, 1, 0, 1], [0.2, 0.2, 0.2, 0.7, 0.7, 0.7]),  # ties across classes
             ([0, 0, 0], [0.1, 0.2, 0.3]), ([1, 1], [0.4, 0.4]),  # one class only
             ([1, 0, 1, 0], [np.nan, 0.3, np.inf, 0.1]),  # non-finite scores dropped
             ([0, 1, 1, 0, 1], [-3.0, 2.0, 2.0, -1.0, 0.0])]
    for n, levels in ((50, None), (300, 7), (1000, 3), (5000, None), (4000, 400)):
        y = (rng.random(n) < 0.3).astype(int)
        s = rng.normal(size=n) + 1.5 * y
        if levels:  # many ties: a few distinct score values
            s = np.round(s * levels / 4) / levels
        cases.append((y, s))
    return cases


@pytest.mark.parametrize("objective", ["f1", "accuracy", "youden"])
def test_sklearn_threshold_equals_the_previous_loop(objective):
    for y, s in _threshold_cases():
        assert choose_threshold(y, s, objective) == _choose_threshold_before_sklearn(y, s, objective), (y, s)


def test_bootstrap_ci_is_quantiles_of_the_replicates():
    from llmad.metrics.classification import bootstrap_replicates

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 120)
    p = np.where(rng.random(120) < 0.7, y, 1 - y)
    reps = bootstrap_replicates(y, p, "f1", n_boot=300, seed=2)
    assert reps.shape == (300,) and ((reps >= 0) & (reps <= 1)).all()
    assert bootstrap_ci(y, p, "f1", n_boot=300, seed=2) == (np.quantile(reps, 0.025), np.quantile(reps, 0.975))
    from sklearn.metrics import f1_score

    # the first replicate is sklearn's F1 on the first resample
    idx = np.random.default_rng(2).integers(0, 120, 120)
    assert reps[0] == pytest.approx(f1_score(y[idx], p[idx], zero_division=0))
