"""Error hints and paths a shell user expects (issue 18 items 1, 5, 7, 8): a stray dataset argument points at
--data; --alert 2-of-3 points at --k/--n; --split paper names the workflows that have it; compare -q prints why a
run failed; data info prints tables; ./data of the current folder is searched; predict takes a run folder;
windows-text promises no more than sft/icl can read."""
from __future__ import annotations

import re

import pytest

from badinput.runner import assert_user_error, run_cli


def test_a_positional_dataset_gets_a_data_hint():
    res = run_cli(["baseline", "flowbench:eht_imaging"])
    assert res.rc == 2 and "did you mean --data flowbench:eht_imaging?" in res.err, res.text


def test_alert_n_of_m_names_k_and_n():
    res = run_cli(["replay", "-m", "nope", "--alert", "2-of-3"])
    assert_user_error(res, "--alert", "--alert k-of-n --k 2 --n 3")


def test_split_paper_names_the_workflows_that_have_it(tmp_path, monkeypatch):
    from llmad.data.paper import published_rows
    from llmad.errors import DataError

    for wf in ("alpha", "beta", "gamma"):
        (tmp_path / "llm_ad" / wf).mkdir(parents=True)
        (tmp_path / "llm_ad" / wf / "test.csv").write_text("text,label\nx is 1 ,0\n")
    with pytest.raises(DataError, match="'delta' has no published LLM_AD split; these have one: alpha, beta, gamma"):
        published_rows("delta", "test", data_dir=tmp_path)


def test_render_split_paper_on_a_workflow_without_one(tiny_zip):
    res = run_cli(["render", "--data", str(tiny_zip), "--split", "paper", "--data-dir", str(tiny_zip.parent)])
    assert_user_error(res, "--split paper", "no published LLM_AD split", "--split run")


def test_compare_quiet_prints_why_a_run_failed(tmp_path, monkeypatch):
    import llmad.harness as harness

    (tmp_path / "results.md").write_text("| method |\n")
    failed = {"method": "sft-minilm", "dataset": "montage", "seed": 0, "status": "failed",
              "message": "model 'nope' not found"}
    rep = {"paths": {"results_md": tmp_path / "results.md", "report_md": tmp_path / "report.md"},
           "status": [failed], "total_seconds": 1.0}
    monkeypatch.setattr(harness, "compare", lambda *a, **k: rep)
    res = run_cli(["compare", "r.yaml", "-q"])
    assert res.rc == 1
    assert "[failed] sft-minilm on montage seed 0: model 'nope' not found" in res.err, res.text


def test_data_info_prints_tables_not_dicts(tiny_zip):
    res = run_cli(["data", "info", "--data", str(tiny_zip)])
    assert res.rc == 0, res.text
    assert "{" not in res.out and "': " not in res.out, res.out
    labels = re.search(r"1 \(anomalous\)\s*│\s*([\d,]+)", res.out)
    assert labels and int(labels.group(1).replace(",", "")) > 0, res.out
    assert res.out == run_cli(["data", "info", str(tiny_zip)]).out  # the spec may come first, too


def test_data_dir_search_starts_with_data_of_the_current_folder(tmp_path, monkeypatch):
    from llmad.data.specs import candidate_data_dirs, find_data_dir

    monkeypatch.delenv("LLMAD_DATA_DIR", raising=False)
    (tmp_path / "data" / "llm_ad" / "x").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert candidate_data_dirs()[0].resolve() == (tmp_path / "data").resolve()
    assert find_data_dir(needs="llm_ad/x").resolve() == (tmp_path / "data").resolve()


def test_predict_takes_the_run_folder(tiny_zip, tmp_path, monkeypatch):
    """`predict -m runs/baseline/<run>` scores with <run>/model; paths are relative to the current folder."""
    monkeypatch.chdir(tmp_path)
    res = run_cli(["baseline", "--data", str(tiny_zip), "--method", "hgb", "--out", "run"])
    assert res.rc == 0, res.text
    res = run_cli(["predict", "-m", "run", "--data", str(tiny_zip), "--split", "run", "--out", "pred"])
    assert res.rc == 0, res.text
    assert "using its saved detector run/model" in res.err
    assert (tmp_path / "pred" / "predictions.csv").is_file()


def test_recipe_paths_are_relative_to_the_current_folder(tiny_zip, tmp_path, monkeypatch):
    """A recipe under recipes/ names data by a path from where `llmad compare` runs, not from the recipe."""
    import shutil

    (tmp_path / "recipes").mkdir()
    shutil.copy(tiny_zip, tmp_path / "toy.zip")
    (tmp_path / "recipes" / "r.yaml").write_text(
        "name: r\nseeds: [0]\ndatasets:\n  - {name: toy, spec: 'flowbench:toy.zip', split: run}\n"
        "methods:\n  - {method: baseline, name: rf, config: {method: rf, n_estimators: 10}}\n"
        "report: {plots: false, html: false, bootstrap: 20}\n")
    monkeypatch.chdir(tmp_path)
    res = run_cli(["compare", "recipes/r.yaml", "--out", "cmp", "-q"], timeout=120)
    assert res.rc == 0, res.text
    assert (tmp_path / "cmp" / "report.md").is_file()


def test_windows_text_promises_only_what_sft_reads(tmp_path):
    from typer.testing import CliRunner

    from llmad.cli import app

    helptext = CliRunner().invoke(app, ["windows-text", "--help"]).output
    assert "read Flow-Bench jobs, not this file" in " ".join(helptext.replace("│", " ").split())
    csv = tmp_path / "w.csv"
    csv.write_text("text,label\ncpu is 1.0 ,0\n")
    res = run_cli(["sft", "--data", f"csv:{csv}", "--max-steps", "1"])
    assert_user_error(res, "flowbench")
