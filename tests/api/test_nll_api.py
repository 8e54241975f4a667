"""``llmad nll`` end to end on a tiny synthetic workflow zip with a tiny Llama: the run folder (per-field NLL in
predictions.csv, threshold rule in metrics.json), the saved model opened by ``llmad.detectors.load`` and replayed
by ``llmad replay`` (partial jobs), the CLI with LoRA, and the real SmolLM2 at a tiny size (integration)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from nll_fixtures import tiny_nll_lm  # noqa: E402

import llmad.detectors  # noqa: E402
from llmad.api.hooks import QUIET  # noqa: E402
from llmad.api.nll import NLLRunConfig, run_nll  # noqa: E402
from llmad.config import DataConfig  # noqa: E402
from llmad.detectors.nll.config import NLLConfig  # noqa: E402


@pytest.fixture(scope="module")
def lm_path(tmp_path_factory) -> Path:
    return tiny_nll_lm(tmp_path_factory.mktemp("nll-api") / "tiny")


def test_run_nll_writes_per_field_nll_and_a_replayable_model(tiny_zip, tmp_path, lm_path):
    from llmad.api.replay import run_replay
    from llmad.stream import StreamConfig

    cfg = NLLRunConfig(data=DataConfig(spec=str(tiny_zip), split="run", seed=1),
                       nll=NLLConfig(model=str(lm_path), epochs=2, learning_rate=1e-2, permutations=2, lora_r=0,
                                     threshold="contamination:0.1", threshold_rows=64, progress=False),
                       out=str(tmp_path / "n"))
    res = run_nll(cfg, hooks=QUIET)
    out = tmp_path / "n"
    preds = pd.read_csv(out / "predictions.csv")
    assert {"score", "prediction", "top_field", "nll_runtime", "nll_ctx_host_slowness", "nll_transformation"} \
        <= set(preds.columns)
    m = json.loads((out / "metrics.json").read_text())
    assert m["threshold_rule"].startswith("contamination:0.1") and m["supervision"] == "none"
    assert m["labels_used"] == "none for training" and m["fields_nll"]["runtime"]["mean_nll"] > 0
    assert 0 <= m["test"]["roc_auc"] <= 1 and "contamination:0.1" in res.summary
    det = llmad.detectors.load(out)  # the run folder opens its model/
    assert det.kind == "nll" and det.threshold_ == m["threshold"]
    np.testing.assert_allclose(det.score(_test_rows(cfg)), preds["score"], rtol=1e-5)
    rep = run_replay(str(out / "model"), str(tiny_zip), StreamConfig(), split="run", seed=1, out=tmp_path / "r")
    assert rep.metrics["anomalous_jobs"] > 0 and np.isfinite(rep.predictions["max_score"]).any()
    assert rep.details["throughput"]["model_rows"] > 0


def _test_rows(cfg: NLLRunConfig) -> pd.DataFrame:
    from llmad.data import load_split

    return load_split(cfg.data.spec, split="run", seed=1, context=True).test


def test_cli_nll_with_lora_and_train_quantile(tiny_zip, tmp_path, lm_path, capsys):
    from llmad.cli import main

    main(["nll", "-d", str(tiny_zip), "--seed", "1", "-m", str(lm_path), "--fields", "paper", "--lora", "4",
          "--epochs", "1", "--permutations", "1", "--threshold", "train-quantile:0.9", "--limit", "5",
          "-o", str(tmp_path / "c")])
    out = capsys.readouterr().out
    assert "train-quantile:0.9" in out and "jobs/s" in out
    m = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert m["train"]["mode"] == "lora r=4" and m["test_rows"] == 5
    assert (tmp_path / "c" / "model" / "model" / "config.json").is_file()  # LoRA merged into the saved weights


@pytest.mark.integration
def test_real_smollm2_two_layers_learns_the_values(tmp_path):
    """SmolLM2-135M (first 2 decoder layers, LoRA) on synthetic jobs: fit + score in seconds, a planted value
    scores higher, and the value vocabulary is small."""
    from conftest import synthetic_jobs

    from llmad.detectors.nll.detector import NLLDetector

    tr = synthetic_jobs(64, 0)
    det = NLLDetector(config=NLLConfig(keep_layers=2, fields="paper", max_steps=8, batch_size=8,
                                       permutations=1, threshold="train-quantile:0.9", threshold_rows=16,
                                       progress=False)).fit(tr, None)
    assert det.train_info_["layers"] == {"kept": 2, "of": 30} and det.train_info_["value_vocab"] < 200
    normal = tr[tr["label"] == 0].head(8).reset_index(drop=True)
    bad = normal.copy()
    bad["queue_delay"] = 7.7e7
    assert (det.score(bad) > det.score(normal)).mean() >= 0.75


def test_run_nll_on_metric_windows(tmp_path, lm_path):
    """A CSV metric series: the window variant through the numeric track (point threshold, time-series metrics)."""
    rng = np.random.default_rng(0)
    n = 900
    x = rng.normal(0, 1, (n, 2))
    y = np.zeros(n, int)
    for a in (150, 300, 560, 620, 780, 840):
        y[a:a + 20] = 1
        x[a:a + 20] += 5.0
    pd.DataFrame({"cpu": x[:, 0], "mem": x[:, 1], "label": y}).to_csv(tmp_path / "s.csv", index=False)
    cfg = NLLRunConfig(data=DataConfig(spec=f"csv:{tmp_path / 's.csv'}"), window=32,
                       nll=NLLConfig(model=str(lm_path), epochs=5, learning_rate=1e-2, permutations=1, lora_r=0,
                                     threshold="validation", threshold_rows=16, progress=False),
                       out=str(tmp_path / "w"))
    res = run_nll(cfg, hooks=QUIET)
    m = json.loads((tmp_path / "w" / "metrics.json").read_text())
    assert m["method"] == "nll" and m["threshold_rule"] == "val" and 0 <= m["test"]["roc_auc"] <= 1
    assert llmad.detectors.load(tmp_path / "w" / "detector").kind == "window-nll"
    assert res.summary.startswith("nll on csv:")
