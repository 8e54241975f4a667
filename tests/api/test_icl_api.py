"""``llmad.api.icl.run_icl`` from Python: an already-loaded split and LM in, a ``RunResult`` out (tiny GPT-2)."""
from __future__ import annotations

import json

import numpy as np
from icl_fixtures import make_jobs, smol_tokenizer, tiny_gpt2  # noqa: F401 (smol_tokenizer is a fixture)

from llmad.api.hooks import RunHooks
from llmad.api.icl import ICLRun, run_icl
from llmad.data.splits import Split
from llmad.detectors.icl.config import ICLConfig
from llmad.detectors.icl.detector import ICLDetector


def test_run_icl_returns_a_run_result(smol_tokenizer, tmp_path):
    split = Split(make_jobs(30, seed=1), make_jobs(12, seed=2), make_jobs(20, seed=3), kind="synthetic",
                  description="synthetic jobs")
    logged, stages = [], []
    hooks = RunHooks(log=logged.append, stage=lambda text, total=None: stages.append(text))
    res = run_icl(ICLConfig(shots=2, batch_size=4), ICLRun(limit=10, val_limit=6, out=str(tmp_path / "run")),
                  split=split, hooks=hooks, lm=tiny_gpt2(smol_tokenizer))
    det = res.details["detector"]
    assert isinstance(det, ICLDetector) and res.details["icl"]["threshold"] == det.threshold_
    assert res.out_dir == tmp_path / "run" and res.summary == logged[-1] and "accuracy=" in res.summary
    assert len(stages) >= 2
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["test_rows"] == 10 and m["validation_rows"] == 6 and m["split"] == "synthetic"
    assert set(res.metrics) == set(m) and "argmax" in m and "mean_label_mass" in m
    pred = res.predictions
    # every id column, empty where the jobs have none (these synthetic ones lack workflow and run_id)
    assert list(pred.columns[:7]) == ["workflow", "run_id", "job_id", "label", "anomaly_type", "score", "prediction"]
    assert {"raw_logit", "p_abnormal", "label_mass", "demos_kept"} <= set(pred.columns)
    np.testing.assert_array_equal(pred["prediction"], (pred["score"] >= det.threshold_).astype(int))
    # The test subsample is the seeded one of llmad.data.splits.subsample.
    assert pred["job_id"].tolist() == split.test.sample(n=10, random_state=0)["job_id"].tolist()
    assert res.artifacts["predictions"] == "predictions.csv"
