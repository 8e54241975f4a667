"""MOMENT detector with a tiny MOMENT built here, saved and loaded through MOMENTPipeline.from_pretrained(path)
(the same call that loads AutonLab/MOMENT-1-large where the hub is reachable)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from numeric_fixtures import auc, window_sets  # noqa: E402

from llmad.errors import LlmadError  # noqa: E402


@pytest.fixture(scope="module")
def tiny_moment(tmp_path_factory):
    from llmad.detectors.moment import build_moment, small_moment_config

    path = tmp_path_factory.mktemp("moment") / "tiny"
    m = build_moment(small_moment_config(seq_len=32, d_model=16, n_layers=2, n_heads=2, d_ff=32))
    m.save_pretrained(str(path))
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    return str(path)


@pytest.fixture(scope="module")
def sets():
    return window_sets(length=32, stride=8)


def test_from_pretrained_round_trip_is_exact(tiny_moment):
    import torch

    from llmad.detectors.moment import load_moment

    a, b = load_moment(tiny_moment).eval(), load_moment(tiny_moment).eval()
    x = torch.randn(2, 3, 32)
    with torch.no_grad():
        ra = a.reconstruct(x_enc=x, input_mask=torch.ones(2, 32)).reconstruction
        rb = b.reconstruct(x_enc=x, input_mask=torch.ones(2, 32)).reconstruction
    assert torch.equal(ra, rb) and ra.shape == x.shape


def test_zero_shot_scores_are_finite_and_vary(tiny_moment, sets):
    from llmad.detectors.moment import MomentDetector

    tr, va, te = sets
    det = MomentDetector(model=tiny_moment, finetune="none").fit(tr.subset(np.zeros(0, int)), va)
    s = det.score_points(te)
    assert np.isfinite(s).all() and s.std() > 0 and det.threshold_ is not None
    # shorter windows are left-padded and masked: same model, no error
    assert det.score_steps(te.windows()[:2, :16]).shape == (2, 16)
    with pytest.raises(LlmadError, match="seq_len"):
        det.score_steps(np.zeros((1, 40, 3), np.float32))


def test_probe_trains_only_the_head_and_lora_only_adapters(tiny_moment, sets, tmp_path):
    import torch

    from llmad.detectors.moment import MomentDetector, load_moment

    tr, va, te = sets
    base = {n: p.detach().clone() for n, p in load_moment(tiny_moment).named_parameters()}
    probe = MomentDetector(model=tiny_moment, finetune="probe", max_steps=30, lr=1e-2, batch_size=32).fit(tr, va)
    changed = {n for n, p in probe.model_.named_parameters() if not torch.equal(p.detach(), base[n])}
    assert changed and all(n.startswith("head.") for n in changed)
    assert auc(te, probe.score_points(te)) > 0.8  # level shifts reconstruct badly

    lora = MomentDetector(model=tiny_moment, finetune="lora", lora_r=2, lora_blocks=1, max_steps=10,
                          batch_size=32).fit(tr, va)
    names = [n for n, p in lora.model_.named_parameters() if p.requires_grad]
    assert any("lora_" in n for n in names) and all(n.startswith("head.") or "lora_" in n for n in names)
    assert all(".block.1." in n for n in names if "lora_" in n)  # only the last block
    s = lora.score_points(te)
    lora.save(tmp_path / "det")
    again = MomentDetector.load(tmp_path / "det")
    np.testing.assert_allclose(again.score_points(te), s, rtol=1e-4, atol=1e-6)
    assert again.threshold_ == lora.threshold_


def test_unknown_finetune_and_missing_model(tmp_path):
    from llmad.detectors.moment import MomentDetector, load_moment
    from llmad.errors import ModelNotFoundError

    with pytest.raises(LlmadError, match="finetune"):
        MomentDetector(finetune="full")
    with pytest.raises(ModelNotFoundError):
        load_moment(str(tmp_path / "nope"))


@pytest.mark.integration
def test_pretrain_then_zero_shot_on_real_asd(tmp_path):
    from llmad.api.numeric import NumericConfig, pretrain_moment, run_numeric

    out = tmp_path / "pre"
    res = pretrain_moment(["nezha:trainticket"], out, seq_len=32, d_model=16, n_layers=1, n_heads=2, steps=15,
                          batch_size=32, max_windows=200)
    assert res["steps"] == 15 and (out / "config.json").is_file() and (out / "pretrain.json").is_file()
    m = run_numeric(NumericConfig(method="moment", model=str(out), shots=0, data="asd:omi-1", window=32,
                                  stride=32)).metrics
    assert m["window"] == 32 and m["test"]["score_std"] > 0 and np.isfinite(m["test"]["roc_auc"])
    assert any("stand-in" in n for n in m["notes"])
