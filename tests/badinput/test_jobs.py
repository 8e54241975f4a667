"""Bad own job tables (``jobs:<path>``) and column maps: one line naming the file, row and field, exit 2; a missing
feature column is a named warning and the run goes on."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from badinput.runner import assert_nothing_partial, assert_user_error, assert_warned, run_cli

EXAMPLE = Path(__file__).parents[1] / "data" / "jobs_example"
TABLE, MAP = EXAMPLE / "jobs.csv", EXAMPLE / "map.yaml"


def baseline(table: Path, cmap: Path | None, out: Path):
    cols = ["--columns", str(cmap)] if cmap else []
    return run_cli(["baseline", "--data", f"jobs:{table}", *cols, "--out", str(out), "--method", "knn"])


@pytest.mark.parametrize("text, needles", [
    ("run: nope\n", ["'nope'", "run"]),
    ("runs: dag_run\n", ["map.yaml", "unknown key", "runs"]),
    ("features: wall_seconds\n", ["map.yaml", "features", "list"]),
    ("timestamps: {started: t_start}\n", ["map.yaml", "started"]),
    ("run: [a, b\n", ["map.yaml", "invalid yaml"]),
    ("- run\n- job\n", ["map.yaml", "mapping"]),
])
def test_a_bad_column_map_is_one_line(tmp_path, text, needles):
    (tmp_path / "map.yaml").write_text(text)
    res = baseline(TABLE, tmp_path / "map.yaml", tmp_path / "out")
    assert_user_error(res, *needles)
    assert_nothing_partial(tmp_path / "out")


def test_bad_values_name_file_row_and_field(tmp_path):
    raw = pd.read_csv(TABLE)
    raw["wall_seconds"] = raw["wall_seconds"].astype(object)
    raw.loc[10, "wall_seconds"] = "12s"
    raw.to_csv(tmp_path / "t.csv", index=False)
    assert_user_error(baseline(tmp_path / "t.csv", MAP, tmp_path / "o1"), "t.csv", "row 12", "wall_seconds")
    raw = pd.read_csv(TABLE)
    raw.loc[4, "t_end"] = "not a time"
    raw.to_csv(tmp_path / "t.csv", index=False)
    assert_user_error(baseline(tmp_path / "t.csv", MAP, tmp_path / "o2"), "t.csv", "row 6", "t_end")


def test_unreadable_tables_are_one_line(tmp_path, monkeypatch):
    (tmp_path / "empty.csv").write_text("")
    assert_user_error(baseline(tmp_path / "empty.csv", None, tmp_path / "o"), "empty.csv")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    assert_user_error(baseline(tmp_path / "junk.parquet", None, tmp_path / "o"), "junk.parquet", "parquet")
    (tmp_path / "none").mkdir()
    assert_user_error(baseline(tmp_path / "none", None, tmp_path / "o"), "none")
    assert_user_error(baseline(tmp_path / "gone.csv", None, tmp_path / "o"), "gone.csv")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    assert_user_error(baseline(tmp_path / "junk.parquet", None, tmp_path / "o"), "junk.parquet",
                      "pip install pyarrow")


def test_missing_feature_is_a_warning_and_no_labels_is_one_line(tmp_path):
    cmap = yaml.safe_load(MAP.read_text())
    cmap["features"] = cmap["features"] + ["gpu_hours"]
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(cmap))
    res = baseline(TABLE, tmp_path / "m.yaml", tmp_path / "o")
    assert_warned(res, "missing-feature")
    assert res.rc == 0 and "gpu_hours" in res.err
    pd.read_csv(TABLE).drop(columns=["is_anomaly", "fault"]).to_csv(tmp_path / "nolabel.csv", index=False)
    assert_user_error(baseline(tmp_path / "nolabel.csv", None, tmp_path / "o2"), "no labels", "label")
    # predict scores an unlabelled table (no metrics report).
    pred = run_cli(["predict", "--model", str(tmp_path / "o" / "model"), "--data", f"jobs:{tmp_path / 'nolabel.csv'}",
                    "--out", str(tmp_path / "p")])
    assert pred.rc == 0, pred.text[-2000:]


def test_columns_on_a_flowbench_spec_is_one_line(tmp_path):
    res = run_cli(["baseline", "--data", "flowbench:montage", "--columns", str(MAP), "--out", str(tmp_path / "o")])
    assert_user_error(res, "--columns", "jobs:")
