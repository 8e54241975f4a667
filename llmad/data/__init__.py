"""Data sources -> job tables -> splits. ``load_split`` is the one call most commands need."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from llmad.errors import LlmadError

if TYPE_CHECKING:  # sklearn behind splits costs seconds; `llmad data ...` commands should not pay it
    import pandas as pd

    from llmad.data.splits import Split


def load_jobs(spec: str | Path, data_dir: str | Path | None = None, columns: str | None = None) -> "pd.DataFrame":
    """The job table of a spec: ``flowbench:...`` (Flow-Bench archives) or ``jobs:<table>`` (your own table, read
    through its column map: ``columns``, the spec's ``?columns=``, a sidecar, or an inferred map)."""
    from llmad.data.specs import parse_spec, with_columns

    kind, arg = parse_spec(with_columns(str(spec), columns), family="jobs")  # a map on a flowbench: spec fails here
    if kind == "jobs":
        from llmad.data.jobs import load_job_table

        return load_job_table(arg)
    from llmad.data.flowbench import load_jobs as load_flowbench

    return load_flowbench(spec, data_dir)


def load_split(spec: str, split: str = "run", seed: int = 0, data_dir: str | Path | None = None,
               test_workflow: str | None = None, limit: int | None = None, context: bool = False,
               causal: bool = False, columns: str | None = None) -> "Split":
    """Load a job spec and split it; ``context`` adds peer features on the whole table *before* splitting.

    Peer features use other jobs' observable fields, never their labels, so computing them on the full table is
    not label leakage; on the run split it is identical to computing them per part. ``columns``: the column map
    of a ``jobs:`` table.
    """
    from llmad.data.context import add_context_features
    from llmad.data.splits import make_split

    jobs = load_jobs(spec, data_dir, columns)
    if jobs["label"].isna().any():
        raise LlmadError(f"{spec}: the table has no labels for every job; map a label or anomaly_type column "
                         f"(training, thresholds and metrics need them; llmad predict scores unlabelled tables)")
    if context:
        jobs = add_context_features(jobs, causal=causal)
    return make_split(jobs, kind=split, seed=seed, test_workflow=test_workflow, data_dir=data_dir, limit=limit)


__all__ = ["load_split", "load_jobs"]
