"""`llmad watch` on feeds in the wrong format: a few warnings then one line naming the likely format, exit 2."""
from __future__ import annotations

import json

import pytest

from llmad.stream.watch import SHOWN_MALFORMED, likely_format, sniff_format
from tests.badinput.runner import assert_user_error, assert_warned, run_cli, run_cli_process
from tests.conftest import synthetic_jobs


@pytest.fixture(scope="module")
def rf_dir(tmp_path_factory):
    """A tiny random forest on plain job features, saved as a detector folder."""
    from llmad.detectors.baselines import BaselineDetector

    jobs = synthetic_jobs(200)
    det = BaselineDetector("rf", "plain", n_estimators=5).fit(jobs.iloc[:150], jobs.iloc[150:])
    out = tmp_path_factory.mktemp("rf") / "model"
    det.save(out)
    return out


def _records(n: int = 300) -> list[dict]:
    jobs = synthetic_jobs(n)
    return [{k: v for k, v in r.items() if k not in ("label", "anomaly_type")} for r in jobs.to_dict("records")]


def _csv(recs: list[dict]) -> str:
    cols = list(recs[0])
    return ",".join(cols) + "\n" + "".join(",".join(str(r[c]) for c in cols) + "\n" for r in recs)


def _jsonl(recs: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in recs)


def test_csv_feed_read_as_jsonl_stops_with_one_line(tmp_path, rf_dir):
    feed = tmp_path / "feed.csv"
    feed.write_text(_csv(_records(3000)))
    alerts = tmp_path / "alerts.jsonl"
    res = run_cli(["watch", feed, "--model", rf_dir, "--format", "jsonl", "--no-follow", "--alerts", alerts,
                   "--batch-lines", "20", "--checkpoint-s", "0"], timeout=30)
    line = assert_user_error(res, "feed.csv", "malformed lines in a row", "looks like csv", "--format")
    assert "line 100" in line
    shown = [ln for ln in res.err.splitlines() if "[malformed-line]" in ln]
    assert len(shown) <= SHOWN_MALFORMED + 1  # not thousands
    # Nothing was read, so no state is kept: the rerun with the right format starts at the header.
    res = run_cli(["watch", feed, "--model", rf_dir, "--format", "csv", "--no-follow", "--alerts", alerts], timeout=60)
    assert res.rc == 0 and "3000 records" in res.err and "0 malformed" in res.err, res.text[-2000:]


def test_jsonl_feed_read_as_csv_names_json(tmp_path, rf_dir):
    feed = tmp_path / "feed.txt"
    feed.write_text(_jsonl(_records(300)))
    res = run_cli(["watch", feed, "--model", rf_dir, "--format", "csv", "--no-follow"], timeout=30)
    assert_user_error(res, "feed.txt", "looks like json lines")


def test_a_few_bad_lines_only_is_exit_2_not_0(tmp_path, rf_dir):
    feed = tmp_path / "feed.jsonl"
    feed.write_text("{not json\n[1, 2]\n{\"run_id\": \"r\"}\n")
    res = run_cli(["watch", feed, "--model", rf_dir, "--no-follow"], timeout=30)
    assert_user_error(res, "feed.jsonl", "none of the 3")


def test_scattered_bad_lines_are_a_named_warning(tmp_path, rf_dir):
    recs = _jsonl(_records(60)).splitlines()
    feed = tmp_path / "feed.jsonl"
    feed.write_text("\n".join(x if i % 10 else "{broken" for i, x in enumerate(recs)) + "\n")
    res = run_cli(["watch", feed, "--model", rf_dir, "--no-follow"], timeout=30)
    assert res.rc == 0
    assert_warned(res, "[malformed-line]")
    assert "6 malformed" in res.err


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_stdin_detects_the_format(rf_dir, fmt):
    recs = _records(40)
    res = run_cli_process(["watch", "-", "--model", rf_dir], stdin=_csv(recs) if fmt == "csv" else _jsonl(recs),
                          timeout=60)
    assert res.rc == 0, res.text[-2000:]
    assert "40 records" in res.err and "0 malformed" in res.err


def test_feed_records_get_the_loaders_checks(tmp_path, rf_dir):
    """A NUL skips its record (a malformed line), a huge value is named once per field; the rest is scored."""
    recs = _records(40)
    recs[3]["host"] = "ab\u0000cd"
    for i in (5, 6):
        recs[i]["runtime"] = 1e308
    feed = tmp_path / "feed.jsonl"
    feed.write_text(_jsonl(recs))
    res = run_cli(["watch", feed, "--model", rf_dir, "--no-follow", "--alerts", tmp_path / "a.jsonl"], timeout=30)
    assert res.rc == 0, res.text[-2000:]
    assert_warned(res, "[huge-value]")
    assert res.err.count("[huge-value]") == 1 and "line 6, field 'runtime'" in res.err
    assert "line 4: field 'host': NUL byte" in res.err
    assert "39 records" in res.err and "1 malformed" in res.err


def test_replayed_runs_get_the_loaders_checks(tmp_path):
    """A replay parses one run at a time (never the whole table): each run gets load_jobs' checks."""
    from llmad.errors import DataError
    from llmad.stream import iter_runs
    from tests.conftest import make_run_frame, write_zip

    run = make_run_frame(1, anomalous_host="worker1")
    run.iloc[1, 0] = run.iloc[0, 0]  # one job id (the unnamed first column), two labels
    run.loc[0, "anomaly_type"], run.loc[1, "anomaly_type"] = "None", "cpu_3"
    z = write_zip(tmp_path / "toywf.zip", {"toywf-run0001": run})
    with pytest.raises(DataError, match="row 3.*field 'anomaly_type'.*keep one row per job"):
        list(iter_runs(f"flowbench:{z}"))


def test_stdin_all_bad_exits_2(rf_dir):
    res = run_cli_process(["watch", "-", "--model", rf_dir, "--format", "jsonl"], stdin="a,b\n1,2\n3,4\n",
                          timeout=60)
    assert_user_error(res, "stdin", "none of the 3")


def test_sniffing_and_guessing():
    assert sniff_format('{"job_id": 1}') == "jsonl" and sniff_format("job_id,runtime") == "csv"
    assert "CSV" in likely_format("a,b,c") and "JSON" in likely_format('{"a": 1') and "neither" in likely_format("x")
