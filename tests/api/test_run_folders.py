"""Run folders the README promises (issue #18 item 4) and progress / quiet (item 3).

Every command's run folder holds config.json with the resolved values (command, absolute out, the data folder
read, defaults filled), predictions.csv with the common id columns (job commands), provenance.json (commit,
versions) and metrics.json, written last. Each command runs once at its cheapest settings (a few dozen jobs,
tiny in-test models); `sft -q` prints the summary line only, and ICL scoring reports progress through the hooks.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from badinput.runner import assert_no_crash, run_cli
from icl_fixtures import smol_tokenizer, tiny_gpt2  # noqa: F401 (smol_tokenizer is a fixture)

from conftest import make_tiny_bert
from llmad.api.hooks import RunHooks
from llmad.api.icl import ICLRun, run_icl
from llmad.api.result import ID_COLUMNS
from llmad.detectors.icl.config import ICLConfig

DATA = "flowbench:1000genome"


def _ok(argv: list, timeout: float = 90):
    res = run_cli([str(a) for a in argv], timeout=timeout)
    assert_no_crash(res)
    assert res.rc == 0, res.text[-3000:]
    return res


def check_run_folder(out: Path, command: str, id_columns=ID_COLUMNS, data_dir: bool = True) -> dict:
    """The promised files, config.json resolved, metrics.json the newest file; returns config.json."""
    for name in ("config.json", "metrics.json", "provenance.json"):
        assert (out / name).is_file(), f"{command}: no {name} in {sorted(p.name for p in out.iterdir())}"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["command"] == command
    assert cfg["out"] == str(out.resolve())
    if data_dir:
        assert cfg["data_dir"] and Path(cfg["data_dir"]).is_absolute() and Path(cfg["data_dir"]).is_dir()
    prov = json.loads((out / "provenance.json").read_text())
    assert "versions" in prov and "git_commit" in prov and prov["versions"].get("pandas")
    json.loads((out / "metrics.json").read_text())
    newest = max((p for p in out.iterdir() if p.is_file() and p.name != "warnings.log"),
                 key=lambda p: p.stat().st_mtime_ns)
    assert newest.name == "metrics.json", f"{command}: {newest.name} written after metrics.json"
    if id_columns:
        preds = pd.read_csv(out / "predictions.csv")
        assert list(preds.columns[:len(id_columns)]) == list(id_columns), f"{command}: {list(preds.columns)}"
        assert len(preds) > 0
    return cfg


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rf") / "run"
    _ok(["baseline", "--data", DATA, "--limit", "60", "--out", out, "-q"])
    return out


def test_baseline_run_folder(baseline_run):
    cfg = check_run_folder(baseline_run, "baseline")
    # defaults filled: every config field is written, not only the options given
    assert cfg["baseline"]["method"] == "rf" and cfg["baseline"]["n_estimators"] > 0
    assert cfg["data"]["split"] == "run" and cfg["data"]["limit"] == 60


def test_predict_and_replay_run_folders(baseline_run, tmp_path):
    _ok(["predict", "-m", baseline_run / "model", "-d", DATA, "--limit", "30", "-o", tmp_path / "p", "-q"])
    cfg = check_run_folder(tmp_path / "p", "predict")
    assert cfg["limit"] == 30 and cfg["seed"] == 0
    res = _ok(["replay", "-m", baseline_run / "model", "--data", DATA, "--limit", "1", "-o", tmp_path / "r", "-q"])
    assert res.err == ""  # -q: no progress lines
    check_run_folder(tmp_path / "r", "replay")


def test_sft_quiet_run_folder_and_max_steps_note(tmp_path):
    tiny = make_tiny_bert(tmp_path / "tiny")
    argv = ["sft", "-m", tiny, "--data", DATA, "--limit", "60", "--max-steps", "2", "--max-length", "48",
            "--batch-size", "16", "--patience", "0"]
    res = _ok([*argv, "-o", tmp_path / "q", "-q"])
    # quiet means quiet: the summary line only; no Trainer dict, no progress bar, no library warning
    assert res.out.strip().splitlines() == [res.out.strip()] and res.out.startswith("sft ")
    assert res.err.strip() == "" and "{'" not in res.out
    cfg = check_run_folder(tmp_path / "q", "sft")
    assert cfg["run"]["sft"]["epochs"] == 3.0 and cfg["run"]["sft"]["max_steps"] == 2  # defaults filled
    # without -q the run says that --max-steps overrides --epochs, in one line
    res = _ok([*argv, "-o", tmp_path / "loud"])
    note = [ln for ln in res.out.splitlines() if "overrides --epochs" in ln]
    assert len(note) == 1 and "--max-steps 2" in note[0]


def test_icl_run_folder_and_scoring_progress(smol_tokenizer, tmp_path):  # noqa: F811
    stages: list[tuple[str, float | None]] = []
    ticks: dict[str, float] = {}

    def stage(text, total=None):
        stages.append((text, total))
        ticks[text] = 0

    def advance(n=1):
        ticks[stages[-1][0]] += n

    hooks = RunHooks(log=None, stage=stage, advance=advance)
    run = ICLRun(data=DATA, limit=6, val_limit=5, out=str(tmp_path / "icl"))
    run_icl(ICLConfig(shots=1, batch_size=2), run, hooks=hooks, lm=tiny_gpt2(smol_tokenizer))
    check_run_folder(tmp_path / "icl", "icl")
    # validation scoring (inside fit) and test scoring each advance their bar to its total, prompt by prompt
    scored = [(text, total) for text, total in stages if total]
    assert [total for _, total in scored] == [5, 6], stages
    for text, total in scored:
        assert ticks[text] == total, (text, ticks)


def test_numeric_pretrain_and_compare_run_folders(tmp_path):
    _ok(["numeric", "--method", "iforest", "--data", "asd:omi-1", "-o", tmp_path / "n", "-q"])
    check_run_folder(tmp_path / "n", "numeric", id_columns=("series", "point", "label"))
    _ok(["pretrain", "moment", "--data", "asd:omi-2", "--seq-len", "16", "--d-model", "8", "--layers", "1",
         "--heads", "2", "--max-steps", "1", "--batch-size", "8", "--limit", "16", "-o", tmp_path / "m", "-q"])
    cfg = check_run_folder(tmp_path / "m", "pretrain moment", id_columns=())
    assert cfg["pretrain"]["steps"] == 1 and (tmp_path / "m" / "model" / "config.json").is_file()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: tiny\nseeds: [0]\ndatasets:\n  - {{name: g, spec: '{DATA}', limit: 40}}\n"
                      "methods:\n  - {method: baseline, name: rf, config: {method: rf, n_estimators: 5}}\n"
                      "report: {plots: false, bootstrap: 20}\n")
    res = run_cli(["compare", recipe, "-o", tmp_path / "c", "-q"], timeout=90)
    assert_no_crash(res)
    cfg = check_run_folder(tmp_path / "c", "compare", id_columns=())
    assert cfg["recipe"]["name"] == "tiny"
    m = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert m["runs"]["done"] >= 1 and all(os.path.isdir(tmp_path / "c" / s["run_dir"]) for s in m["status"])
