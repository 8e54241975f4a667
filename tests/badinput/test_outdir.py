"""Output paths (issue #16 item 3): an ``--out`` that is a file, sits under a file, is unwritable, or is a folder
where a file is expected fails before any work with one ``llmad: error:`` line (exit 2); an ``--out`` holding an
earlier run is refused unless ``--resume`` / ``--force``, and ``--force`` leaves no stale file of the earlier run.

Every command that takes an output path is listed below with cheap arguments: the checks run before any data or
model is loaded, so each failing case takes well under a second in-process.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llmad.errors import LlmadError
from llmad.rundir import check_out
from badinput.runner import assert_no_crash, assert_nothing_partial, assert_user_error, run_cli

ROOT = Path(__file__).resolve().parents[2]
LIMIT = ["--limit", "20"]


def _dir_commands(model: Path) -> dict[str, list[str]]:
    """Commands whose output is a run folder -> argv before ``--out`` (cheap: they must fail before work)."""
    return {
        "baseline": ["baseline", *LIMIT],
        "sft": ["sft", *LIMIT],
        "icl": ["icl", *LIMIT],
        "predict": ["predict", "-m", str(model), "-d", "flowbench:1000genome", *LIMIT],
        "replay": ["replay", "-m", str(model), "--limit", "1"],
        "numeric": ["numeric", "--method", "iforest"],
        "compare": ["compare", str(ROOT / "recipes" / "ci_tiny.yaml")],
        "pretrain": ["pretrain", "moment", "--data", "asd:omi-1", "--max-steps", "1"],
    }


def _file_commands(model: Path) -> dict[str, tuple[list[str], str]]:
    """Commands whose output is one file -> (argv before the flag, the flag)."""
    return {
        "render": (["render", "flowbench:1000genome"], "--out"),
        "windows-text": (["windows-text", "--limit", "2"], "--out"),
        "watch-alerts": (["watch", "feed.csv", "-m", str(model), "--no-follow"], "--alerts"),
        "watch-state": (["watch", "feed.csv", "-m", str(model), "--no-follow"], "--state"),
        "data-import": (["data", "import", "table.csv"], "--out"),
        "data-import-map": (["data", "import", "table.csv", "--infer"], "--map-out"),
    }


@pytest.fixture()
def earlier_run(tmp_path) -> Path:
    """A folder holding an earlier run, as llmad leaves it (stale files a new run must not mix with)."""
    d = tmp_path / "earlier"
    (d / "model" / "model").mkdir(parents=True)
    for name in ("config.json", "metrics.json", "provenance.json", "sft_run.json", "train_log.json"):
        (d / name).write_text("{}\n")
    (d / "model" / "detector.json").write_text("{}\n")
    return d


DIR_NAMES = sorted(_dir_commands(Path("m")))
FILE_NAMES = sorted(_file_commands(Path("m")))


@pytest.mark.parametrize("name", DIR_NAMES)
def test_run_folder_out_that_is_a_file(name, tmp_path):
    f = tmp_path / "a-file"
    f.write_text("keep me\n")
    res = run_cli([*_dir_commands(tmp_path)[name], "--out", f], timeout=20)
    assert_user_error(res, str(f), "is a file")
    assert f.read_text() == "keep me\n"


@pytest.mark.parametrize("name", DIR_NAMES)
def test_run_folder_out_under_a_file(name, tmp_path):
    f = tmp_path / "a-file"
    f.write_text("")
    res = run_cli([*_dir_commands(tmp_path)[name], "--out", f / "run"], timeout=20)
    assert_user_error(res, str(f / "run"), "is a file")
    assert f.is_file()


@pytest.mark.parametrize("name", DIR_NAMES)
def test_run_folder_out_unwritable(name, tmp_path):
    if os.geteuid() == 0:
        target = Path("/proc/llmad-out")  # root writes through chmod; /proc refuses new folders to everyone
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        target = locked / "run"
    try:
        res = run_cli([*_dir_commands(tmp_path)[name], "--out", target], timeout=20)
    finally:
        if os.geteuid() != 0:
            (tmp_path / "locked").chmod(0o700)
    assert_user_error(res, str(target), "not writable")
    assert not target.exists()


@pytest.mark.parametrize("name", DIR_NAMES)
def test_reusing_an_earlier_run_is_refused(name, tmp_path, earlier_run):
    before = sorted(p.relative_to(earlier_run) for p in earlier_run.rglob("*"))
    res = run_cli([*_dir_commands(tmp_path)[name], "--out", earlier_run], timeout=20)
    line = assert_user_error(res, str(earlier_run), "earlier run", "--force")
    if name == "sft":
        assert "--resume" in line
    assert sorted(p.relative_to(earlier_run) for p in earlier_run.rglob("*")) == before  # untouched
    assert_nothing_partial(earlier_run)


@pytest.mark.parametrize("name", FILE_NAMES)
def test_file_out_that_is_a_folder(name, tmp_path):
    argv, flag = _file_commands(tmp_path)[name]
    res = run_cli([*argv, flag, tmp_path], timeout=20, cwd=tmp_path)
    assert_user_error(res, flag, str(tmp_path), "is a folder")


@pytest.mark.parametrize("name", FILE_NAMES)
def test_file_out_under_a_file(name, tmp_path):
    f = tmp_path / "a-file"
    f.write_text("")
    argv, flag = _file_commands(tmp_path)[name]
    res = run_cli([*argv, flag, f / "x.csv"], timeout=20, cwd=tmp_path)
    assert_user_error(res, flag, "is a file")


def test_force_replaces_an_earlier_run_without_stale_files(tmp_path, earlier_run):
    res = run_cli(["baseline", "--limit", "60", "--out", earlier_run, "--force", "-q"],
                  timeout=60)
    assert_no_crash(res)
    assert res.rc == 0, res.text
    names = {p.name for p in earlier_run.iterdir()}
    assert {"sft_run.json", "train_log.json"}.isdisjoint(names)  # nothing of the earlier (SFT) run is left
    assert not (earlier_run / "model" / "model").exists()
    assert json.loads((earlier_run / "config.json").read_text())["command"] == "baseline"
    assert (earlier_run / "metrics.json").is_file()
    assert_nothing_partial(earlier_run)


def test_force_never_clears_a_folder_that_is_not_a_run(tmp_path):
    d = tmp_path / "notes"
    d.mkdir()
    (d / "thesis.tex").write_text("precious\n")
    with pytest.raises(LlmadError, match="holds other files"):
        check_out(d, force=True)
    assert (d / "thesis.tex").read_text() == "precious\n"
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        (tmp_path / "config.json").write_text("{}")
        with pytest.raises(LlmadError, match="current folder"):
            check_out(tmp_path, force=True)
    finally:
        os.chdir(here)


def test_reuse_that_is_the_point_is_not_refused(tmp_path, earlier_run):
    # sft --resume continues the run in place; compare reuses its own earlier folder as a cache.
    assert check_out(earlier_run, resume=True) == earlier_run and (earlier_run / "sft_run.json").is_file()
    cmp = tmp_path / "cmp"
    cmp.mkdir()
    (cmp / "recipe.resolved.json").write_text("{}")
    assert check_out(cmp, reuse_ok=True) == cmp and (cmp / "recipe.resolved.json").is_file()
    # watch appends to its alerts file across restarts: an existing file is accepted as is.
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_text('{"job_id": "a"}\n')
    check_out(alerts, kind="file", flag="--alerts")
    assert alerts.read_text() == '{"job_id": "a"}\n'
