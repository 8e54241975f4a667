"""`llmad icl` end to end with the offline SmolLM2 on a few dozen real 1000genome jobs (CI)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from badinput.runner import run_cli


def icl(tmp_path, name, *extra):
    return ["icl", "--model", "smollm2-135m", "--data", "flowbench:1000genome", "--split", "run", "--seed", "0",
            "--val-limit", "8", "--out", str(tmp_path / name), *extra]


def call(args):
    """(exit code, stdout + stderr) of ``llmad ARGS`` run in this process."""
    res = run_cli(args, timeout=900)
    return res.rc, res.text


@pytest.mark.integration
def test_icl_score_with_calibration(tmp_path):
    code, out = call(icl(tmp_path, "score", "--shots", "2", "--limit", "12", "--calibrate", "content-free",
                         "--select", "balanced"))
    assert code == 0, out
    m = json.loads((tmp_path / "score" / "metrics.json").read_text())
    assert m["test_rows"] == 12 and m["validation_rows"] == 8 and m["split"] == "run"
    assert 0 <= m["accuracy"] <= 1 and "argmax" in m
    gap = m["calibration"]["gap"]["empty"]
    assert "abnormal_minus_normal_before" in gap and "abnormal_minus_normal_after" in gap
    assert len(m["demonstrations"]) == 2 and m["counters"]["label_variants"] >= 2
    pred = pd.read_csv(tmp_path / "score" / "predictions.csv")
    assert len(pred) == 12 and {"job_id", "label", "score", "prediction", "p_abnormal"} <= set(pred.columns)
    cfg = json.loads((tmp_path / "score" / "config.json").read_text())
    assert cfg["icl"]["calibrate"] == "content-free"
    assert "accuracy=" in out


@pytest.mark.integration
def test_icl_generate_and_cot(tmp_path):
    code, out = call(icl(tmp_path, "gen", "--shots", "1", "--limit", "4", "--mode", "generate"))
    assert code == 0, out
    m = json.loads((tmp_path / "gen" / "metrics.json").read_text())
    assert 0 <= m["parse_rate"] <= 1 and m["unparseable"] == m["counters"]["unparseable"]
    code, out = call(icl(tmp_path, "cot", "--shots", "1", "--limit", "2", "--mode", "cot",
                         "--max-new-tokens", "24"))
    assert code == 0, out
    lines = (tmp_path / "cot" / "reasoning.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all("reasoning" in json.loads(x) for x in lines)
    pred = pd.read_csv(tmp_path / "cot" / "predictions.csv")
    assert {"rationale", "answer", "answer_source", "p_abnormal"} <= set(pred.columns)
    m = json.loads((tmp_path / "cot" / "metrics.json").read_text())
    assert m["parse_rate"] == 1.0 and m["explicit_answer_rate"] + m["forced_answer_rate"] == 1.0  # every row answers


@pytest.mark.integration
def test_icl_lora_on_4bit(tmp_path):
    code, out = call(icl(tmp_path, "lora", "--shots", "0", "--limit", "6", "--load-in-4bit", "--lora", "4",
                         "--train-limit", "4", "--train-steps", "2", "--val-limit", "4", "-q"))
    assert code == 0, out
    # quiet: no per-step loss dicts (the Trainer prints them without tqdm), no datasets.map bars
    assert "'loss'" not in out and "Tokenizing" not in out and "examples/s" not in out, out
    m = json.loads((tmp_path / "lora" / "metrics.json").read_text())
    t = m["tuning"]
    assert t["steps"] == 2 and t["base_4bit"] is True and t["lora_r"] == 4
    assert all(x == x for x in t["losses"])  # finite, logged


def test_icl_bad_input_is_one_line(tmp_path):
    code, out = call(icl(tmp_path, "bad", "--select", "best"))
    assert code == 2 and "--select" in out and "Traceback" not in out
    code, out = call(icl(tmp_path, "bad2", "--mode", "cot", "--calibrate", "content-free"))
    assert code == 2 and "score" in out
    code, out = call(["icl", "--model", "./no/such/model", "--out", str(tmp_path / "x")])
    assert code == 2 and "does not exist" in out
