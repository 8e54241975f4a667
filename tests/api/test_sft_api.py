"""``llmad.api.sft.run_sft`` from Python: a passed split is used as is (no reload), the RunResult carries what
metrics.json and predictions.csv hold, the fitted detector, and the summary line the CLI prints."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from llmad.api.hooks import RunHooks
from llmad.api.result import RunResult
from llmad.api.sft import SFTRunConfig, run_sft
from llmad.config import DataConfig
from llmad.data.splits import Split
from llmad.detectors.sft.config import SFTConfig

from conftest import make_tiny_bert, synthetic_jobs


def test_run_sft_on_a_given_split_returns_a_run_result(tmp_path):
    tiny = str(make_tiny_bert(tmp_path / "tiny"))
    split = Split(synthetic_jobs(64, 0), synthetic_jobs(32, 1), synthetic_jobs(32, 2), kind="run",
                  description="synthetic")
    cfg = SFTRunConfig(data=DataConfig(spec="flowbench:not-loaded"), out=str(tmp_path / "run"),
                       sft=SFTConfig(model=tiny, max_length=48, epochs=1, batch_size=16, freeze="none",
                                     early_stopping_patience=0, progress=False, logging_steps=1000))
    logged, stages = [], []
    res = run_sft(cfg, split=split, hooks=RunHooks(log=logged.append, stage=lambda t, n=None: stages.append(t)))
    assert isinstance(res, RunResult) and res.out_dir == tmp_path / "run"
    assert res.metrics == json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert res.metrics["sizes"] == {"train": 64, "validation": 32, "test": 32}
    pd.testing.assert_frame_equal(res.predictions, pd.read_csv(tmp_path / "run" / "predictions.csv"),
                                  check_dtype=False)
    assert res.details["paused"] is False and res.details["train_info"]["steps"] == 4
    det = res.details["detector"]
    assert np.array_equal(det.score(split.test), res.predictions["score"].to_numpy())
    assert res.summary.startswith(f"sft {tiny} [compact]") and res.summary not in logged  # the CLI prints it
    assert any(line.startswith("data flowbench:not-loaded: synthetic") for line in logged)
    assert stages and not any("loading" in s for s in stages)  # the given split is not reloaded
    assert (tmp_path / "run" / res.artifacts["model"] / "detector.json").is_file()
    # printer= is the older name of hooks.log
    cfg.out = str(tmp_path / "run2")
    lines = []
    res2 = run_sft(cfg, split=split, printer=lines.append)
    assert lines and np.array_equal(res2.predictions["score"], res.predictions["score"])
