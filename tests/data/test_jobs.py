"""``jobs:<table>``: your own job table through a column map onto the canonical job frame (llmad.data.jobs)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from llmad.data import load_jobs, load_split
from llmad.data.jobs import infer_column_map, job_features, load_column_map, table_report
from llmad.data.specs import parse_spec, spec_name, with_columns
from llmad.errors import DataError, LlmadError, LlmadWarning

EXAMPLE = Path(__file__).parent / "jobs_example"
TABLE, MAP = EXAMPLE / "jobs.csv", EXAMPLE / "map.yaml"


def test_example_table_maps_onto_the_canonical_job_frame():
    jobs = load_jobs(f"jobs:{TABLE}", columns=str(MAP))
    raw = pd.read_csv(TABLE)
    assert list(jobs.columns[:8]) == ["workflow", "run_id", "job_id", "label", "anomaly_type", "job_type", "host",
                                      "transformation"]
    assert len(jobs) == len(raw) and jobs["run_id"].nunique() == raw["dag_run"].nunique()
    assert jobs["label"].tolist() == raw["is_anomaly"].tolist()
    assert set(jobs.loc[jobs["label"] == 1, "anomaly_type"]) == {"cpu_slow", "disk_slow"}
    assert (jobs.loc[jobs["label"] == 0, "anomaly_type"] == "normal").all()
    assert jobs["host"].tolist() == raw["node"].tolist()
    assert jobs["transformation"].tolist() == raw["task_name"].tolist()
    # ISO date-times become epoch seconds under the Flow-Bench names; delays are derived from them.
    t0 = pd.Timestamp(raw["t_submit"][0], tz="UTC").timestamp()
    assert jobs["submit"][0] == pytest.approx(t0)
    assert np.allclose(jobs["runtime"], jobs["execute_end"] - jobs["execute_start"])
    assert np.allclose(jobs["runtime"], raw["wall_seconds"], atol=0.01)
    assert job_features(jobs) == ["wall_seconds", "queue_seconds", "bytes_in", "partition"]
    assert jobs.attrs["split_unit"] == "run"


def test_spec_grammar_and_column_map_in_the_spec():
    assert parse_spec("jobs:x.csv", family="jobs") == ("jobs", "x.csv")
    assert parse_spec(str(TABLE)) == ("jobs", str(TABLE))  # a table path needs no prefix
    assert with_columns(str(TABLE), "m.yaml") == f"jobs:{TABLE}?columns=m.yaml"
    spec = with_columns("jobs:x.csv", "m.yaml")
    assert spec == "jobs:x.csv?columns=m.yaml" and with_columns(spec, "n.yaml") == "jobs:x.csv?columns=n.yaml"
    assert spec_name(spec) == "x" and spec_name("flowbench:a,b") == "a+b"
    with pytest.raises(LlmadError, match="jobs:<table> specs only"):
        with_columns("flowbench:montage", "m.yaml")
    with pytest.raises(LlmadError, match="jobs:<table>"):
        parse_spec("nezha:trainticket", family="jobs")
    a = load_jobs(with_columns(f"jobs:{TABLE}", str(MAP)))
    assert job_features(a) == job_features(load_jobs(f"jobs:{TABLE}", columns=str(MAP)))


def test_sidecar_parquet_gzip_and_folder_read_the_same_jobs(tmp_path):
    raw = pd.read_csv(TABLE)
    ref = load_jobs(f"jobs:{TABLE}", columns=str(MAP))
    shutil.copy(MAP, tmp_path / "t.parquet.llmad.yaml")
    raw.to_parquet(tmp_path / "t.parquet")
    side = load_jobs(f"jobs:{tmp_path / 't.parquet'}")  # the sidecar map is found without --columns
    folder = tmp_path / "parts"
    folder.mkdir()
    raw.iloc[:100].to_csv(folder / "a.csv.gz", index=False)
    raw.iloc[100:].to_parquet(folder / "b.parquet")
    parts = load_jobs(f"jobs:{folder}", columns=str(MAP))
    for other in (side, parts):
        pd.testing.assert_frame_equal(other.drop(columns="workflow"), ref.drop(columns="workflow"),
                                      check_dtype=False)


def test_inferred_map_is_printed_and_degrades_to_what_it_recognises(capsys):
    jobs = load_jobs(f"jobs:{TABLE}")
    err = capsys.readouterr().err
    assert "inferred" in err and "run: dag_run" in err and "host: node" in err
    # Time-like names holding date-times become stamps; features = the numeric rest (the category is not guessed).
    assert jobs.attrs["split_unit"] == "run" and jobs["execute_start"].notna().all()
    assert job_features(jobs) == ["wall_seconds", "queue_seconds", "bytes_in"]
    raw = pd.read_csv(TABLE)
    cmap = infer_column_map(raw)
    assert cmap["label"] == "is_anomaly" and cmap["anomaly_type"] == "fault" and cmap["type"] == "task_name"
    assert cmap["timestamps"] == {"submit": "t_submit", "execute_start": "t_start", "execute_end": "t_end"}
    # Renamed columns: nothing to recognise but numbers -> features only, split by row.
    bare = infer_column_map(raw[["wall_seconds", "node"]].rename(columns={"node": "where"}))
    assert bare == {"features": ["wall_seconds"]}


def test_missing_optional_columns_degrade_and_a_missing_mapped_column_is_one_error(tmp_path):
    raw = pd.read_csv(TABLE)
    bare = raw[["wall_seconds", "queue_seconds", "fault"]]
    bare.to_csv(tmp_path / "bare.csv", index=False)
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"anomaly_type": "fault", "features": ["wall_seconds", "gone"]}))
    with pytest.warns(LlmadWarning, match="missing-feature.*'gone'"):
        jobs = load_jobs(f"jobs:{tmp_path / 'bare.csv'}", columns=str(tmp_path / "m.yaml"))
    assert job_features(jobs) == ["wall_seconds"] and jobs.attrs["split_unit"] == "row"
    assert (jobs["label"] == (raw["fault"] != "normal")).all() and set(jobs["host"]) == {"unknown"}
    with pytest.warns(LlmadWarning):
        sp = load_split(f"jobs:{tmp_path / 'bare.csv'}", columns=str(tmp_path / "m.yaml"), context=True)
    assert sp.kind == "row" and "row split" in sp.description and sum(sp.sizes().values()) == len(raw)
    assert "ctx_host_slowness" in sp.train.columns  # peer features degrade to what the table allows
    (tmp_path / "bad.yaml").write_text("run: dag_id\n")
    with pytest.raises(DataError, match="'dag_id'") as e:
        load_jobs(f"jobs:{TABLE}", columns=str(tmp_path / "bad.yaml"))
    assert "\n" not in str(e.value) and "run" in str(e.value)
    (tmp_path / "typo.yaml").write_text("runs: dag_run\n")
    with pytest.raises(LlmadError, match="unknown key"):
        load_column_map(tmp_path / "typo.yaml")


def test_time_split_without_run_ids_orders_by_timestamp(tmp_path):
    raw = pd.read_csv(TABLE).sample(frac=1, random_state=1)
    raw.to_csv(tmp_path / "t.csv", index=False)
    cmap = yaml.safe_load(MAP.read_text())
    del cmap["run"]
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(cmap))
    sp = load_split(f"jobs:{tmp_path / 't.csv'}", columns=str(tmp_path / "m.yaml"))
    assert sp.kind == "time" and "time split" in sp.description
    assert sp.train["submit"].max() <= sp.validation["submit"].min() <= sp.test["submit"].min()


def test_bad_values_name_file_row_and_field(tmp_path):
    raw = pd.read_csv(TABLE)
    raw.loc[3, "t_start"] = "yesterday-ish"
    raw.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"row 5.*'t_start'"):
        load_jobs(f"jobs:{tmp_path / 't.csv'}", columns=str(MAP))
    raw = pd.read_csv(TABLE)
    raw["is_anomaly"] = raw["is_anomaly"].astype(object)
    raw.loc[7, "is_anomaly"] = "maybe"
    raw.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"row 9.*'is_anomaly'"):
        load_jobs(f"jobs:{tmp_path / 't.csv'}", columns=str(MAP))
    with pytest.raises(DataError, match="no such file"):
        load_jobs(f"jobs:{tmp_path / 'nope.csv'}")


def test_import_report_counts_rows_runs_labels_and_columns():
    rep = table_report(str(TABLE), str(MAP))
    raw = pd.read_csv(TABLE)
    assert rep["rows"] == len(raw) and rep["runs"] == raw["dag_run"].nunique()
    assert rep["label_rate"] == pytest.approx(raw["is_anomaly"].mean())
    by = {c["column"]: c for c in rep["columns"]}
    assert raw["bytes_in"].isna().any()
    assert by["bytes_in"]["missing_rate"] == pytest.approx(raw["bytes_in"].isna().mean())
    assert by["t_start"]["role"] == "timestamps.execute_start" and by["partition"]["role"] == "feature"


@pytest.mark.integration
def test_flowbench_run_exported_flat_gives_the_same_baseline_metrics(tmp_path):
    from llmad.api.baseline import run_baseline
    from llmad.config import DataConfig
    from llmad.data.flowbench import PAPER_FEATURES, TIMESTAMPS
    from llmad.detectors.baselines import BaselineConfig

    fb = load_jobs("flowbench:eht_imaging")
    fb.drop(columns=["label", "workflow", "job_type", "host", "transformation"]).to_csv(tmp_path / "flat.csv",
                                                                                       index=False)
    cmap = {"run": "run_id", "job": "job_id", "anomaly_type": "anomaly_type", "host": "kickstart_hostname",
            "type": "kickstart_transformations", "timestamps": {t: t for t in TIMESTAMPS if t in fb.columns},
            "features": list(PAPER_FEATURES)}
    (tmp_path / "map.yaml").write_text(yaml.safe_dump(cmap))
    cfg = BaselineConfig(method="rf", features="context", n_estimators=25)
    out = {}
    for name, data in (("fb", DataConfig(spec="flowbench:eht_imaging", limit=400)),
                       ("jobs", DataConfig(spec=f"jobs:{tmp_path / 'flat.csv'}", columns=str(tmp_path / "map.yaml"),
                                           limit=400))):
        out[name] = run_baseline(data, cfg, out=tmp_path / name).metrics
    for k in ("accuracy", "f1", "roc_auc", "pr_auc", "threshold"):
        assert out["jobs"][k] == pytest.approx(out["fb"][k], abs=1e-12), k
    assert out["jobs"]["split_info"]["sizes"] == out["fb"]["split_info"]["sizes"]


def test_the_job_checks_of_every_loader_run_on_own_tables(tmp_path):
    raw = pd.read_csv(TABLE)
    pd.concat([raw, raw.iloc[[3]]]).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.warns(LlmadWarning, match="duplicate-job-id"):
        load_jobs(f"jobs:{tmp_path / 'dup.csv'}", columns=str(MAP))
    flip = raw["fault"].iloc[3] == "normal"
    clash = raw.iloc[[3]].assign(is_anomaly=int(flip), fault="cpu_slow" if flip else "normal")
    pd.concat([raw, clash]).to_csv(tmp_path / "clash.csv", index=False)
    with pytest.raises(DataError, match="another label"):
        load_jobs(f"jobs:{tmp_path / 'clash.csv'}", columns=str(MAP))
