"""Acceptance (issue 12): an ICL model replays a real Flow-Bench run. A tiny random Llama (SmolLM2's tokenizer and
chat template) is fitted on real 1000genome train jobs, saved, and replayed by ``llmad.api.replay.run_replay`` on
one test run of ../shared/data; the synthetic-run twin is ``test_stream_icl.py``."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from icl_fixtures import smol_tokenizer, tiny_llama  # noqa: F401 (smol_tokenizer is a fixture)

from llmad.api.replay import run_replay
from llmad.data.splits import make_split, subsample
from llmad.detectors import load_detector
from llmad.detectors.icl.config import ICLConfig
from llmad.detectors.icl.detector import ICLDetector
from llmad.stream import StreamConfig, iter_runs


@pytest.mark.integration
def test_icl_model_replays_a_real_flowbench_run(smol_tokenizer, genome_jobs, real_data_dir, tmp_path):
    split = make_split(genome_jobs, kind="run", seed=0)
    train, val = subsample(split.train, 40, 0), subsample(split.validation, 16, 0)
    lm = tiny_llama(smol_tokenizer, path=tmp_path / "base")
    cfg = ICLConfig(model=str(tmp_path / "base"), shots=2, select="balanced", batch_size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = ICLDetector(config=cfg).fit(train, val, lm=lm)
    det.save(tmp_path / "icl")
    assert json.loads((tmp_path / "icl" / "detector.json").read_text())["kind"] == "icl"

    res = run_replay(str(tmp_path / "icl"), "flowbench:1000genome", StreamConfig(), split="run", part="test",
                     runs=1, seed=0, data_dir=real_data_dir, out=tmp_path / "replay")
    m = json.loads((tmp_path / "replay" / "metrics.json").read_text())
    assert m["mode"] == "events" and m["runs"] == 1
    assert m["throughput"]["model_rows"] > 0 and m["throughput"]["events"] > 0
    pred = res.predictions
    run_id = pred["run_id"].iloc[0]
    assert pred["run_id"].nunique() == 1 and split.test["run_id"].eq(run_id).any()  # a test run, not a train one
    assert m["jobs"] == len(pred) and (pred["observations"] > 0).all()
    assert np.isfinite(pred["final_score"]).all()
    assert res.details["threshold"] == pytest.approx(det.threshold_)
    # Every rendered field is known at a job's last event: the replay's last score is the job's offline score.
    run = next(iter_runs("flowbench:1000genome", real_data_dir, run_ids=[run_id]))
    offline = load_detector(tmp_path / "icl").score(run)
    order = run.set_index("job_id").index.get_indexer(pred["job_id"])
    assert (order >= 0).all()
    np.testing.assert_allclose(pred["final_score"].to_numpy(), offline[order], atol=1e-4)
