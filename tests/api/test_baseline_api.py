"""``llmad.api.baseline.run_baseline`` and ``llmad.api.numeric.run_numeric`` as a notebook calls them: a RunResult,
an already-loaded split, seeded per-part limits."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from llmad.api.baseline import run_baseline
from llmad.api.result import RunResult
from llmad.config import DataConfig
from llmad.detectors.baselines import BaselineConfig


def test_run_baseline_returns_a_run_result_and_writes_the_folder(tiny_zip, tmp_path, capsys):
    data = DataConfig(spec=str(tiny_zip), split="run", seed=0)
    res = run_baseline(data, BaselineConfig(method="rf", n_estimators=20), out=tmp_path / "run")
    assert isinstance(res, RunResult) and res.out_dir == tmp_path / "run"
    assert capsys.readouterr().out == ""  # the CLI prints res.summary, the API does not
    assert res.summary.startswith("rf/plain on ") and res.summary.endswith(f"-> {tmp_path / 'run'}")
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["f1"] == pytest.approx(res.metrics["f1"]) and on_disk["method"] == "rf-plain"
    assert {"accuracy", "f1", "roc_auc", "split", "split_info", "fit_seconds", "latency_ms_per_job"} <= set(on_disk)
    preds = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert list(preds.columns[-2:]) == ["score", "prediction"] and len(preds) == len(res.predictions)
    assert (res.predictions["prediction"] == (res.predictions["score"] >= res.details["threshold"])).all()
    assert (tmp_path / "run" / res.artifacts["model"] / "detector.json").is_file()


def test_run_baseline_takes_a_loaded_split_and_limits(tiny_zip, tmp_path):
    from llmad.data import load_split
    from llmad.data.splits import subsample

    data = DataConfig(spec=str(tiny_zip), split="run", seed=3)
    split = load_split(data.spec, split="run", seed=3)
    cfg = BaselineConfig(method="hgb", features="context", n_estimators=10)
    full = run_baseline(data, cfg, out=tmp_path / "a", split=split)
    again = run_baseline(data, cfg, out=tmp_path / "b")
    np.testing.assert_array_equal(full.predictions["score"], again.predictions["score"])
    small = run_baseline(data, cfg, out=tmp_path / "c", split=split, limits={"train": 60, "validation": 20,
                                                                            "test": 15})
    assert len(small.predictions) == 15 and small.details["n_train"] == 60 and small.details["n_validation"] == 20
    expect = subsample(split.test, 15, 3)
    assert list(small.predictions["job_id"]) == list(expect["job_id"])


@pytest.mark.integration
def test_run_numeric_on_a_loaded_split_equals_loading_it(tmp_path):
    from llmad.api.numeric import NumericConfig, load_split, run_numeric

    cfg = NumericConfig(method="iforest", data="asd:omi-1", shots=100, n_estimators=20, window=32, stride=32)
    a = run_numeric(cfg)
    b = run_numeric(cfg, split=load_split(cfg))
    assert a.out_dir is None and a.artifacts == {} and a.summary.startswith("iforest on asd:omi-1: F1 ")
    from llmad.io import to_jsonable  # NaN -> None, so equal reports compare equal

    assert to_jsonable(a.metrics["test"]) == to_jsonable(b.metrics["test"])
    assert a.metrics["threshold"] == b.metrics["threshold"]
    assert list(a.predictions.columns) == ["series", "point", "label", "score", "prediction", "event"]
    pd.testing.assert_frame_equal(a.predictions, b.predictions)
