"""``llmad.api.replay.run_replay`` as a notebook calls it: one RunResult, the run folder the CLI writes, hooks."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from llmad.api.hooks import RunHooks
from llmad.api.replay import open_detector, run_replay
from llmad.api.result import RunResult
from llmad.errors import LlmadError
from llmad.io import to_jsonable
from llmad.stream import ReplayResult, StreamConfig


def test_run_replay_returns_the_run_folder_as_a_run_result(tiny_zip, tmp_path):
    logs, stages, steps = [], [], []
    hooks = RunHooks(log=logs.append, stage=lambda text, total=None: stages.append((text, total)),
                     advance=steps.append)
    res = run_replay("baseline:rf-context", str(tiny_zip), StreamConfig(), split="run", seed=1,
                     out=tmp_path / "r", hooks=hooks)
    assert isinstance(res, RunResult) and res.out_dir == tmp_path / "r"
    assert to_jsonable(res.metrics) == json.loads((tmp_path / "r" / "metrics.json").read_text())
    pd.testing.assert_frame_equal(res.predictions, pd.read_csv(tmp_path / "r" / "predictions.csv"))
    runs = json.loads((tmp_path / "r" / "config.json").read_text())["runs"]
    assert stages == [(f"replaying {len(runs)} runs", len(runs))]
    assert len(logs) == len(steps) == len(runs) and logs[0].startswith("run 1 ")
    assert isinstance(res.details["replay_result"], ReplayResult)
    assert res.details["threshold"] == res.metrics["threshold"]
    for name in res.artifacts.values():
        assert (tmp_path / "r" / name).is_file(), name
    assert res.summary.startswith(f"{len(runs)} runs, ")


def test_open_detector_needs_a_saved_detector(tmp_path):
    with pytest.raises(LlmadError, match="no such folder"):
        open_detector(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LlmadError, match="detector.json"):
        open_detector(str(tmp_path / "empty"))
