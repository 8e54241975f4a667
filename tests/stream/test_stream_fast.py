"""Fast SFT scoring backends (llmad.detectors.sft.fast) and the LRU score cache of the replay: a faster backend
scores within a stated tolerance of torch fp32, falls back when its runtime is absent, and the cache stays bounded."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmad.data.flowbench import PAPER_FEATURES
from llmad.data.reveal import make_partial
from llmad.detectors.sft import fast as sft_fast
from llmad.detectors.sft.detector import SFTConfig, SFTDetector
from llmad.detectors.sft.fast import FastSFT, pick_backend, with_backend
from llmad.errors import LlmadError
from llmad.stream import AlertPolicy, CachedScorer, StreamConfig, replay_run

from conftest import make_tiny_bert
from conftest import synthetic_jobs as shared_synthetic_jobs

# Max |score - torch fp32 score| per backend (probabilities). int8 moves weights by up to half a quantization step.
TOL = {"torch": 1e-9, "bf16": 0.02, "onnx": 1e-4, "onnx-int8": 0.06}


def synthetic_jobs(n: int, seed: int = 0) -> pd.DataFrame:
    """One run of the shared synthetic jobs, stage fields unknown, with event timestamps for a replay."""
    df = shared_synthetic_jobs(n, seed, jobs_per_run=n).assign(run_id="synth-run0001", transformation="t")
    df["stage_in_bytes"] = df["stage_out_bytes"] = np.nan
    df["stage_in_delay"] = df["stage_out_delay"] = np.nan
    t = 1_000.0 + 3.0 * np.arange(n)
    df["ready"] = t
    df["submit"] = t + df["wms_delay"]
    df["execute_start"] = df["submit"] + df["queue_delay"]
    df["execute_end"] = df["execute_start"] + df["runtime"]
    df["post_script_start"] = df["execute_end"] + 1
    df["post_script_end"] = df["post_script_start"] + df["post_script_delay"]
    return df


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tiny = str(make_tiny_bert(tmp_path_factory.mktemp("tiny-bert")))
    cfg = SFTConfig(model=tiny, template="compact", max_length=48, epochs=3, lr=3e-3, batch_size=16,
                    eval_batch_size=64, freeze="none", early_stopping_patience=0, progress=False,
                    logging_steps=1000, seed=0, prefix_augment=True)
    det = SFTDetector(cfg).fit(synthetic_jobs(200, 0), synthetic_jobs(60, 1),
                               output_dir=tmp_path_factory.mktemp("fit"), printer=lambda s: None)
    return det


@pytest.fixture(scope="module")
def fast(trained):
    """One wrapper per backend for the module (an ONNX export + optimisation costs seconds)."""
    made: dict[str, FastSFT] = {}

    def get(backend: str) -> FastSFT:
        if backend not in made:
            made[backend] = FastSFT(trained, backend, threads=1)
        return made[backend]

    return get


def _texts(det) -> list[str]:
    """Complete and partial jobs (as a replay sees them), varied lengths."""
    jobs = synthetic_jobs(80, 2)
    parts = [jobs] + [make_partial(jobs, jobs[c]) for c in ("submit", "execute_start", "execute_end")]
    return det.render(pd.concat(parts, ignore_index=True))


@pytest.mark.parametrize("backend", ["torch", "bf16", "onnx", "onnx-int8"])
def test_backend_scores_close_to_torch(trained, fast, backend):
    texts = _texts(trained)
    ref = trained.score_texts(texts)
    assert ref.std() > 0.1  # a trained model with spread-out scores, so the tolerance says something
    fast = fast(backend)
    assert fast.backend == backend
    got = fast.score_texts(texts)
    assert got.shape == ref.shape and np.isfinite(got).all()
    assert np.abs(got - ref).max() <= TOL[backend]
    # Same decisions away from the threshold band the tolerance allows.
    thr = trained.threshold_
    clear = np.abs(ref - thr) > TOL[backend]
    assert ((got[clear] >= thr) == (ref[clear] >= thr)).all()
    # Batch boundaries and order do not change a sentence's score (length-sorted dynamic padding).
    np.testing.assert_allclose(fast.score_texts(texts[::-1], batch_size=7)[::-1], got, atol=TOL[backend] / 4 + 1e-6)


@pytest.mark.parametrize("backend", ["torch", "bf16", "onnx"])
def test_parallel_workers_score_exactly_as_one(trained, fast, backend):
    import copy

    texts = _texts(trained)
    one = fast(backend).score_texts(texts, batch_size=16)
    par = copy.copy(fast(backend))  # same model / ONNX session, two worker threads
    par.workers = 2
    two = par.score_texts(texts, batch_size=16)
    np.testing.assert_allclose(two, one, rtol=0, atol=1e-6)
    if backend == "torch":
        np.testing.assert_allclose(two, trained.score_texts(texts), rtol=0, atol=1e-6)


def test_bf16_scores_a_bf16_copy_and_leaves_the_detector_fp32(trained, fast):
    import torch

    f = fast("bf16")
    assert {p.dtype for p in f._model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in trained.model_.parameters()} == {torch.float32}
    assert f._model is not trained.model_


def test_wrapper_delegates_render_threshold_and_config(trained):
    fast = with_backend(trained, "bf16")
    jobs = synthetic_jobs(10, 3)
    assert fast.render(jobs) == trained.render(jobs)
    assert fast.threshold_ == trained.threshold_ and fast.config is trained.config
    assert with_backend(fast, "torch") is fast  # not wrapped twice
    assert list(fast.predict(jobs)) == list((fast.score(jobs) >= trained.threshold_).astype(int))
    from llmad.stream import detector_inputs

    assert detector_inputs(fast) == detector_inputs(trained) == list(PAPER_FEATURES)


def test_auto_backend_choice_and_fallbacks(trained, monkeypatch):
    monkeypatch.setattr(sft_fast, "cpu_has_native_bf16", lambda: True)
    assert pick_backend(trained, "auto") == "bf16"
    monkeypatch.setattr(sft_fast, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(sft_fast, "onnxruntime_available", lambda: True)
    assert pick_backend(trained, "auto") == "onnx-int8"
    # onnxruntime absent: auto falls back to torch; asking for onnx by name is a one-line user error.
    monkeypatch.setattr(sft_fast, "onnxruntime_available", lambda: False)
    assert pick_backend(trained, "auto") == "torch"
    assert FastSFT(trained, "auto").score_texts(["wms 3"]).shape == (1,)
    with pytest.raises(LlmadError, match="onnxruntime"):
        pick_backend(trained, "onnx-int8")
    with pytest.raises(LlmadError, match="--backend"):
        pick_backend(trained, "tpu")
    with pytest.raises(LlmadError, match="--backend"):
        StreamConfig(backend="tpu").check()


def test_replay_with_fast_backend_matches_torch(trained, fast):
    run = synthetic_jobs(40, 4)
    outs = {}
    for b in ("torch", "onnx"):
        det = fast(b)
        scorer = CachedScorer(det, list(PAPER_FEATURES), batch_size=16)
        outs[b] = replay_run(run, scorer, AlertPolicy(trained.threshold_), context=False).jobs
    np.testing.assert_allclose(outs["onnx"]["max_score"], outs["torch"]["max_score"], atol=TOL["onnx"])
    assert (outs["onnx"]["alerted"] == outs["torch"]["alerted"]).all()


class _TextDet:
    """Scores a sentence by its length; counts sentences scored."""

    def __init__(self):
        self.scored = 0

    def render(self, frame: pd.DataFrame) -> list[str]:
        return [f"x {v}" for v in frame["runtime"]]

    def score_texts(self, texts):
        self.scored += len(texts)
        return np.array([len(t) / 100 for t in texts])


def test_lru_cache_is_bounded_and_keeps_recent_sentences():
    det = _TextDet()
    sc = CachedScorer(det, ["runtime"], batch_size=4, cache_size=6)
    for i in range(20):  # a recurring sentence between many one-off ones
        for v in (1.0, float(100 + i)):
            k = sc.key({"runtime": v})
            sc.request(k, {"runtime": v})
        sc.flush()
        assert sc.score(sc.key({"runtime": 1.0})) == pytest.approx(len("x 1.0") / 100)
        sc.release()
        assert len(sc.cache) <= 6
    # "x 1.0" was scored once (row key + sentence kept as recently used); each one-off once.
    assert det.scored == 21 and sc.hits == 19
