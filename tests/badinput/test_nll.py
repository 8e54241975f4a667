"""``llmad nll`` on bad input: wrong option values are one error line before any work; a missing field is written
as missing and a huge value is cut with a named warning, never a crash."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tests.badinput.runner import assert_user_error, run_cli

sys.path.insert(0, str(Path(__file__).parents[1]))
from conftest import synthetic_jobs  # noqa: E402
from nll_fixtures import tiny_nll_lm  # noqa: E402


@pytest.mark.parametrize("args, needle", [
    (["--threshold", "top5"], "--threshold"),
    (["--threshold", "contamination:0.9"], "contamination"),
    (["--permutations", "0"], "--permutations"),
    (["--load-in-4bit", "--lora", "0"], "--lora"),
    (["--precision", "fp8"], "--precision"),
    (["--keep-layers", "0"], "--keep-layers"),
])
def test_bad_options_fail_before_any_work(args, needle, tmp_path):
    res = run_cli(["nll", "-d", "flowbench:1000genome", "-o", str(tmp_path / "o"), *args])
    assert_user_error(res, needle)
    assert not (tmp_path / "o").exists()


def test_missing_fields_and_huge_values_are_scored_not_fatal(tmp_path, capsys):
    from llmad.detectors.nll.config import NLLConfig
    from llmad.detectors.nll.detector import NLLDetector

    lm = tiny_nll_lm(tmp_path / "tiny")
    det = NLLDetector(config=NLLConfig(model=str(lm), fields="paper,transformation", epochs=1, permutations=1,
                                       lora_r=0, threshold="train-quantile:0.9", threshold_rows=16,
                                       progress=False)).fit(synthetic_jobs(40, 0), None)
    jobs = synthetic_jobs(6, 1)
    jobs.loc[0, "transformation"] = "x" * 100_000
    jobs.loc[1, ["runtime", "queue_delay"]] = np.nan
    jobs.loc[2, "runtime"] = 1e308
    jobs = jobs.drop(columns=["wms_delay"])  # a column the detector reads is absent: missing everywhere
    d = det.score_details(jobs)
    assert np.isfinite(d["score"]).all() and (d["fields_scored"] == 10).all()
    assert "warning [long-value]" in capsys.readouterr().err
