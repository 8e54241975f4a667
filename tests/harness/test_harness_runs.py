"""`llmad compare` runs: caching, failures and resume, the leakage guard, numeric methods."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from llmad.errors import LlmadError
from llmad.harness import compare
from llmad.harness.adapters import ADAPTERS, adapter_baseline
from llmad.harness.guard import LeakageError, LeakageGuard, job_keys



def test_second_run_is_cached_and_gives_the_identical_table(toy_zip, tmp_path, toy_recipe):
    out = tmp_path / "out"
    first = compare(toy_recipe(toy_zip), out=out, quiet=True)
    assert {s["status"] for s in first["status"]} == {"done"} and len(first["status"]) == 8
    files = {n: (out / n).read_bytes() for n in ("results.md", "results.csv", "results.json")}
    table = pd.read_csv(out / "results.csv")
    assert list(table["method"]) == ["rf-plain", "hgb-context", "knn-plain [train_limit=30]",
                                     "knn-plain [train_limit=80]"]
    assert (table["seeds"] == 2).all() and table["strong_baseline"].tolist() == [True, True, False, False]
    assert ((table["f1_ci_low"] <= table["f1_mean"] + 1e-9) & (table["f1_mean"] <= table["f1_ci_high"] + 1e-9)).all()
    for d in (out / "runs").iterdir():
        assert {"run.json", "metrics.json", "predictions.csv", "provenance.json"} <= {p.name for p in d.iterdir()}
        prov = json.loads((d / "provenance.json").read_text())
        assert prov["config_hash"] == d.name and prov["leakage_guard"]["checked"] and "versions" in prov

    stamps = {d.name: (d / "metrics.json").stat().st_mtime_ns for d in (out / "runs").iterdir()}
    again = compare(toy_recipe(toy_zip), out=out, quiet=True)
    assert {s["status"] for s in again["status"]} == {"cached"}
    assert {d.name: (d / "metrics.json").stat().st_mtime_ns for d in (out / "runs").iterdir()} == stamps
    assert {n: (out / n).read_bytes() for n in files} == files

    # Changing one method's config reruns that method only.
    third = compare(toy_recipe(toy_zip), out=out, quiet=True,
                    overrides=["methods.rf-plain.config.n_estimators=16"])
    ran = {(s["method"], s["status"]) for s in third["status"]}
    assert ("rf-plain", "done") in ran and all(st == "cached" for m, st in ran if m != "rf-plain")


def test_failed_run_is_reported_the_rest_continue_and_resume_finishes(toy_zip, tmp_path, toy_recipe):
    out = tmp_path / "out"
    calls = {"n": 0}

    def flaky(ctx):
        if ctx.spec.method == "hgb-context" and ctx.spec.seed == 1:
            calls["n"] += 1
            raise RuntimeError("simulated crash")
        return adapter_baseline(ctx)

    rep = compare(toy_recipe(toy_zip), out=out, quiet=True, adapters={**ADAPTERS, "baseline": flaky})
    st = {(s["method"], s["seed"]): s for s in rep["status"]}
    assert st[("hgb-context", 1)]["status"] == "failed" and "simulated crash" in st[("hgb-context", 1)]["message"]
    assert sum(s["status"] == "done" for s in rep["status"]) == 7
    failed_dir = out / "runs" / st[("hgb-context", 1)]["hash"]
    assert (failed_dir / "error.json").is_file() and not (failed_dir / "metrics.json").exists()
    row = pd.read_csv(out / "results.csv").set_index("method").loc["hgb-context"]
    assert row["seeds"] == 1 and "missing" in row["status"]
    assert "simulated crash" in (out / "report.md").read_text()

    # An interruption (Ctrl-C) mid-run leaves a half-written folder; --resume continues with only what is left.
    def interrupted(ctx):
        (ctx.run_dir / "partial.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compare(toy_recipe(toy_zip), out=out, quiet=True,
                adapters={**ADAPTERS, "baseline": interrupted})
    assert (failed_dir / "partial.txt").is_file()
    done = compare(toy_recipe(toy_zip), out=out, quiet=True, resume=True)
    by = {(s["method"], s["seed"]): s["status"] for s in done["status"]}
    assert by.pop(("hgb-context", 1)) == "done" and set(by.values()) == {"cached"}
    assert (failed_dir / "metrics.json").is_file() and not (failed_dir / "error.json").exists()
    assert pd.read_csv(out / "results.csv").set_index("method").loc["hgb-context", "seeds"] == 2


def test_leakage_guard_refuses_a_run_that_thresholds_on_test(toy_zip, tmp_path, toy_recipe):
    def leaky(ctx):
        if ctx.spec.method != "rf-plain":
            return adapter_baseline(ctx)
        from llmad.detectors.baselines import BaselineDetector

        split = ctx.job_split(context=True)
        ctx.guard.set_test(job_keys(split.test, "test"))
        ctx.guard.use("fit", job_keys(split.train, "train"))
        ctx.guard.use("threshold", job_keys(split.test, "test"))  # the bug the guard exists for
        det = BaselineDetector("rf", n_estimators=5).fit(split.train, split.test)
        raise AssertionError(f"the guard let a leaking run through (threshold {det.threshold_})")

    out = tmp_path / "out"
    rep = compare(toy_recipe(toy_zip, seeds=[0]), out=out, quiet=True,
                  adapters={**ADAPTERS, "baseline": leaky})
    st = {s["method"]: s for s in rep["status"]}
    assert st["rf-plain"]["status"] == "refused" and "test rows" in st["rf-plain"]["message"]
    assert all(s["status"] == "done" for m, s in st.items() if m != "rf-plain")
    refused_dir = out / "runs" / st["rf-plain"]["hash"]
    assert (refused_dir / "refused.json").is_file() and not (refused_dir / "metrics.json").exists()
    assert "refused" in (out / "report.md").read_text()


def test_numeric_methods_on_a_csv_series(tmp_path):
    rng = np.random.default_rng(0)
    n = 1200
    x = rng.normal(0, 1, (n, 3))
    y = np.zeros(n, int)
    for a in (200, 420, 640, 790, 1000, 1110):  # bursts in every part of the 60/20/20 time split
        y[a:a + 25] = 1
        x[a:a + 25] += 4.0
    pd.DataFrame({"cpu": x[:, 0], "mem": x[:, 1], "net": x[:, 2], "label": y}).to_csv(tmp_path / "s.csv", index=False)
    rec = {"name": "num", "datasets": [{"name": "syn", "spec": f"csv:{tmp_path / 's.csv'}"}],
           "methods": [{"method": "numeric", "name": "numeric-iforest",
                        "config": {"method": "iforest", "n_estimators": 30, "window": 32}},
                       {"method": "numeric", "name": "numeric-hgb",
                        "config": {"method": "hgb", "n_estimators": 20, "window": 32}}],
           "report": {"bootstrap": 50, "html": False}}
    rep = compare(rec, out=tmp_path / "o", quiet=True)
    assert [s["status"] for s in rep["status"]] == ["done", "done"]
    table = pd.read_csv(tmp_path / "o" / "results.csv")
    assert table["strong_baseline"].all() and (table["roc_auc_mean"] > 0.8).all()
    run = tmp_path / "o" / "runs" / rep["status"][0]["hash"]
    checked = json.loads((run / "provenance.json").read_text())["leakage_guard"]["checked"]
    assert any("normalisation" in k for k in checked) and any("threshold" in k for k in checked)


def test_guard_checks_series_spans():
    g = LeakageGuard()
    g.set_test_spans([("m1", 100, 200)])
    g.use_spans("normalisation", [("m1", 0, 100), ("m2", 0, 500)])
    with pytest.raises(LeakageError, match="normalisation statistics"):
        g.use_spans("normalisation statistics", [("m1", 150, 160)])
    with pytest.raises(LlmadError, match="declare the test part"):
        LeakageGuard().use("fit", ["a"])


def test_replay_method_runs_through_the_api_with_guarded_runs(toy_zip, tmp_path, toy_recipe):
    rec = toy_recipe(toy_zip, seeds=[0], methods=[
        {"method": "replay", "name": "replay-rf", "source": "baseline:rf-context", "config": {"alert": "threshold"}}])
    res = compare(rec, out=tmp_path / "out", quiet=True)
    assert {s["status"] for s in res["status"]} == {"done"}, res["status"]  # + the strong baselines it adds
    run = next(d for d in (tmp_path / "out" / "runs").iterdir()
               if json.loads((d / "run.json").read_text())["kind"] == "replay")
    preds = pd.read_csv(run / "predictions.csv")
    assert {"key", "run_id", "job_id", "label", "score", "prediction", "alert_before_execute_end"} <= set(preds.columns)
    assert preds["prediction"].isin([0, 1]).all() and preds["key"].is_unique
    guard = json.loads((run / "provenance.json").read_text())["leakage_guard"]["checked"]
    assert any("train runs" in k for k in guard) and any("validation" in k for k in guard)
