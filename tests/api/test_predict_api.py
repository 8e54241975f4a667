"""``llmad predict`` opens every saved job detector through the registry (baseline, sft, icl) and refuses metric-window
detectors with a clear error."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from icl_fixtures import smol_tokenizer, tiny_llama  # noqa: F401 (smol_tokenizer is a fixture)

from llmad.api.baseline import run_baseline
from llmad.api.predict import run_predict
from llmad.config import DataConfig
from llmad.detectors.baselines import BaselineConfig
from llmad.errors import LlmadError


def test_predict_reopens_a_baseline_run_with_its_test_scores(tiny_zip, tmp_path):
    data = DataConfig(spec=str(tiny_zip), split="run", seed=0)
    res = run_baseline(data, BaselineConfig(method="hgb", features="context", n_estimators=20), out=tmp_path / "b")
    pred = run_predict(tmp_path / "b" / "model", str(tiny_zip), split="run", part="test", seed=0,
                       out=tmp_path / "p", hooks=None, printer=lambda _: None)
    assert pred.metrics["method"] == "baseline" and pred.metrics["jobs"] == len(res.predictions)
    np.testing.assert_allclose(pred.predictions["score"].to_numpy(), res.predictions["score"].to_numpy())
    assert (tmp_path / "p" / "predictions.csv").is_file() and "report" in pred.metrics


def test_predict_reopens_a_saved_icl_detector(tiny_zip, tmp_path, smol_tokenizer):
    from llmad.data.flowbench import load_jobs
    from llmad.detectors.icl.config import ICLConfig
    from llmad.detectors.icl.detector import ICLDetector

    jobs = load_jobs(str(tiny_zip))
    lm = tiny_llama(smol_tokenizer, path=tmp_path / "base")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = ICLDetector(config=ICLConfig(model=str(tmp_path / "base"), shots=2, batch_size=8)).fit(
            jobs.iloc[:40], jobs.iloc[40:60], lm=lm)
    det.save(tmp_path / "icl")
    pred = run_predict(tmp_path / "icl", str(tiny_zip), limit=12, seed=1, out=tmp_path / "p", printer=lambda _: None)
    assert pred.metrics["method"] == "icl" and len(pred.predictions) == 12
    again = pd.read_csv(tmp_path / "p" / "predictions.csv")
    sample = jobs.sample(n=12, random_state=1).reset_index(drop=True)
    np.testing.assert_allclose(again["score"].to_numpy(), det.score(sample), atol=1e-5)


def test_predict_refuses_a_metric_window_detector(tiny_zip, tmp_path):
    from llmad.detectors.windows import IForestDetector

    rng = np.random.default_rng(0)
    win = rng.normal(size=(40, 8, 2)).astype(np.float32)
    det = IForestDetector().fit(win, None)
    det.threshold_ = 0.5
    det.save(tmp_path / "w")
    with pytest.raises(LlmadError, match="metric windows"):
        run_predict(tmp_path / "w", str(tiny_zip), out=tmp_path / "p", printer=lambda _: None)
