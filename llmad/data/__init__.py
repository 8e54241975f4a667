"""Data sources -> job tables -> splits. ``load_split`` is the one call most commands need."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # sklearn behind splits costs seconds; `llmad data ...` commands should not pay it
    from llmad.data.splits import Split


def load_split(spec: str, split: str = "run", seed: int = 0, data_dir: str | Path | None = None,
               test_workflow: str | None = None, limit: int | None = None, context: bool = False,
               causal: bool = False) -> "Split":
    """Load a Flow-Bench spec and split it; ``context`` adds peer features on the whole table *before* splitting.

    Peer features use other jobs' observable fields, never their labels, so computing them on the full table is
    not label leakage; on the run split it is identical to computing them per part.
    """
    from llmad.data.context import add_context_features
    from llmad.data.flowbench import load_jobs
    from llmad.data.splits import make_split

    jobs = load_jobs(spec, data_dir)
    if context:
        jobs = add_context_features(jobs, causal=causal)
    return make_split(jobs, kind=split, seed=seed, test_workflow=test_workflow, data_dir=data_dir, limit=limit)


__all__ = ["load_split"]
