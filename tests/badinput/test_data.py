"""Bad data, built in code from tiny Flow-Bench runs: every case fails in one line naming file/row/field (exit 2) or
loads with a named warning that ``llmad data info`` counts; never a traceback."""
from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import make_run_frame, write_zip
from tests.badinput.runner import assert_nothing_partial, assert_user_error, assert_warned, run_cli


def runs(n: int = 9) -> dict[str, pd.DataFrame]:
    """Nine tiny runs of one workflow: 3 normal, 6 with one slow host."""
    return {f"toywf-run{r:04d}": make_run_frame(r, anomalous_host=None if r <= 3 else "worker1")
            for r in range(1, n + 1)}


def zip_bytes(path: Path, members: dict[str, bytes]) -> Path:
    """A zip whose members are given as raw bytes (for bytes pandas would never write)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, raw in members.items():
            zf.writestr(name, raw)
    return path


def csv_bytes(frames: dict[str, pd.DataFrame]) -> dict[str, bytes]:
    return {f"{k}.csv": v.to_csv(index=False).encode() for k, v in frames.items()}


def info(spec, *extra) -> tuple:
    res = run_cli(["data", "info", spec, "--json", *extra])
    return res, (json.loads(res.out) if res.rc == 0 else None)


def damage_member(path, member: str, lo: int, hi: int) -> None:
    """Flip the bytes ``lo:hi`` of ``member``'s compressed data in the zip at ``path`` (deflate damage)."""
    raw = bytearray(path.read_bytes())
    m = zipfile.ZipFile(path).getinfo(member)
    start = m.header_offset + 30 + len(m.filename.encode()) + len(m.extra)  # 30: the local file header
    for i in range(start + lo, start + hi):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))


def test_deflate_damage_names_archive_and_member(tmp_path):
    path = tmp_path / "toywf.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, raw in csv_bytes(runs()).items():
            zf.writestr(name, raw)
    damage_member(path, "toywf-run0002.csv", 10, 40)
    with pytest.raises(zlib.error):  # the damage is the kind that reached users as a zlib traceback
        zipfile.ZipFile(path).read("toywf-run0002.csv")
    assert_user_error(run_cli(["data", "info", f"flowbench:{path}"]), "toywf.zip", "toywf-run0002.csv", "damaged")


def test_huge_finite_value_is_clipped_with_a_warning_and_rf_runs(tmp_path):
    frames = runs()
    frames["toywf-run0004"].loc[5, "runtime"] = 1e308
    frames["toywf-run0005"].loc[2, "stage_in_bytes"] = -1e300
    path = write_zip(tmp_path / "toywf.zip", frames)
    res, s = info(f"flowbench:{path}")
    assert_warned(res, "huge-value")
    assert "toywf-run0004.csv, row 7, field 'runtime'" in res.err
    assert s["warnings"] == {"huge-value": 2}
    out = tmp_path / "rf"
    res = run_cli(["baseline", "--method", "rf", "--data", str(path), "--out", out], timeout=60)
    assert_warned(res, "huge-value")
    assert res.rc == 0, res.text[-2000:]
    assert 0 <= json.loads((out / "metrics.json").read_text())["accuracy"] <= 1


def test_conflicting_duplicate_job_ids_are_an_error(tmp_path):
    frames = runs()
    df = frames["toywf-run0004"]
    dup = df.iloc[[0]].assign(anomaly_type="cpu_3")  # job 0 (normal, file row 2) again, now anomalous
    frames["toywf-run0004"] = pd.concat([df, dup], ignore_index=True)
    path = write_zip(tmp_path / "toywf.zip", frames)
    line = assert_user_error(run_cli(["data", "info", f"flowbench:{path}"]), "toywf-run0004.csv", "row 14",
                             "anomaly_type")
    assert "repeats row 2" in line and df[""].iloc[0] in line  # the unnamed id column


def test_agreeing_duplicate_job_ids_warn_and_are_counted(tmp_path):
    frames = runs()
    df = frames["toywf-run0002"]
    frames["toywf-run0002"] = pd.concat([df, df.iloc[[0, 3, 4]]], ignore_index=True)
    res, s = info(f"flowbench:{write_zip(tmp_path / 'toywf.zip', frames)}")
    assert_warned(res, "duplicate-job-id")
    assert "3 job id(s)" in res.err and res.rc == 0
    assert s["warnings"] == {"duplicate-job-id": 1} and s["jobs"] == 9 * 12 + 3


def test_missing_feature_columns_warn_and_are_counted(tmp_path):
    frames = runs()
    for k in ("toywf-run0003", "toywf-run0007"):
        frames[k] = frames[k].drop(columns=["runtime"])
    path = write_zip(tmp_path / "toywf.zip", frames)
    res, s = info(f"flowbench:{path}")
    assert_warned(res, "missing-column")
    assert "toywf-run0003.csv" in res.err and "'runtime'" in res.err
    assert s["warnings"] == {"missing-column": 1}
    # the text output counts them too
    res = run_cli(["data", "info", f"flowbench:{path}"])
    assert res.rc == 0 and "warnings: missing-column 1" in res.out


