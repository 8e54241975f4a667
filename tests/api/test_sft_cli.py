"""`llmad sft` / `llmad predict` end to end on real Flow-Bench jobs: the real MiniLM for a few steps, predict scores
equal to the run's own, kill -9 mid-training then --resume, the offline hub-id message, and a 2-process torchrun."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmad.data.specs import find_data_dir
from llmad.detectors.sft.training import latest_checkpoint

from conftest import make_tiny_bert

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory) -> str:
    """Five real 1000genome DAG runs with injected anomalies (685 jobs) as a Flow-Bench folder."""
    from llmad.data.flowbench import read_run_csv

    src = find_data_dir(needs="flowbench/1000genome.zip") / "flowbench" / "1000genome.zip"
    dst = tmp_path_factory.mktemp("fb") / "1000genome"
    dst.mkdir()
    z = zipfile.ZipFile(src)
    kept = 0
    for name in sorted(n for n in z.namelist() if n.endswith(".csv")):
        raw = z.read(name)
        if read_run_csv(raw, name)["label"].sum() > 0:  # every part of the run split then has anomalies
            (dst / Path(name).name).write_bytes(raw)
            kept += 1
        if kept == 5:
            break
    return f"flowbench:{dst}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return str(make_tiny_bert(tmp_path_factory.mktemp("tiny")))


def llmad(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    e = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    return subprocess.run([PY, "-m", "llmad", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=e)


def test_sft_minilm_end_to_end_then_predict_scores_equal(real_runs, tmp_path):
    out = tmp_path / "run"
    r = llmad("sft", "--model", "minilm", "--data", real_runs, "--max-steps", "4", "--eval-steps", "2",
              "--batch-size", "16", "--out", str(out), "-q")
    assert r.returncode == 0, r.stderr[-3000:]
    # -q: only the summary line (quiet means quiet; the per-evaluation lines are in train_log.json)
    assert r.stdout.strip().splitlines() == [r.stdout.strip()] and r.stdout.startswith("sft minilm")
    assert "{'loss'" not in r.stdout + r.stderr and "validation loss" not in r.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["sizes"]["train"] > 300 and m["train"]["steps"] == 4
    assert 0.0 <= m["test"]["accuracy"] <= 1.0 and "f1" in m["test"] and "roc_auc" in m["test"]
    assert m["template"] == "compact" and m["split"] == "run"
    for f in ("config.json", "predictions.csv", "provenance.json", "model/detector.json",
              "model/model/model.safetensors"):
        assert (out / f).is_file(), f
    assert not (out / "checkpoints").exists()  # removed once the final model is saved
    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) == m["sizes"]["test"]

    p = llmad("predict", "--model", str(out / "model"), "--data", real_runs, "--split", "run", "--part", "test",
              "--out", str(tmp_path / "pred"))
    assert p.returncode == 0, p.stderr[-3000:]
    again = pd.read_csv(tmp_path / "pred" / "predictions.csv")
    assert list(again["job_id"]) == list(preds["job_id"])
    assert np.array_equal(again["score"].to_numpy(), preds["score"].to_numpy())
    pm = json.loads((tmp_path / "pred" / "metrics.json").read_text())
    assert pm["report"]["accuracy"] == pytest.approx(m["test"]["accuracy"])


def test_offline_hub_id_names_the_aliases():
    r = llmad("sft", "--model", "some-org/not-a-cached-model", env={"HF_HUB_OFFLINE": "1"}, timeout=120)
    assert r.returncode == 2
    assert "minilm" in r.stderr and "offline" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_freeze_is_a_one_line_error():
    r = llmad("sft", "--freeze", "half", timeout=120)
    assert r.returncode == 2 and "--freeze" in r.stderr and "Traceback" not in r.stderr
    r = llmad("sft", "--precision", "fp8", timeout=120)
    assert r.returncode == 2 and "--precision" in r.stderr and "bf16" in r.stderr and "Traceback" not in r.stderr


def test_kill_mid_training_then_resume_finishes(real_runs, tiny, tmp_path):
    out = tmp_path / "run"
    args = ["sft", "--model", tiny, "--data", real_runs, "--max-steps", "24", "--eval-steps", "6",
            "--batch-size", "8", "--out", str(out), "-q"]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen([PY, "-m", "llmad", *args], cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 240
        while latest_checkpoint(out / "checkpoints") is None:
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    log.close()
    assert not (out / "metrics.json").exists()
    step = int(Path(latest_checkpoint(out / "checkpoints")).name.split("-")[1])
    assert step < 24

    again = llmad(*args[:-1])  # same options, no --resume: refuses to overwrite
    assert again.returncode == 2 and "--resume" in again.stderr

    r = llmad(*args, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["train"]["steps"] == 24
    assert m["train"]["resumed_from"].endswith(f"checkpoint-{step}")
    assert (out / "model" / "model" / "model.safetensors").is_file()


def test_torchrun_two_processes(real_runs, tiny, tmp_path):
    torchrun = Path(PY).with_name("torchrun")
    out = tmp_path / "ddp"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "llmad", "sft",
                        "--model", tiny, "--data", real_runs, "--max-steps", "4", "--eval-steps", "2",
                        "--batch-size", "8", "--out", str(out), "-q"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    m = json.loads((out / "metrics.json").read_text())
    assert m["train"]["world_size"] == 2 and m["train"]["steps"] == 4
    assert (out / "model" / "model" / "model.safetensors").is_file()
