import subprocess
import sys
import zipfile

import pytest

from llmad.data.flowbench import available_workflows, load_jobs, summarize
from llmad.errors import DataError

from conftest import make_run_frame, write_zip


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "llmad", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_loads_zip_with_labels_and_keeps_unknown_columns(tiny_zip):
    jobs = load_jobs(f"flowbench:{tiny_zip}")
    assert jobs["run_id"].nunique() == 9 and len(jobs) == 9 * 12
    assert set(jobs["anomaly_type"]) == {"normal", "cpu_3", "hdd_5"}
    assert (jobs["label"] == (jobs["anomaly_type"] != "normal")).all()
    assert "some_new_column" in jobs.columns  # unknown columns are kept
    assert jobs["workflow"].unique().tolist() == ["toywf"]
    assert jobs["host"].str.startswith("worker").all() and jobs["transformation"].isin(["tr0", "tr1"]).all()


def test_loads_folder_and_nested_zip_members(tmp_path):
    frames = {f"wf-run{r:04d}": make_run_frame(r) for r in (1, 2)}
    nested = write_zip(tmp_path / "wf.zip", frames, folder="data/wf/")
    assert load_jobs(str(nested))["run_id"].nunique() == 2
    folder = tmp_path / "wf"
    folder.mkdir()
    for name, df in frames.items():
        df.to_csv(folder / f"{name}.csv", index=False)
    assert len(load_jobs(f"flowbench:{folder}")) == 24


def _zip_with_text(tmp_path, text, name="bad-run0001.csv"):
    p = tmp_path / "bad.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr(name, text)
    return p


def _csv_text(df):
    return df.to_csv(index=False)


@pytest.mark.parametrize("mutate,expect", [
    (lambda t: t[: t.rindex(",")], "row 13"),  # truncated last row
    (lambda t: t.replace("1600000000.0", "soon", 1), "field 'ready'"),  # non-numeric value
    (lambda t: t.replace("anomaly_type", "kind", 1), "field 'anomaly_type'"),  # missing column
])
def test_bad_csv_names_file_row_and_field(tmp_path, mutate, expect):
    text = mutate(_csv_text(make_run_frame(0)).rstrip("\n"))
    with pytest.raises(DataError) as e:
        load_jobs(str(_zip_with_text(tmp_path, text)))
    assert "bad-run0001.csv" in str(e.value) and expect in str(e.value)


def test_zip_without_run_files_and_not_a_zip(tmp_path):
    with pytest.raises(DataError, match="no <workflow>-runNNNN.csv"):
        load_jobs(str(_zip_with_text(tmp_path, "a,b\n1,2\n", name="readme.csv")))
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable zip"):
        load_jobs(str(junk))


def test_cli_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path):
    bad = _zip_with_text(tmp_path, _csv_text(make_run_frame(0)).replace("1600000000.0", "x", 1))
    out = tmp_path / "out"
    r = run_cli("baseline", "--data", f"flowbench:{bad}", "--out", str(out))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "bad-run0001.csv" in r.stderr and "row 2" in r.stderr and "'ready'" in r.stderr
    assert not out.exists()
    r = run_cli("data", "info", "flowbench:nope", "--data-dir", str(tmp_path / "missing"))
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("render", "flowbench:1000genome", "--template", "no_such_template")
    assert r.returncode == 2 and "unknown job template" in r.stderr


@pytest.mark.integration
def test_every_real_workflow_loads(real_data_dir):
    wfs = available_workflows(real_data_dir)
    assert len(wfs) >= 10
    for wf in wfs:
        if wf == "casa_nowcast_full":
            continue  # 876k jobs: loaded in the stream tests and benches; here keep CI time down
        s = summarize(load_jobs(f"flowbench:{wf}", real_data_dir))
        assert s["runs"] > 300 and s["jobs"] > 5000 and set(s["labels"]) == {"0", "1"}, wf


@pytest.mark.integration
def test_data_info_1000genome_cli():
    import json

    r = run_cli("data", "info", "flowbench:1000genome", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["runs"] == 350 and info["jobs"] == 47950
    assert info["labels"] == {"0": 32261, "1": 15689}
