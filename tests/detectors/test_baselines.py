import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from llmad.data.flowbench import load_jobs
from llmad.data.splits import make_split
from llmad.detectors.baselines import BaselineDetector
from llmad.errors import LlmadError
from llmad.metrics.classification import classification_report


@pytest.mark.parametrize("method", ["rf", "hgb", "knn", "iforest"])
def test_baselines_fit_score_save_load(tiny_zip, tmp_path, method):
    s = make_split(load_jobs(str(tiny_zip)), "run", seed=0)
    det = BaselineDetector(method, "context" if method == "hgb" else "plain", n_estimators=20).fit(s.train,
                                                                                                  s.validation)
    sc = det.score(s.test)
    assert sc.shape == (len(s.test),) and np.isfinite(sc).all() and det.threshold_ is not None
    det.save(tmp_path / "m")
    again = BaselineDetector.load(tmp_path / "m")
    np.testing.assert_array_equal(again.score(s.test), sc)
    assert (again.predict(s.test) == det.predict(s.test)).all()


def test_unknown_method_and_single_class(tiny_zip):
    jobs = load_jobs(str(tiny_zip))
    with pytest.raises(LlmadError, match="unknown baseline"):
        BaselineDetector("svm").fit(jobs)
    with pytest.raises(LlmadError, match="both classes"):
        BaselineDetector("rf").fit(jobs[jobs.label == 0])


@pytest.mark.integration
def test_rf_paper_split_matches_measured_reference(genome_jobs):
    s = make_split(genome_jobs, "paper")
    det = BaselineDetector("rf", n_estimators=100).fit(s.train, s.validation)
    r = classification_report(s.test.label, det.score(s.test), threshold=det.threshold_)
    assert r["accuracy"] > 0.81 and r["f1"] > 0.7  # measured 0.830 with 300 trees


def test_one_estimator_factory_pins_the_defaults():
    """Job baselines and window detectors build their estimators in one place; these are the exact settings the
    published tables were measured with (job: plain; window: class-balanced), so a drift fails here first."""
    from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest, RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier

    from llmad.detectors.baselines import make_estimator

    pairs = [
        (make_estimator("rf", n_estimators=300, seed=1),
         RandomForestClassifier(n_estimators=300, n_jobs=2, random_state=1, min_samples_leaf=1)),
        (make_estimator("hgb", n_estimators=300, seed=1),
         HistGradientBoostingClassifier(max_iter=300, learning_rate=0.1, random_state=1, early_stopping=False)),
        (make_estimator("iforest", n_estimators=300, seed=1), IsolationForest(n_estimators=300, random_state=1,
                                                                              n_jobs=2)),
        (make_estimator("knn"), KNeighborsClassifier(n_neighbors=15, weights="distance", n_jobs=2)),
        (make_estimator("rf", n_estimators=200, seed=1, n_jobs=1, balanced=True),
         RandomForestClassifier(n_estimators=200, random_state=1, n_jobs=1, class_weight="balanced_subsample",
                                min_samples_leaf=2)),
        (make_estimator("hgb", n_estimators=200, seed=1, n_jobs=1, balanced=True),
         HistGradientBoostingClassifier(max_iter=200, random_state=1, class_weight="balanced", early_stopping=False)),
    ]
    for built, expected in pairs:
        assert type(built) is type(expected) and built.get_params() == expected.get_params()
    with pytest.raises(LlmadError, match="unknown estimator"):
        make_estimator("svm")


class _ThreadsSeen(HistGradientBoostingClassifier):
    """An hgb that records how many OpenMP threads sklearn's runtime offers while it fits."""

    def fit(self, X, y, sample_weight=None):
        from threadpoolctl import threadpool_info

        type(self).seen = max(i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openmp")
        return super().fit(X, y, sample_weight=sample_weight)


@pytest.mark.parametrize("policy,expect_one", [("PASSIVE", True), ("ACTIVE", False)])
def test_fit_tree_fits_hgb_on_one_openmp_thread_when_threads_sleep(monkeypatch, policy, expect_one):
    # With sleeping (PASSIVE) OpenMP threads every one of hgb's per-node parallel regions pays a wake-up: 2 threads
    # fitted 5-11x slower than one (bench/results/tree_threads.md), so fit_tree caps hgb, also inside a pipeline.
    from threadpoolctl import threadpool_limits

    from llmad.detectors.baselines import fit_tree

    monkeypatch.setenv("OMP_WAIT_POLICY", policy)
    x = np.random.default_rng(0).normal(size=(60, 3))
    y = (x[:, 0] > 0).astype(int)
    with threadpool_limits(2, user_api="openmp"):
        fit_tree(_ThreadsSeen(max_iter=3), x, y)
        assert (_ThreadsSeen.seen == 1) is expect_one
        fit_tree(make_pipeline(StandardScaler(), _ThreadsSeen(max_iter=3)), x, y,
                 _threadsseen__sample_weight=np.ones(60))
        assert (_ThreadsSeen.seen == 1) is expect_one
