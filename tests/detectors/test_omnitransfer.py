"""OmniTransfer pieces: W-HAC clustering on synthetic entities, the full/partial decision, warm starts that really
start from the base weights, partial transfer keeping only the generic layers, save/load of an adapted detector,
and VUS-PR / event F1."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from numeric_fixtures import window_sets  # noqa: E402

from llmad.detectors.omnitransfer.cluster import (detect_period, extract_baseline, profile,  # noqa: E402
                                                  whac)
from llmad.detectors.omnitransfer.transfer import adapt, choose_mode, distance_score  # noqa: E402
from llmad.errors import LlmadError  # noqa: E402


def entity(period: int, seed: int, n: int = 600, f: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    ph = rng.uniform(0, 2 * np.pi)
    return np.stack([np.sin(2 * np.pi * t / period + ph + k) + 0.2 * rng.normal(size=n) for k in range(f)], 1)


def test_period_detection_and_weights():
    assert abs(detect_period(extract_baseline(entity(24, 0))[:, 0]) - 24) <= 1
    assert abs(detect_period(extract_baseline(entity(100, 1))[:, 0]) - 100) <= 2
    noise = np.random.default_rng(2).normal(size=(600, 1))
    assert detect_period(extract_baseline(noise, smooth=1)[:, 0]) == 600  # aperiodic: the segment length
    p = profile("e", entity(24, 0), alpha=0.5)
    assert np.allclose(p.weights, p.periods.astype(float) ** -0.5)


def test_baseline_drops_spikes():
    x = entity(24, 3)
    x[100:102, 0] += 40.0
    b = extract_baseline(x)
    clean = extract_baseline(entity(24, 3))
    assert np.abs(b[95:110, 0]).max() < 3 and np.abs(b - clean).max() < 1.0


def test_two_period_families_make_two_clusters_and_match():
    profs = [profile(f"a{i}", entity(24, i)) for i in range(4)] + [profile(f"b{i}", entity(100, 10 + i))
                                                                 for i in range(4)]
    cl = whac(profs, n_clusters=2)
    assert len(set(cl.labels[:4])) == 1 and len(set(cl.labels[4:])) == 1 and cl.labels[0] != cl.labels[4]
    ca, _ = cl.match(profile("na", entity(24, 99)))
    cb, _ = cl.match(profile("nb", entity(100, 98)))
    assert ca == cl.labels[0] and cb == cl.labels[4]
    assert set(cl.members(ca)) == {0, 1, 2, 3} and cl.members(ca)[0] == cl.medoids[ca]
    with pytest.raises(LlmadError, match="exactly one"):
        whac(profs, n_clusters=None, distance_threshold=None)
    with pytest.raises(LlmadError, match="same metrics"):
        cl.match(profile("x", entity(24, 5, f=2)))


def test_full_or_partial_decision():
    assert choose_mode(1.0, 1.0, 2.0) == "full" and choose_mode(2.5, 1.0, 2.0) == "partial"
    assert choose_mode(100.0, 1.0, 2.0, rule="full") == "full"
    with pytest.raises(LlmadError, match="transfer mode"):
        choose_mode(1.0, 1.0, 2.0, rule="sometimes")


@pytest.fixture(scope="module")
def base():
    from llmad.detectors.windows import LSTMAEDetector

    tr, va, te = window_sets(32, 8)
    det = LSTMAEDetector(hidden=16, epochs=10 ** 6, max_steps=150, batch_size=16, lr=1e-2, seed=0).fit(tr)
    return det, tr, va, te


def test_full_transfer_warm_starts_from_the_base(base):
    from llmad.detectors.windows import LSTMAEDetector

    det, tr, va, te = base
    full, info = adapt(det, tr, "full", steps=5, seed=1)
    fresh = LSTMAEDetector(hidden=16, epochs=10 ** 6, max_steps=5, batch_size=16, lr=1e-2, seed=1).fit(tr)
    assert info["steps"] == 5 and full.train_steps_ == 5
    assert full.losses_[0] < 0.6 * fresh.losses_[0]  # step 0 already near the base model's loss
    assert distance_score(full, tr) < distance_score(fresh, tr)
    # the base itself is untouched, and the adapted detector refits from scratch like any other
    assert all(p.requires_grad for p in det.model_.parameters())
    assert not full.warm_start and not det.warm_start
    kept = full.model_
    assert full.fit(tr).model_ is not kept


def test_partial_transfer_loads_only_generic_layers_then_trains_all(base):
    import torch

    det, tr, _, _ = base
    part, info = adapt(det, tr, "partial", steps=6, seed=1)
    assert [p["steps"] for p in info["phases"]] == [3, 3]
    assert info["phases"][0]["trainable_tensors"] < info["phases"][1]["trainable_tensors"]
    b, p = det.model_.state_dict(), part.model_.state_dict()
    # the encoder moved only in the last phase (from the base), the decoder started fresh
    assert not torch.equal(b["dec.weight_ih_l0"], p["dec.weight_ih_l0"])
    frozen_phase_only, _ = adapt(det, tr, "partial", steps=1, seed=1)  # 0 frozen steps + 1 all
    assert frozen_phase_only.train_steps_ == 1
    with pytest.raises(LlmadError, match="full or partial"):
        adapt(det, tr, "auto", steps=2)


def test_generic_layers_stay_frozen_during_the_first_phase(base):
    det, tr, _, _ = base
    key = "enc.weight_ih_l0"

    def moved(out) -> float:
        return float((out.model_.state_dict()[key] - det.model_.state_dict()[key]).abs().max())

    # lr 1e-2: one Adam step moves a weight by at most ~0.01. Partial (1 frozen + 1 all) moves the encoder once,
    # full transfer (2 steps) twice.
    part, _ = adapt(det, tr, "partial", steps=2, seed=0)
    full, _ = adapt(det, tr, "full", steps=2, seed=0)
    assert 0 < moved(part) <= 0.0101 < moved(full)


def test_adapted_detector_saves_and_loads(base, tmp_path):
    from llmad.detectors import load

    det, tr, va, te = base
    full, _ = adapt(det, tr, "full", steps=3)
    full.calibrate(va)
    full.save(tmp_path / "d")
    back = load(tmp_path / "d")
    assert np.array_equal(back.score_points(te), full.score_points(te)) and back.threshold_ == full.threshold_


def test_moment_transfer_keeps_the_encoder(tmp_path):
    import torch

    from llmad.detectors.moment import MomentDetector, build_moment, small_moment_config

    path = tmp_path / "tiny"
    build_moment(small_moment_config(seq_len=32, d_model=16, n_layers=1, n_heads=2, d_ff=32)).save_pretrained(
        str(path))
    tr, va, te = window_sets(32, 8)
    det = MomentDetector(model=str(path), finetune="probe", max_steps=4, batch_size=16).fit(tr)
    full, info = adapt(det, tr, "full", steps=3)
    assert info["steps"] == 3
    b, f = det.model_.state_dict(), full.model_.state_dict()
    enc = [k for k in b if k.startswith("encoder.")]
    assert enc and all(torch.equal(b[k], f[k]) for k in enc)  # probe: only the head trains
    part, info = adapt(det, tr, "partial", steps=2)
    assert info["steps"] == 2 and np.isfinite(part.score_points(te)).all()


def test_detector_without_protocol_is_refused():
    from llmad.detectors.windows import IForestDetector

    tr, _, _ = window_sets(32, 8)
    with pytest.raises(LlmadError, match="does not support transfer"):
        adapt(IForestDetector(n_estimators=5).fit(tr), tr, "full", steps=2)


def test_vus_pr_and_event_f1():
    from llmad.metrics.timeseries import event_f1, event_recall, vus_pr

    rng = np.random.default_rng(0)
    y = np.zeros(500, int)
    y[100:120] = 1
    y[300:305] = 1
    good = y + 0.1 * rng.normal(size=500)
    bad = rng.normal(size=500)
    assert vus_pr(y, good, sliding_window=10) > 0.8 > 0.3 > vus_pr(y, bad, sliding_window=10)
    assert np.isnan(vus_pr(np.zeros(50, int), bad[:50]))
    # a single-buffer check by hand: buffer 0 only, threshold = every distinct value
    assert vus_pr([0, 1, 0, 0], [0.1, 0.9, 0.2, 0.3], sliding_window=0) == pytest.approx(1.0)
    one = (np.arange(500) == 110).astype(int)  # one point of the first event: recall 1/2, precision 1
    assert event_recall(y, one) == 0.5 and event_f1(y, one) == pytest.approx(2 / 3)
