"""`llmad numeric`, `llmad pretrain moment` and `llmad windows-text` through the real CLI entry point."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from badinput.runner import run_cli


@pytest.mark.integration
def test_numeric_iforest_writes_a_run(tmp_path):
    out = tmp_path / "run"
    res = run_cli(["numeric", "--method", "iforest", "--data", "asd:omi-1", "--window", "32", "--shots", "300",
                   "--out", out], timeout=600)
    assert res.rc == 0, res.text
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == "iforest" and m["threshold_source"].startswith("validation")
    assert m["test"]["point_adjusted_INFLATED"]["note"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["numeric"]["shots"] == 300
    preds = pd.read_csv(out / "predictions.csv")
    assert {"series", "point", "label", "score", "prediction"} <= set(preds.columns)
    assert "iforest on asd:omi-1" in res.out


def test_bad_input_is_one_line_exit_2(tmp_path):
    cases = (({"--data": "asd:omi-99"}, "unknown machine"), ({"--method": "nope"}, "--method"),
             ({"--shots": "0"}, "zero-shot"), ({"--window": "99999"}, "shorter than one window"))
    for i, (change, msg) in enumerate(cases):
        opts = {"--method": "iforest", "--data": "asd:omi-1", **change, "--out": tmp_path / f"o{i}"}
        res = run_cli(["numeric", *(x for kv in opts.items() for x in kv)], timeout=120)
        assert res.rc == 2 and msg in res.err and "Traceback" not in res.err, res.text


@pytest.mark.integration
def test_pretrain_moment_and_windows_text(tmp_path):
    out = tmp_path / "pre"
    res = run_cli(["pretrain", "moment", "--data", "asd:omi-2", "--out", out, "--seq-len", "32", "--d-model", "16",
                   "--layers", "1", "--heads", "2", "--max-steps", "4", "--batch-size", "16", "--limit", "50"],
                  timeout=600)
    assert res.rc == 0, res.text
    assert json.loads((out / "pretrain.json").read_text())["steps"] == 4
    from llmad.detectors.moment import load_moment

    assert int(load_moment(str(out)).config.seq_len) == 32
    csv = tmp_path / "w.csv"
    res = run_cli(["windows-text", "--data", "nezha:trainticket", "--out", csv, "--limit", "4"], timeout=600)
    assert res.rc == 0, res.text
    df = pd.read_csv(csv)
    assert len(df) == 4 and df["text"].str.contains("CpuUsage\\(m\\) is ").all()
    assert set(df["label"]) <= {0, 1}
