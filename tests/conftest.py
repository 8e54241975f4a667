"""Shared fixtures: tiny Flow-Bench data built in code, and the real data dir (required, never skipped)."""
from __future__ import annotations

import os

# As the CLI does (llmad/cli/__init__.py): idle OpenMP threads sleep, so torch's and sklearn's runtimes in one test
# process do not starve each other on a loaded CI machine. Before numpy/torch/sklearn load.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

HEADER = ["", "anomaly_type", "type", "is_clustered", "ready", "submit", "execute_start", "execute_end",
          "post_script_start", "post_script_end", "wms_delay", "queue_delay", "runtime", "post_script_delay",
          "stage_in_delay", "stage_in_bytes", "stage_out_delay", "stage_out_bytes", "kickstart_hostname",
          "kickstart_transformations", "kickstart_executables_cpu_time", "some_new_column"]


def make_run_frame(run: int, n_jobs: int = 12, anomalous_host: str | None = None, anomaly: str = "cpu_3",
                   seed: int = 0) -> pd.DataFrame:
    """One synthetic DAG run in the Flow-Bench layout; jobs on ``anomalous_host`` are slow and labeled."""
    rng = np.random.default_rng(seed + run)
    rows = []
    t = 1_600_000_000.0 + run * 10_000
    for j in range(n_jobs):
        host = f"worker{j % 3}"
        slow = host == anomalous_host
        runtime = float(round(rng.normal(100, 5) * (2.5 if slow else 1.0)))
        ready = t + j * 7
        start = ready + 10
        rows.append([f"job_ID{j:07d}", anomaly if slow else "None", "compute", 0, ready, ready + 5, start,
                     start + runtime, start + runtime + 1, start + runtime + 6, 5.0, 5.0, runtime, 5.0,
                     float(rng.integers(1, 20)), 1000.0 + j, 4.0, 2000.0, host, f"tr{j % 2}",
                     round(runtime * 0.9, 1), "x"])
    return pd.DataFrame(rows, columns=HEADER)


def write_zip(path: Path, frames: dict[str, pd.DataFrame], folder: str = "") -> Path:
    """Write run frames as ``<name>.csv`` members of a zip (optionally inside a folder)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, df in frames.items():
            buf = io.StringIO()
            df.to_csv(buf, index=False)
            zf.writestr(f"{folder}{name}.csv", buf.getvalue())
    return path


@pytest.fixture
def tiny_zip(tmp_path: Path) -> Path:
    """A 9-run synthetic workflow zip: 3 normal runs, 6 runs with one anomalous host."""
    frames = {}
    for r in range(1, 10):
        frames[f"toywf-run{r:04d}"] = make_run_frame(r, anomalous_host=None if r <= 3 else "worker1",
                                                     anomaly="cpu_3" if r % 2 else "hdd_5")
    return write_zip(tmp_path / "toywf.zip", frames)


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real ../shared/data (CI has it beside the clone): a missing dir is a failure, not a skip."""
    from llmad.data.specs import find_data_dir

    return find_data_dir(needs="flowbench/1000genome.zip")


@pytest.fixture(scope="session")
def genome_jobs(real_data_dir):
    """The real 1000genome job table (loaded once per session)."""
    from llmad.data.flowbench import load_jobs

    return load_jobs("flowbench:1000genome", real_data_dir)


def tiny_sft_config(model: str, **kw):
    """An ``SFTConfig`` for the tiny BERT: short sentences, a high lr, no early stopping, quiet (``kw`` wins)."""
    from llmad.detectors.sft.config import SFTConfig

    base = dict(model=model, template="compact", max_length=48, epochs=6, lr=2e-3, batch_size=16,
                eval_batch_size=64, freeze="none", early_stopping_patience=0, progress=False, logging_steps=1000,
                seed=0)
    base.update(kw)
    return SFTConfig(**base)


def make_tiny_bert(path: Path, layers: int = 2) -> Path:
    """A randomly initialised small BERT with MiniLM's WordPiece tokenizer, saved as safetensors."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from llmad.models.resolve import resolve_model

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(resolve_model("minilm").location)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=2)
    BertForSequenceClassification(cfg).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


def synthetic_jobs(n: int, seed: int = 0, jobs_per_run: int = 20) -> pd.DataFrame:
    """Jobs whose anomalies run and compute several times longer than normal ones (SFT and stream tests)."""
    from llmad.data.flowbench import PAPER_FEATURES

    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    df = pd.DataFrame({
        "workflow": "synth", "run_id": [f"synth-run{i // jobs_per_run:04d}" for i in range(n)],
        "job_id": [f"job{i}" for i in range(n)], "label": y,
        "anomaly_type": np.where(y == 1, "cpu_3", "normal"), "job_type": "compute", "host": "h1",
        "transformation": "individuals"})
    for f in PAPER_FEATURES:
        df[f] = rng.integers(1, 20, n).astype(float)
    df["runtime"] = np.where(y == 1, rng.integers(900, 999, n), rng.integers(100, 199, n)).astype(float)
    df["kickstart_executables_cpu_time"] = df["runtime"] * 0.9
    df.loc[df.index % 7 == 0, ["stage_in_delay", "stage_in_bytes"]] = np.nan
    return df
