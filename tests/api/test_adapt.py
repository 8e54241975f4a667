"""``llmad adapt``: the k-run protocol on three tiny synthetic workflows (tiny BERT, real code paths)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from conftest import make_run_frame, make_tiny_bert, write_zip  # noqa: E402

from llmad.api.adapt import AdaptConfig, run_adapt, summarize, supports  # noqa: E402
from llmad.errors import LlmadError  # noqa: E402


@pytest.fixture(scope="module")
def three_workflows(tmp_path_factory) -> Path:
    """Three 14-run workflows (jobs on worker1 slow and labeled in 2 of 3 runs), differently scaled runtimes."""
    base = tmp_path_factory.mktemp("adapt-data")
    (base / "flowbench").mkdir()
    for i, wf in enumerate(("wfa", "wfb", "wfc")):
        frames = {}
        for r in range(1, 15):
            f = make_run_frame(r, n_jobs=12, anomalous_host=None if r % 3 == 0 else "worker1", seed=10 * i)
            f[["runtime", "kickstart_executables_cpu_time"]] *= 1 + i  # a different scale per workflow
            frames[f"{wf}-run{r:04d}"] = f
        write_zip(base / "flowbench" / f"{wf}.zip", frames)
    return base


@pytest.fixture(scope="module")
def adapted(three_workflows, tmp_path_factory):
    work = tmp_path_factory.mktemp("adapt-run")
    bert = make_tiny_bert(work / "tiny-bert")
    cfg = AdaptConfig(target="wfc", shots="0,1,2", source_jobs=80, shot_jobs=40, full_jobs=80, unlabeled_jobs=60,
                      limit=40, model=str(bert), epochs=1, episodes=30, data_dir=str(three_workflows),
                      out=str(work / "out"))
    return cfg, run_adapt(cfg)


def test_every_method_at_every_k_with_the_rate_rule(adapted):
    cfg, res = adapted
    rows = res.metrics["rows"]
    got = {(r["method"], r["k"]) for r in rows}
    assert got == {(m, k) for m in ("scratch", "transfer", "proto", "trees") for k in (0, 1, 2, "full")}
    applicable = {(r["method"], r["k"]) for r in rows if r["applicable"]}
    # scratch and trees have nothing to learn from without labeled target runs
    assert ("scratch", 0) not in applicable and ("trees", 0) not in applicable
    assert {("transfer", 0), ("proto", 0), ("proto", "full"), ("trees", "full")} <= applicable
    for r in rows:
        if r["applicable"]:
            assert r["threshold_rule"] == "rate" and 0 < r["rate"] < 1 and r["adapt_s"] > 0
            assert 0 <= r["f1"] <= 1
    assert res.metrics["sources"] == ["wfa", "wfb"] and res.metrics["split"] == "run"
    # the shrunk rate: with no labeled target job it is the sources' own anomaly share
    r0 = next(r for r in rows if r["method"] == "proto" and r["k"] == 0)
    assert r0["rate"] == pytest.approx(res.metrics["source_prior_rate"], abs=1e-4)


def test_supports_are_nested_runs_and_full_is_the_reference(adapted):
    cfg, res = adapted
    rows = {(r["method"], r["k"]): r for r in res.metrics["rows"]}
    assert rows[("proto", 1)]["support_jobs"] <= rows[("proto", 2)]["support_jobs"] <= rows[("proto", "full")][
        "support_jobs"]
    s = res.metrics["summary"]["methods"]["proto"]
    assert s["gap_k2"] == pytest.approx(s["f1_full"] - s["f1_k2"])
    assert "speedup_vs_transfer" in res.metrics["summary"]
    train = pd.DataFrame({"run_id": np.repeat([f"r{i}" for i in range(6)], 5), "label": 0})
    sup = supports(train, [1, 2, 5], cap=100, seed=3)
    assert set(sup[1]["run_id"]) < set(sup[2]["run_id"]) < set(sup[5]["run_id"])
    with pytest.raises(LlmadError, match="only 6 runs"):
        supports(train, [7], cap=100, seed=3)


def test_outputs_and_the_saved_proto_detector(adapted):
    import llmad.detectors

    cfg, res = adapted
    out = Path(cfg.out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["summary"] == json.loads(json.dumps(res.metrics["summary"]))
    preds = pd.read_csv(out / "predictions.csv")
    assert {"method", "k", "score", "prediction", "label"} <= set(preds.columns)
    det = llmad.detectors.load(out / "models" / "proto-k2")
    mine = preds[(preds["method"] == "proto") & (preds["k"].astype(str) == "2")]
    from llmad.data import load_split
    from llmad.data.splits import subsample

    test = subsample(load_split("flowbench:wfc", split="run", data_dir=cfg.data_dir, context=True).part("test"),
                     cfg.limit, cfg.seed)
    np.testing.assert_allclose(det.score(test), mine["score"].to_numpy(), rtol=1e-5, atol=1e-6)
    assert det.threshold_rule_ == "rate"


def test_summary_time_to_95_percent():
    rows = [{"method": "m", "k": 0, "applicable": True, "f1": 0.5, "adapt_s": 1.0},
            {"method": "m", "k": 2, "applicable": True, "f1": 0.78, "adapt_s": 5.0},
            {"method": "m", "k": 5, "applicable": True, "f1": 0.8, "adapt_s": 9.0},
            {"method": "m", "k": "full", "applicable": True, "f1": 0.8, "adapt_s": 30.0}]
    s = summarize(rows)["methods"]["m"]
    assert s["k95"] == 2 and s["t95_s"] == 5.0 and s["gap_k2"] == pytest.approx(0.02)
    weak = [{**r, "method": "w", "f1": r["f1"] / 2, "adapt_s": r["adapt_s"] * 3} for r in rows]
    both = summarize(rows + weak)
    # the weak method reaches 95% of its own (poor) full F1 early, but never the common bar
    assert both["methods"]["w"]["k95"] == 2 and both["methods"]["w"]["t_common_s"] is None
    assert both["common_bar_f1"] == pytest.approx(0.76) and both["methods"]["m"]["t_common_s"] == 5.0


@pytest.mark.parametrize("kw, match", [({"methods": "proto,magic"}, "--methods"), ({"shots": "1,x"}, "--shots"),
                                       ({"target": "nope"}, "--target"), ({"sources": "wfa"}, "--sources"),
                                       ({"tree": "svm"}, "--tree")])
def test_bad_options_fail_with_one_line(three_workflows, tmp_path, kw, match):
    cfg = AdaptConfig(**{"target": "wfc", "data_dir": str(three_workflows), "out": str(tmp_path / "o"), **kw})
    with pytest.raises(LlmadError, match=match):
        run_adapt(cfg)


def test_cli_bad_method_exits_2(tmp_path, capsys):
    from llmad.cli import main

    with pytest.raises(SystemExit) as e:
        main(["adapt", "--methods", "finetune", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--methods" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_transfer_from_a_saved_source_model(adapted, tmp_path):
    from dataclasses import replace

    cfg, res = adapted
    again = run_adapt(replace(cfg, methods="transfer", shots="0", source_model=str(Path(cfg.out) / "source_sft"),
                              out=str(tmp_path / "o")))
    first = next(r for r in res.metrics["rows"] if r["method"] == "transfer" and r["k"] == 0)
    mine = next(r for r in again.metrics["rows"] if r["k"] == 0)
    assert mine["roc_auc"] == pytest.approx(first["roc_auc"]) and mine["source_s"] < 5
    assert not (tmp_path / "o" / "source_sft").exists()  # nothing trained on the sources this time


def test_source_lm_accepts_sft_runs_and_stacks(tmp_path):
    from llmad.api.adapt import source_lm
    from llmad.detectors.base import write_detector_json

    (tmp_path / "run" / "model").mkdir(parents=True)
    write_detector_json(tmp_path / "run" / "model", "sft", {})
    assert source_lm(str(tmp_path / "run")) == str(tmp_path / "run" / "model")
    (tmp_path / "stack").mkdir()
    write_detector_json(tmp_path / "stack", "fusion-stack", {})
    assert source_lm(str(tmp_path / "stack")) == str(tmp_path / "stack" / "lm")
    (tmp_path / "rf").mkdir()
    write_detector_json(tmp_path / "rf", "baseline", {})
    with pytest.raises(LlmadError, match="--source-model"):
        source_lm(str(tmp_path / "rf"))


def test_the_adapted_proto_detector_replays(adapted, tmp_path):
    from llmad.api.replay import run_replay
    from llmad.stream.config import StreamConfig

    cfg, res = adapted
    zip_path = Path(cfg.data_dir) / "flowbench" / "wfc.zip"
    rep = run_replay(str(Path(cfg.out) / "models" / "proto-k2"), str(zip_path), StreamConfig(), split="run",
                     out=tmp_path / "r")
    preds = rep.predictions
    assert len(preds) and np.isfinite(preds["max_score"]).all()
    assert rep.metrics["anomalous_jobs"] > 0
