"""Item 3 of issue 17: ``llmad sft --fusion stack``. Every train row's LM score is cross-fitted (K folds by run: never
from an LM that trained on that row); the stack saves, loads, and ``llmad predict`` / ``llmad replay`` open it."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import llmad.detectors
from llmad.api.predict import run_predict
from llmad.api.replay import run_replay
from llmad.api.sft import SFTRunConfig, run_sft
from llmad.config import DataConfig
from llmad.data.splits import Split
from llmad.detectors.fusion.config import StackConfig
from llmad.detectors.sft.config import SFTConfig
from llmad.detectors.sft.detector import SFTDetector
from llmad.errors import LlmadError
from llmad.stream import StreamConfig

from conftest import make_tiny_bert, synthetic_jobs


def _sft(tiny: str, **kw) -> SFTConfig:
    return SFTConfig(model=tiny, max_length=48, epochs=1, lr=3e-3, batch_size=32, freeze="none",
                     early_stopping_patience=0, progress=False, logging_steps=1000, **kw)


def _keys(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["run_id"].astype(str), frame["job_id"].astype(str)))


def test_stack_cross_fits_by_run_and_reopens(tmp_path, monkeypatch):
    tiny = str(make_tiny_bert(tmp_path / "tiny"))
    train = synthetic_jobs(120, 0, jobs_per_run=20)  # 6 runs
    val, test = (synthetic_jobs(40, i).assign(run_id=lambda d, p=p: p + d["run_id"]) for i, p in ((1, "v"), (2, "t")))
    split = Split(train, val, test, kind="run", description="synthetic")
    trained: dict[int, set] = {}
    scored: dict[int, set] = {}
    fit, score = SFTDetector.fit, SFTDetector.score

    def spy_fit(self, tr, *a, **kw):
        trained[id(self)] = _keys(tr)
        return fit(self, tr, *a, **kw)

    def spy_score(self, items):
        scored.setdefault(id(self), set()).update(_keys(items) & _keys(train))
        return score(self, items)

    monkeypatch.setattr(SFTDetector, "fit", spy_fit)
    monkeypatch.setattr(SFTDetector, "score", spy_score)
    cfg = SFTRunConfig(data=DataConfig(spec="flowbench:not-loaded"), out=str(tmp_path / "run"), sft=_sft(tiny),
                       fusion="stack", stack=StackConfig(folds=3, test_lm="full"))
    res = run_sft(cfg, split=split)
    det = res.details["detector"]
    folds = [i for i in trained if i != id(det.lm_)]
    assert len(folds) == 3 and trained[id(det.lm_)] == _keys(train)  # the kept LM: all train rows
    held = [scored.get(i, set()) for i in folds]
    for i, h in zip(folds, held):
        assert h and not (h & trained[i]), "a train row was scored by an LM that trained on it"
        assert {r for r, _ in h}.isdisjoint({r for r, _ in trained[i]}), "a run was split across folds"
    assert set().union(*held) == _keys(train) and not scored.get(id(det.lm_), set())
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["method"] == "fusion-stack" and len(m["fusion"]["folds"]) == 3
    # auto: rf and hgb, each on plain and on context features, the best on validation kept (and named)
    assert set(m["fusion"]["tree_validation"]) == {"rf-plain", "rf-context", "hgb-plain", "hgb-context"}
    assert m["fusion"]["tree"] == max(m["fusion"]["tree_validation"], key=m["fusion"]["tree_validation"].get)
    assert ("ctx_runtime_rel" in m["fusion"]["features"]) == m["fusion"]["tree"].endswith("context")
    assert res.summary.startswith("fusion stack") and not (tmp_path / "run" / "checkpoints").exists()
    # every LM score the tree read, keyed by part: train's are the cross-fitted ones
    lm_scores = pd.read_csv(tmp_path / "run" / "lm_scores.csv")
    assert lm_scores["part"].value_counts().to_dict() == {"train": 120, "validation": 40, "test": 40}
    np.testing.assert_allclose(lm_scores.query("part == 'train'")["lm_score"], det.train_lm_scores_, rtol=1e-6)
    assert lm_scores["lm_score"].notna().all()
    again = llmad.detectors.load(tmp_path / "run")
    monkeypatch.setattr(SFTDetector, "score", score)
    np.testing.assert_array_equal(again.score(split.test), res.predictions["score"].to_numpy())
    assert again.threshold_ == det.threshold_


def test_stack_from_the_data_path_predicts_and_replays(tiny_zip, tmp_path):
    tiny = str(make_tiny_bert(tmp_path / "tiny"))
    cfg = SFTRunConfig(data=DataConfig(spec=str(tiny_zip), split="run"), out=str(tmp_path / "run"),
                       sft=_sft(tiny), fusion="stack", stack=StackConfig(folds=2, tree="auto"))
    res = run_sft(cfg)
    model = tmp_path / "run" / "model"
    pred = run_predict(model, str(tiny_zip), split="run", part="test", out=tmp_path / "p", printer=lambda _: None)
    assert pred.metrics["method"] == "fusion-stack"
    np.testing.assert_allclose(pred.predictions["score"].to_numpy(), res.predictions["score"].to_numpy())
    rep = run_replay(str(model), str(tiny_zip), StreamConfig(), split="run", out=tmp_path / "r")
    assert len(rep.predictions) == len(res.predictions) and rep.metrics


def test_unknown_fusion_is_a_one_line_error(tmp_path):
    cfg = SFTRunConfig(data=DataConfig(spec="flowbench:not-loaded"), out=str(tmp_path / "x"), fusion="concat")
    with pytest.raises(LlmadError, match="--fusion 'concat'"):
        run_sft(cfg)


def test_stack_chooses_and_thresholds_on_every_validation_row(tmp_path):
    """``val_limit`` shortens the LMs' evaluation passes only: the tree's choice and threshold read all validation
    rows, and the full LM's scores reused from its own evaluation sit on the right rows."""
    from llmad.detectors.fusion.stack import StackDetector

    tiny = str(make_tiny_bert(tmp_path / "tiny"))
    train = synthetic_jobs(120, 0, jobs_per_run=20)
    val = synthetic_jobs(60, 1).assign(run_id=lambda d: "v" + d["run_id"])
    det = StackDetector(_sft(tiny, val_limit=25), folds=2, tree="hgb", n_estimators=30)
    det.fit(train, val, printer=lambda _: None)
    assert len(det.validation_scores_) == len(val) and len(det.lm_.validation_scores_) == 25
    np.testing.assert_allclose(det.validation_scores_, det.score(val), atol=1e-4)


