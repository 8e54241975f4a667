"""The stage cuts of llmad.data.reveal (SFT prefix augmentation without timestamps) are the event-time reveal model
cut just before each stage: one model, and ``ctx_host_slowness`` is known once the host is (execute_start)."""
from __future__ import annotations

import pandas as pd
import pytest

from llmad.data.context import CONTEXT_FEATURES
from llmad.data.flowbench import BYTES, DELAYS, KICKSTART, TIMESTAMPS
from llmad.data.reveal import (PREFIX_STAGES, STAGE_EVENTS, augment_with_prefixes, make_partial, partial_at_stage,
                               stage_prefix_augment)


def timed_jobs(n: int = 4) -> pd.DataFrame:
    """Jobs with every timestamp (1 s apart, in event order), every field and every peer feature."""
    df = pd.DataFrame({"job_id": [f"j{i}" for i in range(n)], "label": [0, 1] * (n // 2), "host": "h1",
                       "kickstart_hostname": "h1", "transformation": "t"})
    for i, t in enumerate(TIMESTAMPS):
        df[t] = 100.0 + i
    for c in DELAYS + BYTES + KICKSTART + CONTEXT_FEATURES:
        df[c] = 1.0
    return df


def test_prefix_stages_are_the_paper_features_in_event_order():
    assert PREFIX_STAGES == [["wms_delay"], ["stage_in_delay", "stage_in_bytes"], ["queue_delay"],
                             ["runtime", "kickstart_executables_cpu_time"], ["stage_out_delay", "stage_out_bytes"],
                             ["post_script_delay"]]


@pytest.mark.parametrize("stage", range(len(STAGE_EVENTS) + 1))
def test_a_stage_cut_hides_what_make_partial_hides_just_before_the_stage(stage):
    jobs = timed_jobs()
    as_of = (min(jobs[t].iloc[0] for t in STAGE_EVENTS[stage]) - 0.5 if stage < len(STAGE_EVENTS)
             else jobs[TIMESTAMPS].max().max())
    cut, timed = partial_at_stage(jobs, stage), make_partial(jobs, as_of)
    pd.testing.assert_frame_equal(cut.isna(), timed.isna())


def test_host_slowness_is_known_from_execute_start_before_the_runtime():
    jobs = timed_jobs()
    before_run_end = partial_at_stage(jobs, 3)  # queue known (execute_start passed), runtime not yet
    assert before_run_end[["host", "ctx_host_slowness", "ctx_host_cpu_slowness", "ctx_host_jobs"]].notna().all().all()
    assert before_run_end[["runtime", "ctx_runtime_rel", "ctx_cpu_util", "ctx_cpu_rel"]].isna().all().all()
    queued = partial_at_stage(jobs, 2)  # not started: no host yet, so nothing about it
    assert queued[["host", "ctx_host_slowness", "ctx_host_cpu_slowness", "ctx_host_jobs"]].isna().all().all()
    assert queued["ctx_stage_in_rel"].notna().all() and queued["ctx_peers"].notna().all()
    with pytest.raises(ValueError):
        partial_at_stage(jobs, len(STAGE_EVENTS) + 1)


def test_augmentation_cuts_at_events_when_timestamps_exist_else_at_stages():
    jobs = timed_jobs(6)
    aug, kind = augment_with_prefixes(jobs, copies=1, seed=0)
    assert kind == "events" and len(aug) == 2 * len(jobs)
    plain = jobs.drop(columns=TIMESTAMPS)
    aug, kind = augment_with_prefixes(plain, copies=2, seed=0)
    assert kind == "stages"
    pd.testing.assert_frame_equal(aug, stage_prefix_augment(plain, copies=2, seed=0))
    assert len(aug) == 3 * len(plain) and aug["label"].sum() == 3 * plain["label"].sum()
    assert aug.iloc[len(plain):]["post_script_delay"].isna().all()
