import numpy as np
import pandas as pd

from llmad.data.context import CONTEXT_FEATURES, add_context_features
from llmad.data.flowbench import load_jobs


def test_host_slowness_flags_anomalous_host(tiny_zip):
    jobs = add_context_features(load_jobs(str(tiny_zip)))
    assert set(CONTEXT_FEATURES) <= set(jobs.columns)
    bad = jobs[jobs.label == 1]["ctx_host_slowness"].median()
    good = jobs[jobs.label == 0]["ctx_host_slowness"].median()
    assert bad > 1.5 and good < 1.2


def test_causal_context_ignores_later_jobs(tiny_zip):
    jobs = load_jobs(str(tiny_zip))
    run = jobs[jobs.run_id == jobs.run_id.iloc[0]].reset_index(drop=True)
    first = run["execute_end"].idxmin()
    last = run["execute_end"].idxmax()
    base = add_context_features(run, causal=True)
    changed = run.copy()
    changed.loc[last, "runtime"] *= 100  # the future must not move an earlier job's causal features
    after = add_context_features(changed, causal=True)
    pd.testing.assert_series_equal(base.loc[first, CONTEXT_FEATURES], after.loc[first, CONTEXT_FEATURES])
    full = add_context_features(changed, causal=False)
    assert not np.allclose(full.loc[first, ["ctx_runtime_rel"]].astype(float),
                           base.loc[first, ["ctx_runtime_rel"]].astype(float))