def test_non_utf8_bytes_warn_with_row_and_field(tmp_path):
    members = csv_bytes(runs())
    text = members["toywf-run0005.csv"].decode()
    members["toywf-run0005.csv"] = text.replace("worker2", "w\xe9rker2", 1).encode("latin-1")
    res, s = info(f"flowbench:{zip_bytes(tmp_path / 'toywf.zip', members)}")
    assert_warned(res, "non-utf8")
    line = next(ln for ln in res.err.splitlines() if "non-utf8" in ln)
    assert "toywf-run0005.csv" in line and "row 4" in line and "kickstart_hostname" in line and "0xe9" in line
    assert s["warnings"] == {"non-utf8": 1}


def test_nul_byte_in_a_field_is_an_error(tmp_path):
    members = csv_bytes(runs())
    lines = members["toywf-run0006.csv"].decode().splitlines(keepends=True)
    lines[5] = lines[5].replace("compute", "comp\0ute", 1)
    members["toywf-run0006.csv"] = "".join(lines).encode()
    res = run_cli(["data", "info", f"flowbench:{zip_bytes(tmp_path / 'toywf.zip', members)}"])
    assert_user_error(res, "toywf-run0006.csv", "row 6", "field 'type'", "NUL")


@pytest.mark.parametrize("spec", ["flowbench:", "flowbench: ", "", "flowbench:a,,b"])
def test_empty_flowbench_name_never_reads_the_current_folder(tmp_path, spec):
    write_zip(tmp_path / "toywf-run0001.zip", runs(1))  # something a recursive read of cwd would pick up
    (tmp_path / "toywf-run0001.csv").write_text(runs(1)["toywf-run0001"].to_csv(index=False))
    res = run_cli(["data", "info", spec], cwd=tmp_path)
    assert_user_error(res, "flowbench")


def _series_csv(path: Path, edits: dict, n: int = 60) -> Path:
    df = pd.DataFrame({"timestamp": [str(1_700_000_000 + 60 * i) for i in range(n)],
                       "cpu": np.sin(np.arange(n) / 5.0), "mem": np.cos(np.arange(n) / 7.0),
                       "label": [int(30 <= i < 34) for i in range(n)]})
    for (row, col), v in edits.items():
        df[col] = df[col].astype(object)
        df.loc[row, col] = v
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("bad,row", [("garbage", 40), ("2024-13-45 99:00:00", 12)])
def test_numeric_csv_bad_timestamp_names_the_real_row(tmp_path, bad, row):
    path = _series_csv(tmp_path / "s.csv", {(row - 2, "timestamp"): bad})
    res = run_cli(["numeric", "--method", "iforest", "--data", f"csv:{path}", "--out", tmp_path / "o"])
    assert_user_error(res, "s.csv", f"row {row}", "timestamp", bad)
    assert_nothing_partial(tmp_path / "o")


def test_numeric_csv_huge_value_warns(tmp_path):
    from llmad.data.timeseries import load_csv_series
    from llmad.errors import LlmadWarning

    path = _series_csv(tmp_path / "s.csv", {(9, "mem"): 1e308})
    with pytest.warns(LlmadWarning, match=r"huge-value.*s\.csv.*'mem'.*row 11"):
        s = load_csv_series(path)
    assert np.isfinite(s.values).all() and s.values[9, 1] == np.float32(np.finfo(np.float32).max)


def test_damaged_npz_member_is_one_line(tmp_path):
    path = tmp_path / "machine-1-1.npz"
    rng = np.random.default_rng(0)
    np.savez_compressed(path, train=rng.random((400, 3)), test=rng.random((400, 3)), test_label=np.zeros(400))
    damage_member(path, "test.npy", 20, 60)
    res = run_cli(["numeric", "--method", "iforest", "--data", f"smd:{path}", "--out", tmp_path / "o"])
    assert_user_error(res, "machine-1-1.npz")
    assert_nothing_partial(tmp_path / "o")


def test_check_jobs_is_the_shared_table_check():
    """Any job loader (own tables too) gets the same verdicts from llmad.data.checks.check_jobs."""
    from llmad.data.checks import check_jobs
    from llmad.errors import DataError, LlmadWarning

    jobs = pd.DataFrame({"run_id": ["r1", "r1", "r2"], "job_id": ["a", "b", "a"], "label": [0, 1, 0],
                         "anomaly_type": ["normal", "cpu_3", "normal"], "runtime": [1.0, 2.0, 3e39]})
    with pytest.warns(LlmadWarning) as rec:
        warned = check_jobs(jobs, "jobs.csv")
    assert sorted(w.name for w in warned) == ["huge-value", "missing-column"] == sorted(r.message.name for r in rec)
    assert "row 4, field 'runtime'" in str(warned[-1])
    assert "queue_delay" in jobs.columns  # absent sentence features are added as empty
    bad = pd.concat([jobs, jobs.iloc[[1]].assign(anomaly_type="normal", label=0)], ignore_index=True)
    with pytest.raises(DataError, match=r"file jobs.csv, row 5, field 'anomaly_type'.*repeats row 3"):
        check_jobs(bad, "jobs.csv")


def test_byte_order_mark_is_not_part_of_the_header(tmp_path):
    members = {k: b"\xef\xbb\xbf" + v for k, v in csv_bytes(runs()).items()}  # as spreadsheet exports write it
    res, s = info(f"flowbench:{zip_bytes(tmp_path / 'toywf.zip', members)}")
    assert res.rc == 0, res.text[-2000:]
    assert s["jobs"] == 9 * 12 and s["warnings"] == {}
