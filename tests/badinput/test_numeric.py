"""Numeric track: a threshold rule that survives drift (named in outputs), a warning for a thin validation part."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from llmad.api.numeric import NumericConfig, run_numeric
from llmad.data.timeseries import Series, SeriesSplit
from llmad.errors import LlmadError
from llmad.metrics.timeseries import parse_threshold_rule, robust_standardise
from tests.badinput.runner import assert_user_error, assert_warned, run_cli


def _part(name: str, n: int, noise: float, spike: float, events: int, rng) -> Series:
    x = rng.normal(0, noise, n)
    y = np.zeros(n, int)
    for k in range(events):
        s = (k + 1) * n // (events + 1)
        x[s:s + 15] += spike
        y[s:s + 15] = 1
    return Series(name, x[:, None], y, ["m"])


@pytest.fixture(scope="module")
def drift_split() -> SeriesSplit:
    """Validation anomalies are tall spikes in loud noise; test ones are small spikes in quiet noise (drift)."""
    rng = np.random.default_rng(0)
    return SeriesSplit([_part("train", 1500, 1.0, 0, 0, rng)], [_part("val", 1000, 1.0, 8.0, 6, rng)],
                       [_part("test", 1000, 0.2, 2.5, 6, rng)], "time", "synthetic drift")


def _run(split, rule):
    cfg = NumericConfig(method="iforest", data="csv:synthetic", window=16, stride=4, n_estimators=50, threshold=rule)
    return run_numeric(cfg, split=split, hooks=None).metrics


def test_validation_threshold_fails_under_drift_and_the_drift_rules_do_not(drift_split):
    val = _run(drift_split, "val")
    # The failure: the ranking is near perfect, the transferred threshold flags nothing.
    assert val["test"]["roc_auc"] > 0.95 and val["test"]["f1"] == 0.0
    for rule in ("val-robust", "contamination:0.1"):
        m = _run(drift_split, rule)
        assert m["test"]["f1"] > 0.5, (rule, m["test"]["f1"])
        assert m["threshold_rule"] == rule and rule.split(":")[0] in m["threshold_source"]


def test_rule_is_named_in_the_run_folder_and_summary(tmp_path, drift_split):
    cfg = NumericConfig(method="iforest", data="csv:synthetic", window=16, stride=4, n_estimators=20,
                        threshold="contamination:0.1", out=str(tmp_path / "run"))
    res = run_numeric(cfg, split=drift_split)
    assert "contamination:0.1" in res.summary
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["threshold_rule"] == "contamination:0.1"
    preds = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert abs(preds["prediction"].mean() - 0.1) < 0.02  # the top 10% of test scores


@pytest.mark.parametrize("rule", ["median", "contamination:0.9", "contamination:x", "contamination:0"])
def test_bad_rule_is_one_line(rule):
    with pytest.raises(LlmadError, match="--threshold"):
        parse_threshold_rule(rule)


def test_bad_rule_from_the_cli_before_loading_data(tmp_path):
    res = run_cli(["numeric", "--method", "iforest", "--data", f"csv:{tmp_path / 'nothing.csv'}",
                   "--threshold", "top5", "--out", tmp_path / "o"], timeout=30)
    assert_user_error(res, "--threshold", "top5", "contamination:Q")


@pytest.mark.parametrize("quiet", [False, True])
def test_thin_validation_is_a_named_warning(tmp_path, quiet):
    rng = np.random.default_rng(1)
    n = 800
    x = rng.normal(0, 1, n)
    y = np.zeros(n, int)
    for s in (200, 560, 700):  # train, validation (one event only), test
        x[s:s + 10] += 6
        y[s:s + 10] = 1
    csv = tmp_path / "series.csv"
    pd.DataFrame({"m": x, "label": y}).to_csv(csv, index=False)
    res = run_cli(["numeric", "--method", "iforest", "--data", f"csv:{csv}", "--window", "16", "--stride", "4",
                   "--out", tmp_path / "o", *(["-q"] if quiet else [])], timeout=60)
    assert res.rc == 0, res.text[-2000:]
    assert_warned(res, "[thin-validation]")
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["warnings"]
    if quiet:  # -q: the named warning still shows, and nothing else does (no progress, no library chatter)
        assert [ln for ln in res.err.splitlines() if ln.strip() and not ln.startswith("warning [")] == []


def test_robust_standardise_is_per_series():
    s = np.r_[np.full(50, 10.0), 20.0, np.full(50, 0.0), 1.0]
    z = robust_standardise(s + np.r_[np.linspace(0, 1, 51), np.linspace(0, 0.01, 51)], [51, 51])
    assert z[50] > 5 and z[101] > 5 and abs(np.median(z[:51])) < 1e-9


# ---------------------------------------------------------------------------------------------- Nezha layouts
def _pod_csv(pod: str, minutes: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    rows = ["Time,TimeStamp,PodName,CpuUsage(m),MemoryUsage(Mi)"]
    for i in range(minutes):
        t = pd.Timestamp("2022-08-22 10:00:10") + pd.Timedelta(minutes=i)
        rows.append(f"{t}.1 +0000 UTC m=+1.0,{int(t.timestamp())},{pod},{rng.normal(10, 1):.3f},"
                    f"{rng.normal(50, 1):.3f}")
    return "\n".join(rows) + "\n"


def _nezha_zip(tmp_path, extra: bool) -> str:
    """A small Nezha archive; ``extra``: OnlineBoutique's call-graph CSVs beside the pod metrics."""
    import zipfile

    pods = ["adservice-5b8c8f9f7d-abcde", "cartservice-6c5d7f8b9a-vwxyz"]
    faults = [{"inject_time": str(pd.Timestamp("2022-08-22 10:20:00") + pd.Timedelta(minutes=30 * k)),
               "inject_timestamp": "1", "inject_type": "cpu_contention" if k % 2 else "network_delay",
               "inject_pod": pods[k % 2]} for k in range(10)]
    day = "rca_data/2022-08-22"
    members = {f"{day}/metric/{p}_metric.csv": _pod_csv(p, 330, i) for i, p in enumerate(pods)}
    members[f"{day}/2022-08-22-fault_list.json"] = json.dumps({"10": faults})
    if extra:
        members[f"{day}/metric/dependency.csv"] = "source,destination,count\nfrontend,adservice,3\n"
        members[f"{day}/metric/source_50.csv"] = "Time,source,value\n2022-08-22 10:00:10,frontend,1\n"
        members[f"{day}/metric/destination_50.csv"] = "time,destination,value\n2022-08-22 10:00:10,adservice,1\n"
    path = tmp_path / ("ob.zip" if extra else "tt.zip")
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    return str(path)


