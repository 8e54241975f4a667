"""Item 0 of issue 17: a subsample (``--limit``, ``--val-limit``) picks rows, never peers; validation is scored once.

Peer-context features (``ctx_*``) of a job are computed from every job of its run, so a job's features and score
are the same whether or not a seeded sample of rows was asked for.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from llmad.api.baseline import run_baseline
from llmad.api.predict import run_predict
from llmad.api.sft import SFTRunConfig, load_run_split, run_sft
from llmad.config import DataConfig
from llmad.data.context import CONTEXT_FEATURES
from llmad.data.splits import Split
from llmad.detectors.baselines import BaselineConfig
from llmad.detectors.sft.config import SFTConfig
from llmad.detectors.sft.detector import SFTDetector

from conftest import make_tiny_bert, synthetic_jobs


def _by_job(frame: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    return frame.set_index(["run_id", "job_id"])[cols].sort_index()


def test_predict_limit_samples_rows_not_peers(tiny_zip, tmp_path):
    data = DataConfig(spec=str(tiny_zip), split="run", seed=0)
    run_baseline(data, BaselineConfig(method="hgb", features="context", n_estimators=20), out=tmp_path / "b")
    full = run_predict(tmp_path / "b" / "model", str(tiny_zip), out=tmp_path / "all", printer=lambda _: None)
    some = run_predict(tmp_path / "b" / "model", str(tiny_zip), limit=10, seed=3, out=tmp_path / "ten",
                       printer=lambda _: None)
    assert len(some.predictions) == 10 < len(full.predictions)
    keyed = _by_job(full.predictions, ["score"])
    got = _by_job(some.predictions, ["score"])
    # a job's score is the one it gets with all its peers present (10 of 108 jobs would leave ~1 peer each)
    np.testing.assert_allclose(got["score"].to_numpy(), keyed.loc[got.index, "score"].to_numpy())
    # and the sample is not trivially full-context-free: scoring the sample alone (peers recomputed) differs
    det = some.details["detector"]
    from llmad.data.flowbench import load_jobs
    sample = load_jobs(str(tiny_zip)).set_index(["run_id", "job_id"]).loc[got.index].reset_index()
    assert not np.allclose(det.score(sample), got["score"].to_numpy())


def test_sft_data_path_context_is_the_same_with_and_without_limit(tiny_zip):
    whole = load_run_split(DataConfig(spec=str(tiny_zip), split="run"), "context")
    limited = load_run_split(DataConfig(spec=str(tiny_zip), split="run", limit=5), "context")
    for part in ("train", "validation", "test"):
        lim = _by_job(limited.part(part), CONTEXT_FEATURES)
        assert len(lim) == 5
        ref = _by_job(whole.part(part), CONTEXT_FEATURES).loc[lim.index]
        pd.testing.assert_frame_equal(lim, ref)


def test_validation_is_scored_once_and_val_limit_samples_it(tmp_path, monkeypatch):
    tiny = str(make_tiny_bert(tmp_path / "tiny"))
    split = Split(synthetic_jobs(64, 0), synthetic_jobs(48, 1), synthetic_jobs(16, 2), kind="run",
                  description="synthetic")
    calls: list[int] = []
    real = SFTDetector.score

    def counted(self, items):
        calls.append(len(items))
        return real(self, items)

    monkeypatch.setattr(SFTDetector, "score", counted)
    cfg = SFTRunConfig(data=DataConfig(spec="flowbench:not-loaded"), out=str(tmp_path / "run"),
                       sft=SFTConfig(model=tiny, max_length=48, epochs=1, batch_size=16, freeze="none",
                                     early_stopping_patience=0, progress=False, logging_steps=1000, val_limit=20,
                                     collapse_retry=False))
    res = run_sft(cfg, split=split)
    det = res.details["detector"]
    assert calls == [16]  # test only: the threshold reused the training's own evaluation of validation
    assert det.train_info_["validation_scores_from"] == "best evaluation"
    assert det.train_info_["validation_rows"] == 20 and res.metrics["validation"]["n"] == 20
    # the reused scores are the final model's scores of the seeded validation sample
    from llmad.detectors.sft.training import validation_rows

    val = validation_rows(split.validation, cfg.sft)
    assert len(val) == 20 and set(val["job_id"]) < set(split.validation["job_id"])
    np.testing.assert_allclose(det.validation_scores_, real(det, val), atol=1e-5)
