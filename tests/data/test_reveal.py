"""The reveal model (llmad.data.reveal): when each field of a job is known, partial jobs, prefix augmentation."""
from __future__ import annotations

import numpy as np
import pandas as pd

from llmad.data.context import add_context_features
from llmad.data.flowbench import PAPER_FEATURES, read_run_csv
from llmad.data.reveal import CTX_NEEDS, LABEL_COLUMNS, make_partial, prefix_augment, reveal_features, timestamp_matrix

from conftest import make_run_frame


def run_table(run: int, anomalous_host: str | None = "worker1", n_jobs: int = 12) -> pd.DataFrame:
    """A synthetic run parsed exactly like a Flow-Bench member."""
    raw = make_run_frame(run, n_jobs=n_jobs, anomalous_host=anomalous_host)
    # Stage-in timestamps make the stage-in delay a revealed field as in the real data.
    raw.insert(5, "stage_in_start", raw["execute_start"] - raw["stage_in_delay"])
    raw.insert(6, "stage_in_end", raw["execute_start"])
    return read_run_csv(raw.to_csv(index=False).encode(), f"toywf-run{run:04d}.csv")


def test_make_partial_reveals_fields_as_their_timestamps_pass():
    run = run_table(1)
    j = run.iloc[[0]]
    r = j.iloc[0]
    before = make_partial(j, r["ready"] - 1).iloc[0]
    assert pd.isna(before[PAPER_FEATURES]).all() and pd.isna(before["host"])
    assert before["job_id"] == r["job_id"] and before["label"] == r["label"]
    assert before["transformation"] == r["transformation"]  # static DAG field
    at_submit = make_partial(j, r["submit"]).iloc[0]
    assert at_submit["wms_delay"] == r["wms_delay"] and pd.isna(at_submit["queue_delay"])
    at_start = make_partial(j, r["execute_start"]).iloc[0]
    assert at_start["queue_delay"] == r["queue_delay"] and at_start["host"] == r["host"]
    assert at_start["stage_in_delay"] == r["stage_in_delay"]
    assert pd.isna(at_start["runtime"]) and pd.isna(at_start["kickstart_executables_cpu_time"])
    at_end = make_partial(j, r["execute_end"]).iloc[0]
    assert at_end["runtime"] == r["runtime"] and at_end["kickstart_executables_cpu_time"] == r[
        "kickstart_executables_cpu_time"]
    assert pd.isna(at_end["post_script_delay"]) and pd.isna(at_end["post_script_end"])
    full = make_partial(run, np.inf)
    pd.testing.assert_frame_equal(full, run, check_dtype=False)


def test_make_partial_per_row_times_and_context_masking():
    run = add_context_features(run_table(2), causal=True)
    as_of = pd.Series(run["execute_start"].to_numpy(), index=run.index)
    as_of.iloc[0] = run["execute_end"].iloc[0]
    part = make_partial(run, as_of)
    assert part["runtime"].iloc[0] == run["runtime"].iloc[0]
    assert part["runtime"].iloc[1:].isna().all()
    assert part["ctx_runtime_rel"].iloc[1:].isna().all() and part["ctx_cpu_util"].iloc[1:].isna().all()
    assert part["ctx_queue_rel"].notna().all()  # queue known at execute_start


def test_reveal_features_grows_in_paper_order():
    run = run_table(3)
    p3 = reveal_features(run, 3)
    assert p3[PAPER_FEATURES[:3]].notna().all().all()
    assert p3[PAPER_FEATURES[3:]].isna().all().all()


def test_prefix_augment_adds_partial_copies():
    run = run_table(30)
    aug = prefix_augment(run, copies=2, seed=1)
    assert len(aug) == 3 * len(run)
    part = aug.iloc[len(run):]
    assert (part["label"].to_numpy() == np.tile(run["label"].to_numpy(), 2)).all()
    # Every partial copy misses at least the post-script delay (cut before the last event).
    assert part["post_script_delay"].isna().all() and part["wms_delay"].notna().any()


def test_ctx_host_slowness_is_known_from_execute_start():
    """The host's other jobs are known when this job starts on it: its own runtime is not needed."""
    assert CTX_NEEDS["ctx_host_slowness"] == ("host",)
    run = add_context_features(run_table(6, n_jobs=18), causal=True)
    known = run[run["ctx_host_slowness"].notna()]
    assert len(known) >= 5  # later jobs of each host have finished peers on it
    mid = (known["execute_start"] + known["execute_end"]) / 2
    during = make_partial(known, mid)
    pd.testing.assert_series_equal(during["ctx_host_slowness"], known["ctx_host_slowness"])
    assert (during["host"] == known["host"]).all()
    assert during["runtime"].isna().all() and during["ctx_runtime_rel"].isna().all()
    before = make_partial(known, known["execute_start"] - 1)
    assert before["ctx_host_slowness"].isna().all() and before["host"].isna().all()
    assert before["runtime"].isna().all() and before["ctx_runtime_rel"].isna().all()


def test_prefix_augment_only_adds_partial_copies():
    """The original rows come first, unchanged; every added row is an earlier view of one of them."""
    run = add_context_features(run_table(31), causal=True)
    aug = prefix_augment(run, copies=3, seed=4)
    pd.testing.assert_frame_equal(aug.iloc[:len(run)], run.reset_index(drop=True), check_dtype=False)  # NaN: float
    extra = aug.iloc[len(run):].reset_index(drop=True)
    multi = [len(np.unique(r[np.isfinite(r)])) > 1 for r in timestamp_matrix(run)]
    assert len(extra) == 3 * sum(multi)
    src = run.set_index("job_id").loc[extra["job_id"]].reset_index()
    for c in ["job_id", "transformation", *LABEL_COLUMNS]:
        assert (extra[c].to_numpy() == src[c].to_numpy()).all(), c
    fields = [c for c in run.columns if c in PAPER_FEATURES or c.startswith("ctx_") or c == "host"]
    hidden = 0
    for c in fields:
        shown = extra[c].notna().to_numpy()
        # A partial copy only hides values: what it shows is the original value.
        assert (extra.loc[shown, c].to_numpy() == src.loc[shown, c].to_numpy()).all(), c
        hidden += int((~shown & src[c].notna().to_numpy()).sum())
    assert hidden > 0
    assert extra["post_script_end"].isna().all()  # cut before the job's last event


def test_stage_model_agrees_on_ctx_host_slowness():
    """The stage cuts (SFT prefix augmentation of tables without timestamps) reveal it with the host, too."""
    from llmad.data.reveal import partial_at_stage, reveal_stage

    assert reveal_stage("ctx_host_slowness") == reveal_stage("host") == reveal_stage("queue_delay")
    assert reveal_stage("ctx_host_slowness") < reveal_stage("runtime") == reveal_stage("ctx_runtime_rel")
    run = add_context_features(run_table(7, n_jobs=18), causal=True)
    cut = partial_at_stage(run, reveal_stage("runtime"))  # seen before execution ends
    pd.testing.assert_series_equal(cut["ctx_host_slowness"], run["ctx_host_slowness"])
    assert cut["runtime"].isna().all() and cut["ctx_runtime_rel"].isna().all()