@pytest.mark.parametrize("extra", [False, True])
def test_nezha_loads_both_layouts(tmp_path, recwarn, extra):
    from llmad.data import nezha

    series, faults, info = nezha.load_series(_nezha_zip(tmp_path, extra))
    assert sorted(s.meta["group"] for s in series) == ["adservice", "cartservice"] and len(faults) == 10
    assert all(s.features == ["CpuUsage(m)", "MemoryUsage(Mi)"] for s in series)
    skipped = sorted(n.rsplit("/", 1)[-1] for n in info["skipped_files"])
    named = [str(w.message) for w in recwarn if getattr(w.message, "name", None) == "nezha-extra-files"]
    if extra:
        assert skipped == ["dependency.csv", "destination_50.csv", "source_50.csv"]
        assert len(named) == 1 and "destination_50.csv" in named[0]
    else:
        assert skipped == [] and named == []


def test_nezha_archive_with_extra_files_runs_numeric_from_the_cli(tmp_path):
    res = run_cli(["numeric", "--method", "iforest", "--data", f"nezha:{_nezha_zip(tmp_path, True)}", "--window", "16",
                   "--stride", "4", "--out", tmp_path / "o"], timeout=60)
    assert res.rc == 0, res.text[-2000:]
    assert_warned(res, "[nezha-extra-files]")
    assert "no Time column" not in res.text


def test_nezha_metric_file_without_time_is_still_an_error(tmp_path):
    import zipfile

    from llmad.data import nezha
    from llmad.errors import DataError

    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("rca_data/d/metric/adservice-5b8c8f9f7d-abcde_metric.csv", "time,PodName,Cpu\n1,a,2\n")
        zf.writestr("rca_data/d/d-fault_list.json", "{}")
    with pytest.raises(DataError, match="no Time column"):
        nezha.load_series(str(path))
    with pytest.raises(LlmadError, match="onlineboutique"):
        nezha.find_zip("sockshop")
