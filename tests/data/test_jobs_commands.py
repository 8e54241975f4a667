"""Every command on the README's own-table example (tests/data/jobs_example): data import, baseline, sft, predict,
icl, replay and compare read ``jobs:jobs.csv --columns map.yaml`` and write their run folders."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml
from badinput.runner import assert_no_crash, assert_user_error, run_cli
from conftest import make_tiny_bert
from icl_fixtures import smol_tokenizer, tiny_llama  # noqa: F401 (smol_tokenizer is a fixture)

EXAMPLE = Path(__file__).parent / "jobs_example"
TABLE, MAP = EXAMPLE / "jobs.csv", EXAMPLE / "map.yaml"
DATA = ["--data", f"jobs:{TABLE}", "--columns", str(MAP)]


def ok(argv: list, timeout: float = 120) -> str:
    """Run llmad in-process; it must exit 0; returns stdout + stderr."""
    res = run_cli([str(a) for a in argv], timeout=timeout)
    assert_no_crash(res)
    assert res.rc == 0, res.text[-3000:]
    return res.text


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_data_import_reports_and_infer_writes_an_editable_map(tmp_path):
    text = ok(["data", "import", TABLE, "--columns", MAP, "--out", tmp_path / "rep.json"])
    assert "240 rows, 16 runs" in text and "label rate 0.1625" in text and "timestamps.execute_start" in text
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert rep["map_source"] == str(MAP) and rep["split_unit"] == "run"
    inferred = tmp_path / "map.yaml"
    ok(["data", "import", TABLE, "--infer", "--map-out", inferred, "--json"])
    cmap = yaml.safe_load(inferred.read_text())
    assert cmap["run"] == "dag_run" and cmap["label"] == "is_anomaly" and "wall_seconds" in cmap["features"]
    assert_user_error(run_cli(["data", "import", str(TABLE), "--infer", "--map-out", str(inferred)]),
                      str(inferred), "--force")


def test_baseline_predict_and_replay_on_the_example(tmp_path):
    ok(["baseline", *DATA, "--method", "hgb", "--features", "context", "--out", tmp_path / "b"])
    m = metrics(tmp_path / "b")
    assert m["split"] == "run" and 0.5 < m["roc_auc"] <= 1.0
    det = json.loads((tmp_path / "b" / "model" / "detector.json").read_text())
    assert det["columns"] == ["wall_seconds", "queue_seconds", "bytes_in", "partition"]
    ok(["predict", "--model", tmp_path / "b" / "model", *DATA, "--out", tmp_path / "p"])
    p = metrics(tmp_path / "p")
    assert p["jobs"] == 240 and "report" in p
    assert len(pd.read_csv(tmp_path / "p" / "predictions.csv")) == 240
    ok(["replay", "--model", tmp_path / "b" / "model", *DATA, "--out", tmp_path / "r", "-q"])
    r = metrics(tmp_path / "r")
    assert r["runs"] >= 2 and r["anomalous_jobs"] > 0
    # The table's own numbers are measurements: known when a job ends, never at its start.
    assert r["caught_before_execute_end_share"] == 0.0
    # watch: a live feed in the table's own layout (its column names, ISO date-times), read through the same map.
    feed = pd.read_csv(TABLE).sort_values("t_end")
    feed.to_csv(tmp_path / "feed.csv", index=False)
    text = ok(["watch", tmp_path / "feed.csv", "--model", tmp_path / "b" / "model", "--columns", MAP, "--no-follow",
               "--alerts", tmp_path / "alerts.jsonl"])
    assert "240 records" in text and "0 malformed" in text
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert alerts and {a["run_id"] for a in alerts} <= set(feed["dag_run"])
    flagged = {a["job_id"] for a in alerts}
    assert feed.loc[feed["job_id"].isin(flagged), "is_anomaly"].mean() > feed["is_anomaly"].mean()
    # Without a run column a replay is refused in one line.
    cmap = yaml.safe_load(MAP.read_text())
    del cmap["run"]
    (tmp_path / "norun.yaml").write_text(yaml.safe_dump(cmap))
    assert_user_error(run_cli(["replay", "--model", str(tmp_path / "b" / "model"), "--data", f"jobs:{TABLE}",
                               "--columns", str(tmp_path / "norun.yaml"), "--out", str(tmp_path / "r2")]),
                      "run ids")


def test_sft_renders_the_tables_own_columns_and_predicts(tmp_path):
    tiny = make_tiny_bert(tmp_path / "tiny")
    ok(["sft", *DATA, "--limit", 40, "--model", tiny, "--template", "paper", "--max-length", 64, "--max-steps", 2,
        "--batch-size", 20, "--freeze", "none", "--patience", 0, "-q", "--out", tmp_path / "s"])
    m = metrics(tmp_path / "s")
    assert m["sizes"]["test"] == 40 and 0.0 <= m["test"]["f1"] <= 1.0
    ok(["predict", "--model", tmp_path / "s" / "model", *DATA, "--split", "run", "--limit", 40,
        "--out", tmp_path / "p"])
    assert metrics(tmp_path / "p")["jobs"] == m["sizes"]["test"]
    det = json.loads((tmp_path / "s" / "model" / "detector.json").read_text())
    assert det["features"] == ["wall_seconds", "queue_seconds", "bytes_in", "partition"]
    ok(["replay", "--model", tmp_path / "s" / "model", *DATA, "--limit", 1, "--backend", "torch", "-q",
        "--out", tmp_path / "r"])
    assert metrics(tmp_path / "r")["runs"] == 1
    preds = pd.read_csv(tmp_path / "r" / "predictions.csv")
    # The job's own numbers arrive at its end: the sentence (and score) then differs from the one at submit.
    assert preds["final_score"].notna().all() and (preds["observations"] >= 2).all()
    from llmad.data import load_jobs
    from llmad.render import render_jobs

    text = render_jobs(load_jobs(f"jobs:{TABLE}", columns=str(MAP)).head(1), "paper")[0]
    assert text.startswith("wall_seconds is ") and "partition is cpu" in text


def test_nll_scores_the_tables_own_columns(tmp_path):
    """Label-free NLL on an own table: its mapped features (and the peer facts it can compute) are the fields."""
    from nll_fixtures import tiny_nll_lm

    lm = tiny_nll_lm(tmp_path / "lm")
    text = ok(["nll", *DATA, "-m", lm, "--fields", "ops", "--lora", 0, "--epochs", 1, "--permutations", 1,
               "--limit", 20, "-q", "-o", tmp_path / "n"])
    assert "no column map" not in text  # --columns reached the loader
    cols = set(pd.read_csv(tmp_path / "n" / "predictions.csv").columns)
    own = {f"nll_{f}" for f in ("wall_seconds", "queue_seconds", "bytes_in", "partition")}
    assert own | {"nll_ctx_runtime_rel", "top_field"} <= cols
    assert not any(c.startswith("nll_") and c.endswith(("wms_delay", "stage_in_delay")) for c in cols)
    assert metrics(tmp_path / "n")["test_rows"] == 20


def test_icl_and_compare_on_the_example(tmp_path, smol_tokenizer):  # noqa: F811
    tiny_llama(smol_tokenizer, path=tmp_path / "llama")
    ok(["icl", *DATA, "--model", tmp_path / "llama", "--shots", 2, "--limit", 8, "--val-limit", 6,
        "--out", tmp_path / "i"])
    assert metrics(tmp_path / "i")["test_rows"] == 8
    rec = yaml.safe_load((EXAMPLE / "recipe.yaml").read_text())
    rec["datasets"][0].update(spec=f"jobs:{TABLE}", columns=str(MAP))
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(rec))
    ok(["compare", tmp_path / "recipe.yaml", "--out", tmp_path / "c", "-q"])
    table = pd.read_csv(tmp_path / "c" / "results.csv")
    assert {"rf-plain", "replay-rf"} <= set(table["method"]) and table["f1_mean"].notna().all()
