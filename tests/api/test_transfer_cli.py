"""`llmad transfer` (OmniTransfer) through the real CLI on a tiny multi-entity CSV folder, and its bad-input errors."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from badinput.runner import run_cli


def entities(folder, n: int = 6, length: int = 500):
    """``n`` CSV entities (two period families), level shifts in their validation and test stretches."""
    folder.mkdir()
    t = np.arange(length)
    for i in range(n):
        rng = np.random.default_rng(i)
        period = 20 if i % 2 else 50
        v = np.stack([np.sin(2 * np.pi * t / period + k) for k in range(3)], 1) + 0.1 * rng.normal(size=(length, 3))
        lab = np.zeros(length, int)
        for a in (330, 350, 420, 460):  # validation = 60-80%, test = 80-100% of each file
            v[a:a + 5] += 5.0
            lab[a:a + 5] = 1
        pd.DataFrame({"cpu": v[:, 0], "mem": v[:, 1], "net": v[:, 2], "label": lab}).to_csv(
            folder / f"host{i}.csv", index=False)
    return folder


def test_transfer_writes_a_run(tmp_path):
    data = entities(tmp_path / "hosts")
    out = tmp_path / "run"
    res = run_cli(["transfer", "--data", f"csv:{data}", "--window", "16", "--new-days", "0.1", "--max-steps", "8",
                   "--transfer-steps", "4", "--base-steps", "6", "--out", out, "-q"], timeout=600)
    assert res.rc == 0, res.text
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["offline_entities"]) == 3 and len(m["new_entities"]) == 3
    assert m["clustering"]["n_clusters"] == 2
    for e in m["entities"]:
        assert e["mode"] in ("full", "partial") and e["transfer"]["steps"] == 4 and e["scratch"]["steps"] == 8
        assert e["transfer"]["train_points"] == 144 and 0 <= e["transfer"]["f1"] <= 1
    s = m["summary"]
    assert s["training_cost_reduction"] == pytest.approx(0.5)
    assert {"init_time_reduction", "f1_loss"} <= set(s)
    assert "pa_f1_INFLATED" in m["transfer"] and "vus_pr" in m["scratch"]
    assert (out / "detectors").is_dir() and (out / "predictions.csv").is_file()
    assert "omnitransfer lstm-ae" in res.out


def test_transfer_bad_input_is_one_line_exit_2(tmp_path):
    data = entities(tmp_path / "hosts", n=2)
    for argv, msg in ((["--method", "iforest"], "--method"), (["--offline-fraction", "1.5"], "offline-fraction"),
                      (["--data", "asd:omi-99"], "unknown machine"),
                      (["--data", f"csv:{data}", "--limit", "1"], "at least 2 entities")):
        argv = ["transfer", "--data", f"csv:{data}", *argv, "--out", str(tmp_path / f"o{len(msg)}")]
        res = run_cli(argv, timeout=120)
        assert res.rc == 2 and msg in res.err and "Traceback" not in res.err, res.text


def test_threshold_falls_back_to_pooled_validation():
    from llmad.api.transfer import evaluate

    rng = np.random.default_rng(0)
    y = np.zeros(200, int)
    y[50:60] = 1
    s = rng.random(200) + 2 * y
    recs = {"a": {"val_y": y, "val_s": s, "test_y": y, "test_s": s},
            "b": {"val_y": np.zeros(200, int), "val_s": rng.random(200), "test_y": y, "test_s": s}}
    evaluate({"transfer": recs}, vus_window=5)
    assert recs["a"]["threshold_source"] == "own validation" and recs["b"]["threshold_source"] == "pooled validation"
    assert recs["a"]["metrics"]["f1"] == 1.0 and recs["b"]["metrics"]["event_recall"] == 1.0


def test_transfer_wraps_duallmad(tmp_path):
    """The same protocol over the DualLMAD detector (a tiny Llama backbone built here): base, transfer, scratch."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmad.api.transfer import TransferConfig, run_transfer

    torch.manual_seed(0)
    lm = tmp_path / "tiny-llama"
    LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=64, max_position_embeddings=128)
                     ).save_pretrained(str(lm))
    data = entities(tmp_path / "hosts")
    res = run_transfer(TransferConfig(data=f"csv:{data}", method="duallmad", model=str(lm), window=16, new_days=0.1,
                                      max_steps=6, transfer_steps=4, base_steps=6, out=str(tmp_path / "run"),
                                      extra={"patch": 4, "stage2": False}))
    m = res.metrics
    assert len(m["new_entities"]) == 3
    for e in m["entities"]:
        assert e["mode"] in ("full", "partial") and e["transfer"]["steps"] == 4
    assert {"training_cost_reduction", "f1_loss"} <= set(m["summary"])
