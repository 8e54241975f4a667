"""`llmad compare`: recipe parsing, overrides, caching, resume, the leakage guard, and a real end-to-end recipe."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_run_frame, write_zip

from llmad import harness
from llmad.errors import LlmadError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def toy_zip(tmp_path: Path) -> Path:
    """12 synthetic runs (4 normal, 8 with a slow labeled host): every split part holds both classes."""
    frames = {f"toywf-run{r:04d}": make_run_frame(r, anomalous_host=None if r <= 4 else "worker1",
                                                  anomaly="cpu_3" if r % 2 else "hdd_5") for r in range(1, 13)}
    return write_zip(tmp_path / "toywf.zip", frames)


def toy_recipe(zip_path: Path, **extra) -> dict:
    rec = {"name": "toy", "seeds": [0, 1],
           "datasets": [{"name": "toy", "spec": str(zip_path)}],
           "methods": [{"method": "baseline", "name": "rf-plain", "config": {"method": "rf", "n_estimators": 15}},
                       {"method": "baseline", "name": "hgb-context",
                        "config": {"method": "hgb", "features": "context", "n_estimators": 10}},
                       {"method": "baseline", "config": {"method": "knn"}, "sweep": {"train_limit": [30, 80]}}],
           "report": {"bootstrap": 100, "plots": False, "html": False}}
    rec.update(extra)
    return rec


# ------------------------------------------------------------------------------------------------ recipes
def test_recipe_maps_onto_configs_and_unknown_keys_fail(toy_zip):
    rec = harness.load_recipe(toy_recipe(toy_zip))
    assert [m.name for m in rec.methods] == ["rf-plain", "hgb-context", "knn-plain"]
    specs = harness.plan(rec)
    # 2 fixed methods + 2 sweep points, x 2 seeds
    assert len(specs) == 8 and len({s.hash for s in specs}) == 8
    rf = [s for s in specs if s.method == "rf-plain" and s.seed == 1][0]
    assert rf.config["n_estimators"] == 15 and rf.config["seed"] == 1 and rf.data["seed"] == 1
    knn = [s for s in specs if s.method == "knn-plain"]
    assert sorted({s.limits["train"] for s in knn}) == [30, 80]
    assert {s.row for s in knn} == {"knn-plain [train_limit=30]", "knn-plain [train_limit=80]"}

    bad = [({"colour": "red"}, "unknown key"),
           ({"datasets": [{"spec": str(toy_zip), "splt": "run"}]}, "splt"),
           ({"methods": [{"method": "baseline", "config": {"n_trees": 5}}]}, "n_trees"),
           ({"methods": [{"method": "svm"}]}, "svm"),
           ({"methods": [{"method": "baseline", "config": {"seed": 3}}]}, "set by the harness"),
           ({"methods": [{"method": "baseline", "sweep": {"depth": [1, 2]}}]}, "depth"),
           ({"report": {"headline": "auc"}}, "headline"),
           ({"methods": [{"method": "replay", "config": {}}]}, "source")]
    for patch, msg in bad:
        with pytest.raises(LlmadError, match=msg):
            harness.load_recipe(toy_recipe(toy_zip, **patch))


def test_overrides_win_over_the_file(toy_zip, tmp_path):
    path = tmp_path / "r.yaml"
    import yaml

    path.write_text(yaml.safe_dump(toy_recipe(toy_zip)))
    rec = harness.load_recipe(path, ["methods.rf-plain.config.n_estimators=7", "seeds=[3]",
                                     "datasets.toy.limit=50", "report.headline=accuracy",
                                     "methods.knn-plain.sweep.train_limit=[40]"])
    specs = harness.plan(rec)
    assert {s.seed for s in specs} == {3}
    assert [s.config["n_estimators"] for s in specs if s.method == "rf-plain"] == [7]
    assert all(s.data["limit"] == 50 for s in specs) and rec.report.headline == "accuracy"
    assert [s.limits["train"] for s in specs if s.method == "knn-plain"] == [40]
    with pytest.raises(LlmadError, match="no entry named"):
        harness.load_recipe(path, ["methods.nope.config.n_estimators=7"])
    with pytest.raises(LlmadError, match="n_trees"):
        harness.load_recipe(path, ["methods.rf-plain.config.n_trees=7"])
    with pytest.raises(LlmadError, match="key=value"):
        harness.load_recipe(path, ["seeds"])


@pytest.mark.parametrize("name", ["quickstart", "paper", "early_detection", "trainticket", "all", "ci_tiny"])
def test_shipped_recipes_parse_and_plan(name):
    rec = harness.load_recipe(ROOT / "recipes" / f"{name}.yaml")
    harness.add_strong_baselines(rec)
    specs = harness.plan(rec)
    assert specs and len({s.hash for s in specs}) == len(specs)
    jobs = {d.name for d in rec.datasets if d.family == "jobs"}
    for ds in jobs:  # the strong references run on every job dataset
        assert {"rf-plain", "hgb-context"} <= {s.method for s in specs if s.dataset == ds}
    for s in specs:
        if s.kind == "replay" and s.extras["source"] in {m.name for m in rec.methods}:
            assert s.extras["source_hash"] in {u.hash for u in specs if u.kind == "sft"}


def test_published_numbers_are_printed_beside_ours(toy_zip, tmp_path):
    pub = [{"method": "rf-plain", "dataset": "toy", "accuracy": 0.8143, "f1": 0.7212, "source": "paper A"},
           {"method": "rf-plain", "dataset": "toy", "accuracy": 0.5, "source": "paper B"}]
    rec = toy_recipe(toy_zip, seeds=[0], report={"bootstrap": 50, "plots": False, "html": False, "published": pub})
    rec["methods"] = rec["methods"][:2]
    harness.compare(rec, out=tmp_path / "o", quiet=True)
    md = (tmp_path / "o" / "results.md").read_text()
    assert "paper A: accuracy 0.8143, f1 0.7212; paper B: accuracy 0.5" in md
    with pytest.raises(LlmadError, match="published"):
        harness.load_recipe(toy_recipe(toy_zip, report={"published": [{"method": "x", "dataset": "toy", "auc": 1}]}))


def test_strong_baselines_are_always_added(toy_zip):
    rec = harness.load_recipe(toy_recipe(toy_zip, methods=[{"method": "baseline", "config": {"method": "knn"}}]))
    added = harness.add_strong_baselines(rec)
    assert added == ["rf-plain", "hgb-context"]
    assert [m.name for m in rec.methods] == ["knn-plain", "rf-plain", "hgb-context"]


def test_vectorised_bootstrap_equals_the_foundation_ci():
    from llmad.metrics.classification import bootstrap_ci

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 300)
    p = np.where(rng.random(300) < 0.8, y, 1 - y)
    for metric in ("f1", "accuracy", "precision", "recall"):
        reps = harness.bootstrap_replicates(y, p, metric, n_boot=200, seed=4)
        lo, hi = bootstrap_ci(y, p, metric, n_boot=200, seed=4)
        assert np.quantile(reps, 0.025) == pytest.approx(lo) and np.quantile(reps, 0.975) == pytest.approx(hi)


# ------------------------------------------------------------------------------------------------ runs
def test_second_run_is_cached_and_gives_the_identical_table(toy_zip, tmp_path):
    out = tmp_path / "out"
    first = harness.compare(toy_recipe(toy_zip), out=out, quiet=True)
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
    again = harness.compare(toy_recipe(toy_zip), out=out, quiet=True)
    assert {s["status"] for s in again["status"]} == {"cached"}
    assert {d.name: (d / "metrics.json").stat().st_mtime_ns for d in (out / "runs").iterdir()} == stamps
    assert {n: (out / n).read_bytes() for n in files} == files

    # Changing one method's config reruns that method only.
    third = harness.compare(toy_recipe(toy_zip), out=out, quiet=True,
                            overrides=["methods.rf-plain.config.n_estimators=16"])
    ran = {(s["method"], s["status"]) for s in third["status"]}
    assert ("rf-plain", "done") in ran and all(st == "cached" for m, st in ran if m != "rf-plain")


def test_failed_run_is_reported_the_rest_continue_and_resume_finishes(toy_zip, tmp_path):
    out = tmp_path / "out"
    calls = {"n": 0}

    def flaky(ctx):
        if ctx.spec.method == "hgb-context" and ctx.spec.seed == 1:
            calls["n"] += 1
            raise RuntimeError("simulated crash")
        return harness.adapter_baseline(ctx)

    rep = harness.compare(toy_recipe(toy_zip), out=out, quiet=True, adapters={**harness.ADAPTERS, "baseline": flaky})
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
        harness.compare(toy_recipe(toy_zip), out=out, quiet=True,
                        adapters={**harness.ADAPTERS, "baseline": interrupted})
    assert (failed_dir / "partial.txt").is_file()
    done = harness.compare(toy_recipe(toy_zip), out=out, quiet=True, resume=True)
    by = {(s["method"], s["seed"]): s["status"] for s in done["status"]}
    assert by.pop(("hgb-context", 1)) == "done" and set(by.values()) == {"cached"}
    assert (failed_dir / "metrics.json").is_file() and not (failed_dir / "error.json").exists()
    assert pd.read_csv(out / "results.csv").set_index("method").loc["hgb-context", "seeds"] == 2


def test_leakage_guard_refuses_a_run_that_thresholds_on_test(toy_zip, tmp_path):
    def leaky(ctx):
        if ctx.spec.method != "rf-plain":
            return harness.adapter_baseline(ctx)
        from llmad.detectors.baselines import BaselineDetector

        split = ctx.job_split(context=True)
        ctx.guard.set_test(harness.job_keys(split.test, "test"))
        ctx.guard.use("fit", harness.job_keys(split.train, "train"))
        ctx.guard.use("threshold", harness.job_keys(split.test, "test"))  # the bug the guard exists for
        det = BaselineDetector("rf", n_estimators=5).fit(split.train, split.test)
        raise AssertionError(f"the guard let a leaking run through (threshold {det.threshold_})")

    out = tmp_path / "out"
    rep = harness.compare(toy_recipe(toy_zip, seeds=[0]), out=out, quiet=True,
                          adapters={**harness.ADAPTERS, "baseline": leaky})
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
    rep = harness.compare(rec, out=tmp_path / "o", quiet=True)
    assert [s["status"] for s in rep["status"]] == ["done", "done"]
    table = pd.read_csv(tmp_path / "o" / "results.csv")
    assert table["strong_baseline"].all() and (table["roc_auc_mean"] > 0.8).all()
    run = tmp_path / "o" / "runs" / rep["status"][0]["hash"]
    checked = json.loads((run / "provenance.json").read_text())["leakage_guard"]["checked"]
    assert any("normalisation" in k for k in checked) and any("threshold" in k for k in checked)


def test_guard_checks_series_spans():
    g = harness.LeakageGuard()
    g.set_test_spans([("m1", 100, 200)])
    g.use_spans("normalisation", [("m1", 0, 100), ("m2", 0, 500)])
    with pytest.raises(harness.LeakageError, match="normalisation statistics"):
        g.use_spans("normalisation statistics", [("m1", 150, 160)])
    with pytest.raises(LlmadError, match="declare the test part"):
        harness.LeakageGuard().use("fit", ["a"])


def test_cli_compare_with_set_and_outputs(toy_zip, tmp_path):
    import yaml

    from llmad.cli import main

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(toy_recipe(toy_zip, seeds=[0])))
    main(["compare", str(path), "--out", str(tmp_path / "o"), "--quiet", "--set", "report.plots=true",
          "--set", "methods.knn-plain.sweep.train_limit=[20,40,80]"])
    assert len(pd.read_csv(tmp_path / "o" / "results.csv")) == 5
    pngs = sorted(p.name for p in (tmp_path / "o" / "plots").glob("*.png"))
    assert pngs == ["confusion_toy.png", "learning_knn-plain.png", "roc_pr_toy.png"]
    assert all((tmp_path / "o" / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    with pytest.raises(SystemExit) as e:
        main(["compare", str(path), "--set", "methods.rf-plain.config.trees=3"])
    assert e.value.code == 2


# ------------------------------------------------------------------------------------------------ end to end
def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    pytest.fail("headless Chromium is required for the report test (Debian: apt-get install chromium; "
                ".ci/run installs it)")


def _render_in_chromium(report: Path, tmp_path: Path) -> dict:
    """Load the report in headless Chromium; a script added to a copy reports what the page shows."""
    probe = """<script>window.addEventListener('load', () => {
      const t = document.querySelector('table#results');
      const imgs = [...document.images].map(i => ({w: i.naturalWidth, h: i.naturalHeight, ok: i.complete}));
      const out = {rows: t ? t.tBodies[0].rows.length : -1,
                   headers: t ? [...t.tHead.rows[0].cells].map(c => c.textContent) : [],
                   visible: t ? t.getBoundingClientRect().height > 0 : false, images: imgs};
      const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
      document.body.appendChild(pre);});</script>"""
    page = tmp_path / "probe.html"
    page.write_text(report.read_text().replace("</body>", probe + "</body>"))
    res = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    from html.parser import HTMLParser

    class Grab(HTMLParser):
        text, on = "", False

        def handle_starttag(self, tag, attrs):
            self.on = tag == "pre" and ("id", "probe") in attrs

        def handle_data(self, data):
            if self.on:
                self.text += data

    g = Grab()
    g.feed(res.stdout)
    assert g.text, f"chromium rendered nothing: {res.stderr[-500:]}"
    return json.loads(g.text)


@pytest.mark.integration
def test_ci_tiny_recipe_end_to_end_on_real_data(real_data_dir, tmp_path):
    out = tmp_path / "ci"
    rep = harness.compare(ROOT / "recipes" / "ci_tiny.yaml", out=out, quiet=True)
    bad = [s for s in rep["status"] if s["status"] != "done"]
    assert not bad, bad
    table = pd.read_csv(out / "results.csv")
    assert set(table["kind"]) == {"baseline", "sft", "icl", "replay"}
    assert table["f1_mean"].between(0, 1).all() and table["n_test"].gt(0).all()
    assert json.loads((out / "results.json").read_text())["rows"][0]["dataset"] == "eht_imaging"
    md = (out / "report.md").read_text()
    for name in ("roc_pr_eht_imaging.png", "confusion_eht_imaging.png", "early_eht_imaging.png",
                 "tsne_sft-minilm_eht_imaging.png", "attention_sft-minilm_eht_imaging.png"):
        assert (out / "plots" / name).read_bytes()[:4] == b"\x89PNG" and f"plots/{name}" in md
    sft_dir = next(d for d in (out / "runs").iterdir() if json.loads((d / "run.json").read_text())["kind"] == "sft")
    att = json.loads((sft_dir / "attention.json").read_text())
    assert np.allclose(np.asarray(att["attention"]).sum(1), 1.0, atol=1e-3)  # rows of a softmax
    shown = _render_in_chromium(out / "report.html", tmp_path)
    assert shown["rows"] == len(table) and shown["visible"] and "method" in shown["headers"]
    assert len(shown["images"]) == 5 and all(i["ok"] and i["w"] > 100 and i["h"] > 100 for i in shown["images"])
    # Everything cached: a rerun only re-aggregates and gives the same table.
    before = (out / "results.csv").read_bytes()
    again = harness.compare(ROOT / "recipes" / "ci_tiny.yaml", out=out, quiet=True)
    assert {s["status"] for s in again["status"]} == {"cached"} and (out / "results.csv").read_bytes() == before
