"""The published sentence format (data layer) and the paper template (render layer) must stay byte-identical."""
import numpy as np
import pandas as pd
import pytest

from llmad.data.paper import paper_sentences, parse_paper_sentence
from llmad.render import render_jobs

from conftest import make_run_frame


def test_paper_sentences_equal_the_paper_template_on_odd_values():
    jobs = make_run_frame(1)
    jobs.loc[0, "runtime"] = np.nan
    jobs.loc[1, "queue_delay"] = 1e-7
    jobs.loc[2, "stage_in_bytes"] = 12345678901234
    assert paper_sentences(jobs) == render_jobs(jobs, "paper")
    back = parse_paper_sentence(paper_sentences(jobs)[1])
    assert back["queue_delay"] == pytest.approx(1e-7)


@pytest.mark.integration
def test_paper_sentences_equal_the_paper_template_on_real_jobs(genome_jobs):
    sample = genome_jobs.sample(n=3000, random_state=0) if len(genome_jobs) > 3000 else genome_jobs
    assert paper_sentences(sample) == render_jobs(sample, "paper")
    assert isinstance(sample, pd.DataFrame)
