"""Item 1 of issue 17: a collapsed SFT run is named ("collapsed"), recorded in metrics.json and, by default,
retrained once with the fallback recipe (lower lr + balanced class weight); both attempts are recorded."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from llmad.api.sft import SFTRunConfig, run_sft
from llmad.config import DataConfig
from llmad.data.splits import Split
from llmad.detectors.sft.collapse import FALLBACK_LR, collapse_reason
from llmad.detectors.sft.config import SFTConfig
from llmad.errors import LlmadWarning

from conftest import make_tiny_bert, synthetic_jobs


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(make_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert"))


def _split():
    return Split(synthetic_jobs(64, 0), synthetic_jobs(48, 1), synthetic_jobs(16, 2), kind="run",
                 description="synthetic")


def _run(tmp_path, tiny, name, **kw):
    cfg = SFTRunConfig(data=DataConfig(spec="flowbench:not-loaded"), out=str(tmp_path / name),
                       sft=SFTConfig(model=tiny, max_length=48, epochs=1, batch_size=16, freeze="none",
                                     early_stopping_patience=0, progress=False, logging_steps=1000, **kw))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = run_sft(cfg, split=_split())
    named = [str(w.message) for w in caught if issubclass(w.category, LlmadWarning)]
    return res, named, json.loads((tmp_path / name / "metrics.json").read_text())


def test_collapse_reason_names_chance_ranking_and_one_class_predictions():
    y = np.array([0] * 70 + [1] * 30)
    good = y + np.linspace(0, 0.5, 100)
    assert collapse_reason(y, good, 0.9) is None
    assert "ROC-AUC" in collapse_reason(y, 1 - good, 0.5)
    assert "predicted anomalous" in collapse_reason(y, good, -1.0)  # every job flagged, 30% are anomalous
    assert "not finite" in collapse_reason(y, np.where(y, np.nan, 0.1), 0.5)
    rare = np.array([0] * 99 + [1])  # 1% anomalous: flagging ~1% is no collapse
    assert collapse_reason(rare, rare + np.linspace(0, 0.1, 100), 0.9) is None


def test_a_diverged_run_is_named_recorded_and_retrained_once(tmp_path, tiny_model):
    res, named, metrics = _run(tmp_path, tiny_model, "diverged", lr=1.0)
    col = metrics["collapse"]
    assert col["detected"] and col["retried"] and col["reason"]
    assert sum("collapsed" in m for m in named) == 1 and "retrying once" in named[0]
    first, second = col["attempts"]
    assert first["attempt"] == 1 and first["collapsed"] and first["lr"] == 1.0 and first["class_weight"] == "balanced"
    assert second["attempt"] == 2 and second["lr"] == FALLBACK_LR and second["class_weight"] == "balanced"
    kept = res.details["detector"]
    assert col["used_attempt"] in (1, 2) and kept.config.lr == col["attempts"][col["used_attempt"] - 1]["lr"]
    if not second["collapsed"]:
        assert col["used_attempt"] == 2
    saved = json.loads((tmp_path / "diverged" / "model" / "detector.json").read_text())
    assert saved["config"]["lr"] == kept.config.lr and metrics["threshold"] == pytest.approx(kept.threshold_)
    assert f"attempt {col['used_attempt']} of 2 kept" in res.summary
    assert not (tmp_path / "diverged" / "retry").exists()  # retry checkpoints go with the others


def test_no_collapse_retry_keeps_the_run_and_says_so(tmp_path, tiny_model):
    res, named, metrics = _run(tmp_path, tiny_model, "kept", lr=1.0, collapse_retry=False)
    col = metrics["collapse"]
    assert col["detected"] and not col["retried"] and len(col["attempts"]) == 1 and col["used_attempt"] == 1
    assert len(named) == 1 and "collapsed" in named[0] and "kept as is" in named[0]
    assert res.details["detector"].config.lr == 1.0 and "training collapsed" in res.summary


def test_a_max_steps_smoke_run_is_recorded_not_retried(tmp_path, tiny_model):
    res, named, metrics = _run(tmp_path, tiny_model, "smoke", lr=1.0, max_steps=4)
    assert metrics["collapse"]["detected"] and not metrics["collapse"]["retried"] and not named
    assert "training collapsed" in res.summary
