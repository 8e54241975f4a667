"""ICL persistence: ``save`` writes ``detector.json`` (kind icl) + demonstrations (+ pool, + LoRA adapter), and
``llmad.detectors.load_detector`` re-opens the base model by ``config.model`` with identical scores."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from icl_fixtures import make_jobs, smol_tokenizer, tiny_llama  # noqa: F401 (smol_tokenizer is a fixture)

from llmad.detectors import load_detector
from llmad.detectors.icl.config import ICLConfig
from llmad.detectors.icl.detector import ICLDetector


@pytest.mark.parametrize("kw", [
    {"shots": 2, "calibrate": "content-free", "stats": True},
    {"shots": 2, "select": "nearest", "order": "fixed"},
    {"shots": 1, "lora_r": 2, "train_examples": 4, "train_steps": 1, "train_batch_size": 2, "learning_rate": 5e-3},
])
def test_save_then_load_detector_scores_identically(smol_tokenizer, tmp_path, kw):
    lm = tiny_llama(smol_tokenizer, path=tmp_path / "base")
    cfg = ICLConfig(model=str(tmp_path / "base"), batch_size=4, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = ICLDetector(config=cfg).fit(make_jobs(30, seed=1), make_jobs(8, seed=2), lm=lm)
    q = make_jobs(5, seed=3)
    before = det.score(q)
    det.save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "detector.json").read_text())
    assert meta["kind"] == "icl" and meta["config"]["model"] == str(tmp_path / "base")
    assert meta["threshold"] == det.threshold_ and meta["label_variants"]
    assert (tmp_path / "model" / "demonstrations.json").is_file()
    assert (tmp_path / "model" / "adapter").is_dir() == bool(kw.get("lora_r"))
    assert (tmp_path / "model" / "pool.safetensors").is_file() == (kw.get("select") == "nearest")
    again = load_detector(tmp_path / "model")  # no lm: re-opened from config.model
    assert isinstance(again, ICLDetector) and again.lm_.model is not lm.model
    assert again.threshold_ == det.threshold_ and again.calibration_ == det.calibration_
    assert again.demos_.to_dict(orient="records") == det.demos_.to_dict(orient="records")
    np.testing.assert_allclose(again.score(q), before, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(again.predict(q), det.predict(q))


def test_resave_drops_a_stale_adapter(smol_tokenizer, tmp_path):
    lm = tiny_llama(smol_tokenizer, path=tmp_path / "base")
    tuned = ICLDetector(config=ICLConfig(model=str(tmp_path / "base"), shots=0, lora_r=2, train_examples=4,
                                         train_steps=1, train_batch_size=2, batch_size=4))
    tuned.fit(make_jobs(20, seed=1), None, lm=lm)
    tuned.save(tmp_path / "model")
    plain = ICLDetector(config=ICLConfig(model=str(tmp_path / "base"), shots=0, batch_size=4))
    plain.fit(make_jobs(20, seed=1), None, lm=tiny_llama(smol_tokenizer))
    plain.save(tmp_path / "model")
    assert not (tmp_path / "model" / "adapter").exists()
    q = make_jobs(3, seed=4)
    np.testing.assert_allclose(load_detector(tmp_path / "model").score(q), plain.score(q), atol=1e-6)
