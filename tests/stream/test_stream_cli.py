"""`llmad replay` and `llmad watch` end to end on real Flow-Bench runs with real models (subprocesses, kill -9)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def llmad(*args: str, timeout: int = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmad", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **kw)


@pytest.fixture(scope="module")
def genome_ids(real_data_dir):
    from llmad.stream import split_run_ids

    return split_run_ids("flowbench:1000genome", data_dir=real_data_dir)


@pytest.fixture(scope="module")
def rf_dir(tmp_path_factory, real_data_dir, genome_ids):
    """A real random forest on causal context features, fit on 12 train runs, saved as a detector folder."""
    from llmad.data.context import add_context_features
    from llmad.detectors.baselines import BaselineDetector
    from llmad.data.splits import subsample
    from llmad.stream import iter_runs

    def load(ids):
        return pd.concat([add_context_features(r, causal=True) for r in
                          iter_runs("flowbench:1000genome", real_data_dir, ids)], ignore_index=True)

    det = BaselineDetector("rf", "context", causal=True, n_estimators=60).fit(
        load(subsample(genome_ids["train"], 12, 0)), load(subsample(genome_ids["validation"], 4, 0)))
    out = tmp_path_factory.mktemp("rf") / "model"
    det.save(out)
    return out


def test_replay_cli_real_runs(tmp_path, rf_dir, real_data_dir):
    out = tmp_path / "replay"
    r = llmad("replay", "--model", str(rf_dir), "--data", "flowbench:1000genome", "--data-dir", str(real_data_dir),
              "--limit", "3", "--alert", "k-of-n", "--k", "1", "--n", "2", "--out", str(out), "-q")
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["runs"] == 3 and m["jobs"] == 3 * 137
    assert m["throughput"]["events"] > m["jobs"] * 5 and m["throughput"]["model_rows"] < m["throughput"]["events"]
    pred = pd.read_csv(out / "predictions.csv")
    assert len(pred) == m["jobs"]
    alerts = [json.loads(x) for x in (out / "alerts.jsonl").read_text().splitlines()]
    assert len(alerts) == int(pred["alerted"].sum()) > 0
    by_job = pred.set_index(["run_id", "job_id"])
    for a in alerts:
        row = by_job.loc[(a["run_id"], a["job_id"])]
        assert a["time"] == row["alert_time"] and row["start"] <= a["time"] <= row["job_end"]
    caught = pred[(pred["label"] == 1) & pred["alerted"]]
    assert m["caught_share"] == pytest.approx(len(caught) / max(1, (pred["label"] == 1).sum()))
    assert (out / "early_curve.png").read_bytes()[:4] == b"\x89PNG"
    curve = pd.read_csv(out / "early_curve.csv")
    assert curve["caught_share"].iloc[-1] == pytest.approx(m["caught_share"])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["stream"]["alert"] == "k-of-n" and len(cfg["runs"]) == 3

    feats = tmp_path / "features"
    r = llmad("replay", "--model", str(rf_dir), "--data", "flowbench:1000genome", "--data-dir", str(real_data_dir),
              "--split", "none", "--limit", "2", "--reveal", "features", "--out", str(feats), "-q")
    assert r.returncode == 0, r.stderr
    steps = pd.read_csv(feats / "features_steps.csv")
    assert list(steps["step"]) == [f"T{i}" for i in range(1, 10)]
    assert steps["correct_by_step_share_anomalous"].is_monotonic_increasing


def test_replay_cli_bad_input_is_one_line(tmp_path):
    r = llmad("replay", "--model", str(tmp_path / "nope"), "--limit", "1")
    assert r.returncode == 2 and "llmad: error:" in r.stderr and "Traceback" not in r.stderr
    r = llmad("replay", "--model", "baseline:rf", "--reveal", "sideways")
    assert r.returncode == 2 and "--reveal" in r.stderr


def test_replay_cli_sft_model(tmp_path, real_data_dir):
    """A real MiniLM SFT model (two steps of training, prefix-augmented) replayed on two small runs."""
    from llmad.detectors.sft.detector import SFTConfig, SFTDetector
    from llmad.stream import iter_runs, list_run_members

    spec = "flowbench:eht_imaging"  # 12 jobs per run: keeps MiniLM scoring on 2 CPU cores short
    ids = [m[0] for m in list_run_members(spec, real_data_dir)]
    tr = pd.concat(iter_runs(spec, real_data_dir, ids[:4]), ignore_index=True)
    va = pd.concat(iter_runs(spec, real_data_dir, ids[4:6]), ignore_index=True)
    det = SFTDetector(SFTConfig(max_steps=2, batch_size=8, progress=False, prefix_augment=True,
                                early_stopping_patience=0))
    det.fit(tr, va, output_dir=tmp_path / "ckpt")
    det.save(tmp_path / "sft")
    out = tmp_path / "replay"
    r = llmad("replay", "--model", str(tmp_path / "sft"), "--data", spec, "--data-dir", str(real_data_dir),
              "--split", "none", "--limit", "2", "--out", str(out), "-q")
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["jobs"] == 24 and m["throughput"]["by_text"] is True
    pred = pd.read_csv(out / "predictions.csv")
    assert pred["max_score"].between(0, 1).all() and (pred["observations"] > 0).all()


# ---------------------------------------------------------------------------------------------------- watch
def _state_offset(path: Path) -> int:
    try:
        return int(json.loads(path.read_text())["offset"])
    except (OSError, ValueError, KeyError):
        return 0


def test_watch_kill9_resume_equals_uninterrupted(tmp_path, rf_dir, real_data_dir, genome_ids):
    from llmad.stream import iter_runs, write_feed

    feed = tmp_path / "feed.jsonl"
    n = write_feed(iter_runs("flowbench:1000genome", real_data_dir, genome_ids["test"][:3]), feed)
    assert n > 2000
    data = feed.read_bytes()

    full = tmp_path / "full.jsonl"
    r = llmad("watch", str(feed), "--model", str(rf_dir), "--alerts", str(full), "--no-follow")
    assert r.returncode == 0, r.stderr
    expected = full.read_bytes()
    assert expected.count(b"\n") > 5

    # The same feed, growing in chunks cut mid-line, watched by a process that is killed -9 twice.
    live = tmp_path / "live.jsonl"
    live.write_bytes(b"")
    alerts, state = tmp_path / "live.alerts", tmp_path / "live.alerts.state.json"
    done = threading.Event()

    def writer():
        step = max(1, len(data) // 40)
        for i in range(0, len(data), step):
            with open(live, "ab") as fh:
                fh.write(data[i:i + step])
            time.sleep(0.15)
        done.set()

    th = threading.Thread(target=writer)
    th.start()
    cmd = [sys.executable, "-m", "llmad", "watch", str(live), "--model", str(rf_dir), "--alerts", str(alerts),
           "--batch-lines", "40", "--checkpoint-s", "0", "--poll", "0.05"]
    kills = []
    try:
        for _ in range(2):
            p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            start_off = _state_offset(state)
            t0 = time.time()
            while _state_offset(state) <= start_off + 5000 and time.time() - t0 < 120 and p.poll() is None:
                time.sleep(0.05)
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            kills.append(_state_offset(state))
        th.join()
        r = subprocess.run(cmd[:-6] + ["--no-follow"], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert "resumed=True" in r.stderr
    finally:
        done.wait(timeout=60)
        th.join(timeout=60)
    assert all(0 < k < len(data) for k in kills), kills  # both kills landed mid-stream
    assert alerts.read_bytes() == expected