def test_stack_scored_by_the_fold_lms_mean_trains_no_full_lm_and_reopens(tmp_path, monkeypatch):
    """``test_lm: folds``: K LMs in all (none on every train row); validation and test read the fold LMs' mean, and
    the saved detector keeps all K and scores the same."""
    from llmad.detectors.fusion.stack import StackDetector

    tiny = str(make_tiny_bert(tmp_path / "tiny"))
    train = synthetic_jobs(120, 0, jobs_per_run=20)
    val, test = (synthetic_jobs(40, i).assign(run_id=lambda d, p=p: p + d["run_id"]) for i, p in ((1, "v"), (2, "t")))
    sizes: list[int] = []
    fit = SFTDetector.fit

    def spy_fit(self, tr, *a, **kw):
        sizes.append(len(tr))
        return fit(self, tr, *a, **kw)

    monkeypatch.setattr(SFTDetector, "fit", spy_fit)
    det = StackDetector(_sft(tiny), folds=3, tree="hgb", n_estimators=30, test_lm="folds")
    det.fit(train, val, printer=lambda _: None)
    assert len(sizes) == 3 and max(sizes) < len(train) and len(det.lms_) == 3
    mean = np.mean([lm.score(test) for lm in det.lms_], axis=0)
    lm, final = det.score_parts(test)
    np.testing.assert_allclose(lm, mean, atol=1e-6)
    np.testing.assert_allclose(final, det.tree_.predict_proba(det._x(test, mean))[:, 1], atol=1e-6)
    assert det.train_info_["test_lm"] == "folds" and 0.0 <= det.lm_threshold_ <= 1.0
    det.save(tmp_path / "m")
    again = llmad.detectors.load(tmp_path / "m")
    assert again.test_lm == "folds" and len(again.lms_) == 3 and again.lm_threshold_ == det.lm_threshold_
    np.testing.assert_allclose(again.score(test), final, atol=1e-5)


def test_unknown_test_lm_is_refused_before_training():
    with pytest.raises(LlmadError, match="test_lm 'mean'"):
        StackConfig(test_lm="mean").check()
