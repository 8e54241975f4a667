import numpy as np
import pytest

from llmad.data.flowbench import load_jobs
from llmad.data.paper import parse_paper_sentence
from llmad.data.splits import make_split, run_anomaly_type
from llmad.errors import LlmadError

from conftest import make_run_frame, write_zip


def _parts(s):
    return [set(s.train.run_id), set(s.validation.run_id), set(s.test.run_id)]


def test_run_split_keeps_runs_apart_and_is_seeded(tiny_zip):
    jobs = load_jobs(str(tiny_zip))
    a, b = make_split(jobs, "run", seed=1), make_split(jobs, "run", seed=1)
    tr, va, te = _parts(a)
    assert not (tr & va or tr & te or va & te)
    assert sum(a.sizes().values()) == len(jobs)
    assert _parts(a) == _parts(b)
    assert any(_parts(make_split(jobs, "run", seed=s)) != _parts(a) for s in range(2, 6))


def test_workflow_split_tests_on_unseen_workflow(tmp_path, tiny_zip):
    other = write_zip(tmp_path / "otherwf.zip", {f"otherwf-run{r:04d}": make_run_frame(r, anomalous_host="worker2")
                                                 for r in range(1, 8)})
    import pandas as pd

    jobs = pd.concat([load_jobs(str(tiny_zip)), load_jobs(str(other))], ignore_index=True)
    s = make_split(jobs, "workflow", test_workflow="otherwf")
    assert set(s.test.workflow) == {"otherwf"} and set(s.train.workflow) == {"toywf"}
    assert not set(s.train.run_id) & set(s.validation.run_id)
    with pytest.raises(LlmadError, match="not in the data"):
        make_split(jobs, "workflow", test_workflow="zzz")
    with pytest.raises(LlmadError, match="unknown split"):
        make_split(jobs, "random")


def test_parse_paper_sentence():
    t = "wms_delay is 6.0 queue_delay is nan runtime is 808.0 "
    d = parse_paper_sentence(t)
    assert d["wms_delay"] == 6.0 and np.isnan(d["queue_delay"]) and d["runtime"] == 808.0


@pytest.mark.integration
def test_real_run_split_stratified(genome_jobs):
    s = make_split(genome_jobs, "run", seed=0)
    tr, va, te = _parts(s)
    assert not (tr & va or tr & te or va & te)
    assert (len(tr), len(va), len(te)) == (244, 53, 53)
    rt = run_anomaly_type(genome_jobs)
    for part in (s.train, s.test):  # every anomaly type with enough runs shows up in both parts
        types = set(rt.loc[list(set(part.run_id))])
        assert {"normal", "cpu_2", "hdd_5", "hdd_10"} <= types


@pytest.mark.integration
def test_real_paper_split_matches_published_rows(genome_jobs):
    s = make_split(genome_jobs, "paper")
    assert s.sizes() == {"train": 47950 - 2 * 4809 + 25, "validation": 4809, "test": 4809}
    assert s.info["unmatched_rows"] == {"validation": 10, "test": 15}
    assert abs(s.info["test_rows_with_identical_train_sentence"] - 0.036) < 0.002
    assert "job-level split" in s.description
