"""ProtoDetector's pairing: cross-fitted source priors, pooled tree, support weight, re-pairing after load."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from conftest import make_tiny_bert, synthetic_jobs  # noqa: E402

from llmad.detectors.proto import ProtoDetector  # noqa: E402


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    work = tmp_path_factory.mktemp("proto")
    src = synthetic_jobs(240, 0)
    src["workflow"] = np.where(np.arange(len(src)) % 2 == 0, "synth-a", "synth-b")
    det = ProtoDetector(encoder=str(make_tiny_bert(work / "bert")), episodes=40, episode_jobs=64, hidden=32, dim=16,
                        n_estimators=50)
    return det.fit(src), work


def test_source_priors_are_cross_fitted(fitted):
    from llmad.detectors.proto import robust_stats

    det, _ = fitted
    src = det.source_
    assert len(src["x"]) == len(src["prior"]) == len(src["y"]) == 240 and det.source_rate_ > 0
    jobs = synthetic_jobs(240, 0)
    jobs["workflow"] = np.where(np.arange(len(jobs)) % 2 == 0, "synth-a", "synth-b")
    in_sample = []
    for _, g in jobs.groupby("workflow", sort=True):
        x = det.features(g, robust_stats(det.numeric(g)))
        in_sample.append(det._logits(det.net_, x, det._centre(det.net_, x)))
    in_sample = np.concatenate(in_sample)
    # the tree learns from priors of networks that never saw the job's workflow, not the in-sample ones
    assert in_sample.shape == src["prior"].shape and not np.allclose(in_sample, src["prior"], atol=1e-3)
    np.testing.assert_array_equal(src["y"], np.concatenate([g["label"] for _, g in jobs.groupby("workflow")]))


def test_support_moves_the_tree_and_one_class_support_is_used(fitted):
    det, _ = fitted
    unlabeled, test = synthetic_jobs(80, 1).drop(columns=["label"]), synthetic_jobs(80, 2)
    base = det.adapt(unlabeled).score(test)
    assert det.support_jobs_ == 0 and det.threshold_rule_ == "rate"
    normal = synthetic_jobs(60, 3)
    normal = normal[normal["label"] == 0]
    one_class = det.adapt(unlabeled, normal).score(test)  # a tree needs no second class in the support
    assert det.support_jobs_ == len(normal) and not np.allclose(base, one_class)
    # labels flipped in a heavily weighted support turn the ranking around
    flipped = synthetic_jobs(200, 4)
    flipped["label"] = 1 - flipped["label"]
    from sklearn.metrics import roc_auc_score

    y = test["label"].to_numpy()
    det.support_weight = 50.0
    try:
        assert roc_auc_score(y, base) > 0.7 and roc_auc_score(y, det.adapt(unlabeled, flipped).score(test)) < 0.5
    finally:
        det.support_weight = 3.0


def test_a_loaded_detector_pairs_again_like_the_original(fitted):
    det, work = fitted
    unlabeled, sup, test = synthetic_jobs(80, 1), synthetic_jobs(60, 5), synthetic_jobs(80, 2)
    det.adapt(unlabeled, sup)
    det.save(work / "saved")
    got = ProtoDetector.load(work / "saved")
    np.testing.assert_allclose(got.score(test), det.score(test), rtol=1e-5)
    other = synthetic_jobs(80, 6)
    np.testing.assert_allclose(got.adapt(other).score(test), det.adapt(other).score(test), rtol=1e-5)


def test_repeated_sentences_are_embedded_once_and_in_place(fitted, monkeypatch):
    import llmad.detectors.sft.batching as batching

    det, _ = fitted
    jobs = synthetic_jobs(30, 5)
    alone = det.embed(jobs)
    seen = []
    real = batching.mean_pooled
    monkeypatch.setattr(batching, "mean_pooled", lambda model, ids, *a: seen.append(len(ids)) or real(model, ids, *a))
    doubled = det.embed(jobs.iloc[np.r_[np.arange(30), np.arange(30)[::-1]]])
    # every row gets its own sentence's embedding back, and the 30 repeated sentences cost nothing more
    np.testing.assert_allclose(doubled, np.r_[alone, alone[::-1]], atol=1e-5)
    assert seen == [len({tuple(r) for r in alone.round(5)})]


def test_weighted_bins_give_hgb_its_own_trees():
    # proto codes its tree inputs with WeightedBins so that HGB skips its slow weighted binning: the fitted model
    # must be the one HGB fits on the raw values (ties, few-valued and many-valued columns, weights, class weights)
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.utils.class_weight import compute_sample_weight

    from llmad.detectors.proto import WeightedBins

    rng = np.random.default_rng(3)
    x = np.c_[rng.normal(size=900), rng.integers(0, 40, 900), np.round(rng.normal(size=900), 1),
              rng.exponential(size=900).astype(np.float32)]
    y = (x[:, 0] + 0.05 * x[:, 1] + rng.normal(size=900) > 1.5).astype(int)
    w = np.where(np.arange(900) >= 700, 3.0, 1.0)

    def hgb():
        return HistGradientBoostingClassifier(max_iter=30, class_weight="balanced", random_state=0)

    plain = hgb().fit(x, y, sample_weight=w)
    coded = make_pipeline(WeightedBins(), hgb()).fit(
        x, y, weightedbins__sample_weight=w * compute_sample_weight("balanced", y),
        histgradientboostingclassifier__sample_weight=w)
    probe = np.r_[x, rng.normal(size=(50, 4)) * 3]  # values between and beyond the training ones too
    np.testing.assert_allclose(coded.predict_proba(probe), plain.predict_proba(probe), atol=1e-12)


def test_the_rate_counts_runs_not_jobs():
    # 200 jobs of 2 runs are two observations of a workflow's anomaly share: against 20 prior runs they move the
    # rate by ~1/11 of the way, however many jobs the runs hold; many runs outweigh the prior
    import pandas as pd

    from llmad.detectors.proto import shrunk_rate

    two = pd.DataFrame({"run_id": ["a"] * 100 + ["b"] * 100, "label": [1] * 60 + [0] * 40 + [0] * 100})
    assert shrunk_rate(None, 0.2) == shrunk_rate(two.iloc[:0], 0.2) == 0.2
    assert shrunk_rate(two, 0.2) == pytest.approx((0.6 + 0.0 + 0.2 * 20) / 22)
    assert shrunk_rate(pd.concat([two] * 5), 0.2) == pytest.approx(shrunk_rate(two, 0.2))  # more jobs, same runs
    many = pd.DataFrame({"run_id": np.repeat(np.arange(400), 2), "label": np.tile([1, 0], 400)})
    assert abs(shrunk_rate(many, 0.2) - 0.5) < 0.02
    # no run ids: the labeled jobs are one run
    assert shrunk_rate(two.drop(columns="run_id"), 0.2) == pytest.approx((0.3 + 0.2 * 20) / 21)
