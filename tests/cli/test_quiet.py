"""`-q` means quiet in every command (issue #18 item 3): library warnings and log records go to
`<out>/warnings.log`, llmad's own named warnings (suspicious input) still reach the user."""
from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from badinput.runner import assert_no_crash, run_cli

import llmad.metrics.classification as classification
from llmad.errors import warn


def test_baseline_quiet_logs_library_noise_and_shows_named_warnings(tmp_path, monkeypatch):
    scoring = classification.timed_scoring

    def noisy(*args, **kwargs):
        warnings.warn("a library deprecation nobody can act on", FutureWarning)
        logging.getLogger("transformers").warning("a library log record")
        warn("odd-input", "something about the user's data")
        return scoring(*args, **kwargs)

    monkeypatch.setattr(classification, "timed_scoring", noisy)
    out = tmp_path / "run"
    res = run_cli(["baseline", "--data", "flowbench:1000genome", "--limit", "60", "--out", str(out), "-q"], timeout=90)
    assert_no_crash(res)
    assert res.rc == 0, res.text[-2000:]
    assert "warning [odd-input]: something about the user's data" in res.err
    assert "deprecation" not in res.text and "log record" not in res.text
    log = (out / "warnings.log").read_text()
    assert "a library deprecation nobody can act on" in log and "a library log record" in log
    assert "odd-input" not in log


def test_numeric_quiet_still_shows_thin_validation(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.normal(0, 1, 800), np.zeros(800, int)
    for s in (200, 560, 700):  # train, validation (one event only), test
        x[s:s + 10] += 6
        y[s:s + 10] = 1
    csv = tmp_path / "series.csv"
    pd.DataFrame({"m": x, "label": y}).to_csv(csv, index=False)
    res = run_cli(["numeric", "--method", "iforest", "--data", f"csv:{csv}", "--window", "16", "--stride", "4",
                   "--out", str(tmp_path / "o"), "-q"], timeout=60)
    assert res.rc == 0, res.text[-2000:]
    assert "warning [thin-validation]: the validation part has" in res.err
    # nothing else on stderr: no progress, no library chatter
    assert [ln for ln in res.err.splitlines() if ln.strip() and not ln.startswith("warning [")] == []
