"""`llmad numeric`, `llmad pretrain moment` and `llmad windows-text` through the real CLI entry point."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from llmad.cli import main


def _run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr()


@pytest.mark.integration
def test_numeric_iforest_writes_a_run(tmp_path, capsys):
    out = tmp_path / "run"
    try:
        main(["numeric", "--method", "iforest", "--data", "asd:omi-1", "--window", "32", "--shots", "300",
              "--out", str(out)])
    except SystemExit as e:
        assert e.code in (0, None)
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == "iforest" and m["threshold_source"].startswith("validation")
    assert m["test"]["point_adjusted_INFLATED"]["note"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["numeric"]["shots"] == 300
    preds = pd.read_csv(out / "predictions.csv")
    assert {"series", "point", "label", "score", "prediction"} <= set(preds.columns)
    assert "iforest on asd:omi-1" in capsys.readouterr().out


def test_bad_input_is_one_line_exit_2(capsys, tmp_path):
    code, cap = _run(["numeric", "--method", "iforest", "--data", "asd:omi-99", "--out", str(tmp_path / "x")],
                     capsys)
    assert code == 2 and "unknown machine" in cap.err and "Traceback" not in cap.err
    code, cap = _run(["numeric", "--method", "nope", "--data", "asd:omi-1", "--out", str(tmp_path / "y")], capsys)
    assert code == 2 and "--method" in cap.err
    code, cap = _run(["numeric", "--method", "iforest", "--data", "asd:omi-1", "--shots", "0",
                      "--out", str(tmp_path / "z")], capsys)
    assert code == 2 and "zero-shot" in cap.err
    code, cap = _run(["numeric", "--method", "iforest", "--data", "asd:omi-1", "--window", "99999",
                      "--out", str(tmp_path / "w")], capsys)
    assert code == 2 and "shorter than one window" in cap.err


@pytest.mark.integration
def test_pretrain_moment_and_windows_text(tmp_path, capsys):
    out = tmp_path / "pre"
    try:
        main(["pretrain", "moment", "--data", "asd:omi-2", "--out", str(out), "--seq-len", "32", "--d-model", "16",
              "--layers", "1", "--heads", "2", "--max-steps", "4", "--batch-size", "16", "--limit", "50"])
    except SystemExit as e:
        assert e.code in (0, None)
    assert json.loads((out / "pretrain.json").read_text())["steps"] == 4
    from llmad.detectors.moment import load_moment

    assert int(load_moment(str(out)).config.seq_len) == 32
    csv = tmp_path / "w.csv"
    try:
        main(["windows-text", "--data", "nezha:trainticket", "--out", str(csv), "--limit", "4"])
    except SystemExit as e:
        assert e.code in (0, None)
    df = pd.read_csv(csv)
    assert len(df) == 4 and df["text"].str.contains("CpuUsage\\(m\\) is ").all()
    assert set(df["label"]) <= {0, 1}
