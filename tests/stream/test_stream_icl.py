"""A saved ICL model replays a Flow-Bench run: ``llmad.api.replay`` opens it through the detector registry and
the replay scores it through ``Detector.score`` (a tiny random decoder saved in the test; no download)."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from icl_fixtures import smol_tokenizer, tiny_llama  # noqa: F401 (smol_tokenizer is a fixture)

from llmad.api.replay import open_detector, run_replay
from llmad.detectors.icl.config import ICLConfig
from llmad.detectors.icl.detector import ICLDetector
from llmad.stream import StreamConfig, iter_runs, list_run_members


@pytest.fixture
def icl_dir(smol_tokenizer, tiny_zip, tmp_path):
    """An ICL detector (2 shots, validation threshold) fitted on synthetic runs and saved with its base model."""
    lm = tiny_llama(smol_tokenizer, path=tmp_path / "base")
    ids = [m[0] for m in list_run_members(str(tiny_zip))]
    train = pd.concat(iter_runs(str(tiny_zip), run_ids=ids[:4]), ignore_index=True)
    val = pd.concat(iter_runs(str(tiny_zip), run_ids=ids[4:6]), ignore_index=True)
    cfg = ICLConfig(model=str(tmp_path / "base"), shots=2, order="fixed", batch_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = ICLDetector(config=cfg).fit(train, val, lm=lm)
    det.save(tmp_path / "icl")
    return tmp_path / "icl"


def test_icl_model_replays_a_flowbench_run(icl_dir, tiny_zip, tmp_path):
    det = open_detector(str(icl_dir))
    assert isinstance(det, ICLDetector) and det.threshold_ is not None
    res = run_replay(str(icl_dir), str(tiny_zip), StreamConfig(), split="none", runs=1, seed=0,
                     out=tmp_path / "replay")
    m = json.loads((tmp_path / "replay" / "metrics.json").read_text())
    assert m["mode"] == "events" and m["runs"] == 1 and m["jobs"] == 12
    assert m["throughput"]["by_text"] is False and m["throughput"]["model_rows"] > 0
    pred = res.predictions
    assert len(pred) == 12 and (pred["observations"] > 0).all() and np.isfinite(pred["final_score"]).all()
    assert res.details["threshold"] == pytest.approx(det.threshold_)
    cfg = json.loads((tmp_path / "replay" / "config.json").read_text())
    assert cfg["model"] == str(icl_dir)
    # At a job's last event every field it renders is known: the replay's last score is the job's full score.
    run = next(iter_runs(str(tiny_zip), run_ids=[pred["run_id"].iloc[0]]))
    full = det.score(run)
    np.testing.assert_allclose(pred["final_score"].to_numpy(), full, atol=1e-4)
