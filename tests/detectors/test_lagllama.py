"""Lag-Llama forecast-NLL detector with a small checkpoint written here in the official Lightning format."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from numeric_fixtures import auc, window_sets  # noqa: E402

from llmad.errors import LlmadError, ModelNotFoundError  # noqa: E402

LAGS = [0, 1, 2, 3, 6, 11, 19]


@pytest.fixture(scope="module")
def sets():
    return window_sets(length=32, stride=16)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, sets):
    from llmad.detectors.lagllama import build_small_lagllama

    tr, _, _ = sets
    xh, _ = tr.windows_with_history(max(LAGS) + 16)
    return build_small_lagllama(tmp_path_factory.mktemp("ll") / "lag-llama.ckpt", context_length=16,
                                n_layer=1, n_head=2, n_embd_per_head=8, lags_seq=LAGS, train_windows=xh,
                                steps=5, batch_size=16, lr=3e-3)


def test_checkpoint_loads_weights_only(ckpt):
    import torch

    from llmad.detectors.lagllama import load_checkpoint, model_from_checkpoint

    raw = torch.load(str(ckpt), weights_only=True)  # plain tensors and names: nothing to unpickle
    assert raw["hyper_parameters"]["model_kwargs"]["distr_output"] == "studentt"
    model, kw = model_from_checkpoint(load_checkpoint(ckpt))
    assert kw["lags_seq"] == LAGS and sum(p.numel() for p in model.parameters()) > 0


def test_forecast_nll_flags_level_shifts(ckpt, sets, tmp_path):
    from llmad.detectors.lagllama import LagLlamaDetector

    tr, va, te = sets
    det = LagLlamaDetector(model=str(ckpt)).fit(tr, va)
    s = det.score_points(te)
    assert np.isfinite(s).all() and auc(te, s) > 0.8
    z = LagLlamaDetector(model=str(ckpt), score_kind="z").fit(tr, None)
    assert auc(te, z.score_points(te)) > 0.8
    det.save(tmp_path / "d")
    np.testing.assert_allclose(LagLlamaDetector.load(tmp_path / "d").score_points(te), s, rtol=1e-4)


def test_finetune_full_moves_weights(ckpt, sets):
    import torch

    from llmad.detectors.lagllama import LagLlamaDetector

    tr, _, _ = sets
    base = LagLlamaDetector(model=str(ckpt)).fit(tr, None)
    ft = LagLlamaDetector(model=str(ckpt), finetune="full", max_steps=3, batch_size=8).fit(tr, None)
    assert ft.train_steps_ == 3
    a = dict(base.model_.named_parameters())
    assert any(not torch.equal(p, a[n]) for n, p in ft.model_.named_parameters())


def test_pickled_objects_refused_unless_trusted(tmp_path, ckpt):
    import torch
    from gluonts.torch.distributions import StudentTOutput

    from llmad.detectors.lagllama import load_checkpoint, resolve_checkpoint

    raw = torch.load(str(ckpt), weights_only=True)
    raw["hyper_parameters"]["model_kwargs"]["distr_output"] = StudentTOutput()  # as the official file does
    official_like = tmp_path / "lag-llama.ckpt"
    torch.save(raw, str(official_like))
    with pytest.raises(LlmadError, match="trust_checkpoint"):
        load_checkpoint(official_like)
    assert load_checkpoint(official_like, trust_checkpoint=True)["state_dict"]
    assert resolve_checkpoint(str(tmp_path)) == official_like  # a folder holding lag-llama.ckpt
    with pytest.raises(ModelNotFoundError):
        resolve_checkpoint(str(tmp_path / "missing.ckpt"))


@pytest.mark.integration
def test_scratch_model_end_to_end_on_real_asd(tmp_path):
    from llmad.api.numeric import NumericConfig, run_numeric

    m = run_numeric(NumericConfig(method="lagllama", model="scratch", data="asd:omi-1", shots=64, window=32,
                                  stride=32, max_steps=5, batch_size=16, out=str(tmp_path / "run"),
                                  extra={"lags": [0, 1, 2, 5, 11], "context_length": 16})).metrics
    assert np.isfinite(m["test"]["roc_auc"]) and m["test"]["score_std"] > 0
    assert (tmp_path / "run" / "models" / "lag-llama.ckpt").is_file()
    assert any("stand-in" in n for n in m["notes"])
