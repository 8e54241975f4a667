"""Leakage-safe splits. ``run`` (default) keeps whole DAG runs apart; ``paper`` is the LLM_AD job-level split,
available for comparison and named as such everywhere; ``workflow`` is leave-one-workflow-out.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from llmad.data.flowbench import PAPER_FEATURES
from llmad.data.paper import paper_sentences, parse_paper_sentence, published_rows
from llmad.errors import DataError, LlmadError

SPLIT_KINDS = ("run", "paper", "workflow", "time", "row")
DESCRIPTIONS = {
    "run": "run split: whole DAG runs in train/validation/test (70/15/15), stratified by the run's anomaly type",
    "paper": "the paper's job-level split (LLM_AD, Jin et al. SC'24): published validation/test rows, train = the "
             "rest; jobs of one run appear in several parts, so it is optimistic",
    "workflow": "leave-one-workflow-out split: train/validation on other workflows, test on an unseen workflow",
    "time": "time split (the table has no run ids): jobs ordered by their first timestamp, the earliest 70% train, "
            "the next 15% validation, the latest 15% test",
    "row": "row split (the table has no run ids or timestamps): jobs shuffled into train/validation/test "
           "(70/15/15, seeded, stratified by label); jobs of one run may land in several parts, so it is optimistic",
}


@dataclass
class Split:
    """Three parts of a job table plus what the split is and how leaky it is."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    kind: str
    description: str
    info: dict[str, Any] = field(default_factory=dict)

    def part(self, name: str) -> pd.DataFrame:
        """A part by name (train | validation | test)."""
        if name not in ("train", "validation", "test"):
            raise LlmadError(f"unknown part {name!r}; expected train, validation or test")
        return getattr(self, name)

    def sizes(self) -> dict[str, int]:
        """Rows per part."""
        return {p: int(len(self.part(p))) for p in ("train", "validation", "test")}


def subsample(items: Any, n: int | None, seed: int | np.random.Generator = 0) -> Any:
    """The one seeded subsample: at most ``n`` of ``items`` (all when ``n`` is None or not smaller).

    A DataFrame keeps pandas' ``sample(random_state=seed)`` order (index reset); a list of ids comes back sorted;
    an array of row numbers comes back sorted, drawn from ``seed`` (an int or a Generator whose state advances).
    """
    if isinstance(items, pd.DataFrame):
        if n is None or len(items) <= n:
            return items.reset_index(drop=True)
        return items.sample(n=n, random_state=seed).reset_index(drop=True)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if isinstance(items, np.ndarray):
        if n is None or n >= len(items):
            return items
        return np.sort(rng.choice(items, size=n, replace=False))
    if not n or n >= len(items):
        return list(items)
    return sorted(rng.choice(np.asarray(items, dtype=object), size=n, replace=False).tolist())


def run_anomaly_type(jobs: pd.DataFrame) -> pd.Series:
    """Per run: its (most common) injected anomaly type, or ``normal``."""
    ab = jobs[jobs["label"] == 1]
    types = ab.groupby("run_id")["anomaly_type"].agg(lambda s: s.value_counts().index[0])
    runs = pd.Series("normal", index=pd.Index(jobs["run_id"].unique(), name="run_id"))
    runs.loc[types.index] = types
    return runs


def _split_ids(ids: np.ndarray, strata: np.ndarray | None, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        a, b = train_test_split(ids, test_size=frac, random_state=seed, stratify=strata)
    except ValueError:  # a stratum too small to split: fall back to a plain seeded split
        a, b = train_test_split(ids, test_size=frac, random_state=seed)
    return np.asarray(a), np.asarray(b)


def run_split(jobs: pd.DataFrame, seed: int = 0, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> Split:
    """Whole runs to train/validation/test, stratified by the run's anomaly type, seeded."""
    rt = run_anomaly_type(jobs)
    ids = rt.index.to_numpy()
    if len(ids) < 3:
        raise DataError(f"a run split needs at least 3 runs, got {len(ids)}")
    train_f, val_f, test_f = fractions
    rest, test_ids = _split_ids(ids, rt.loc[ids].to_numpy(), test_f, seed)
    train_ids, val_ids = _split_ids(rest, rt.loc[rest].to_numpy(), val_f / (train_f + val_f), seed)
    parts = {p: jobs[jobs["run_id"].isin(set(i))].reset_index(drop=True)
             for p, i in (("train", train_ids), ("validation", val_ids), ("test", test_ids))}
    sets = [set(parts[p]["run_id"]) for p in parts]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2]), "a run id appears in two parts"
    info = {"runs": {p: len(s) for p, s in zip(parts, sets)}, "seed": seed}
    return Split(parts["train"], parts["validation"], parts["test"], "run", DESCRIPTIONS["run"], info)


def workflow_split(jobs: pd.DataFrame, test_workflow: str, seed: int = 0) -> Split:
    """Train/validate on every other workflow (by runs), test on ``test_workflow``."""
    wfs = sorted(jobs["workflow"].unique())
    if test_workflow not in wfs:
        raise LlmadError(f"test workflow {test_workflow!r} is not in the data ({', '.join(wfs)}); "
                         f"load several, e.g. flowbench:1000genome,montage")
    if len(wfs) < 2:
        raise LlmadError("a workflow split needs at least two workflows in the data")
    test = jobs[jobs["workflow"] == test_workflow].reset_index(drop=True)
    rest = jobs[jobs["workflow"] != test_workflow]
    rt = run_anomaly_type(rest)
    tr, va = _split_ids(rt.index.to_numpy(), rt.to_numpy(), 0.15, seed)
    train = rest[rest["run_id"].isin(set(tr))].reset_index(drop=True)
    val = rest[rest["run_id"].isin(set(va))].reset_index(drop=True)
    info = {"train_workflows": [w for w in wfs if w != test_workflow], "test_workflow": test_workflow, "seed": seed}
    return Split(train, val, test, "workflow", DESCRIPTIONS["workflow"], info)


def time_split(jobs: pd.DataFrame) -> Split:
    """The earliest 70% of jobs (by their first timestamp, then row order) train, next 15% validation, last 15%
    test."""
    from llmad.data.reveal import row_nanreduce, timestamp_matrix

    first = row_nanreduce(timestamp_matrix(jobs), np.nanmin)
    order = np.lexsort((np.arange(len(jobs)), np.where(np.isfinite(first), first, np.inf)))
    a, b = int(round(0.7 * len(jobs))), int(round(0.85 * len(jobs)))
    parts = [jobs.iloc[np.sort(i)].reset_index(drop=True) for i in (order[:a], order[a:b], order[b:])]
    info = {"ordered_by": "first timestamp", "unmatched_timestamps": int((~np.isfinite(first)).sum())}
    return Split(*parts, "time", DESCRIPTIONS["time"], info)


def row_split(jobs: pd.DataFrame, seed: int = 0) -> Split:
    """Rows shuffled into 70/15/15 (seeded, stratified by label)."""
    ids = np.arange(len(jobs))
    y = jobs["label"].to_numpy()
    rest, test = _split_ids(ids, y, 0.15, seed)
    train, val = _split_ids(rest, y[rest], 0.15 / 0.85, seed)
    parts = [jobs.iloc[np.sort(i)].reset_index(drop=True) for i in (train, val, test)]
    return Split(*parts, "row", DESCRIPTIONS["row"], {"seed": seed})


def paper_split(jobs: pd.DataFrame, data_dir: str | Path | None = None) -> Split:
    """Validation/test = the published LLM_AD rows; train = the multiset remainder of the jobs."""
    wfs = jobs["workflow"].unique()
    if len(wfs) != 1:
        raise LlmadError("the paper split is defined per workflow; load one workflow")
    wf = wfs[0]
    texts = paper_sentences(jobs)
    pool: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, (t, y) in enumerate(zip(texts, jobs["label"].to_numpy())):
        pool[(t, int(y))].append(i)
    for v in pool.values():
        v.reverse()  # pop() takes the first occurrence
    taken: set[int] = set()
    parts: dict[str, pd.DataFrame] = {}
    unmatched: dict[str, list[str]] = {}
    for part in ("validation", "test"):
        pub = published_rows(wf, part, data_dir)
        rows, miss = [], []
        for t, y in zip(pub["text"], pub["label"].astype(int)):
            cand = pool.get((t, y))
            if cand:
                i = cand.pop()
                taken.add(i)
                rec = jobs.iloc[i].to_dict()
            else:
                # Not in this copy of the data: keep the published row, features parsed from its sentence.
                rec = {"workflow": wf, "run_id": "unmatched", "job_id": "unmatched", "label": y,
                       "anomaly_type": "normal" if y == 0 else "unknown", "job_type": "unknown",
                       "host": "unknown", "transformation": "unknown", **parse_paper_sentence(t)}
                miss.append(t)
            rec["published_text"] = t
            rows.append(rec)
        parts[part] = pd.DataFrame(rows, columns=list(jobs.columns) + ["published_text"])
        unmatched[part] = miss
    train = jobs.drop(index=jobs.index[sorted(taken)]).reset_index(drop=True)
    train_texts = set(paper_sentences(train))
    test_texts = parts["test"]["published_text"]
    overlap = float(np.mean([t in train_texts for t in test_texts]))
    info = {"workflow": wf, "unmatched_rows": {p: len(v) for p, v in unmatched.items()},
            "unmatched_examples": {p: v[:20] for p, v in unmatched.items()},
            "test_rows_with_identical_train_sentence": overlap}
    return Split(train, parts["validation"], parts["test"], "paper", DESCRIPTIONS["paper"], info)


def make_split(jobs: pd.DataFrame, kind: str = "run", seed: int = 0, test_workflow: str | None = None,
               data_dir: str | Path | None = None, limit: int | None = None) -> Split:
    """Build a split by kind (run | paper | workflow | time | row); ``limit`` subsamples each part (seeded) for quick
    runs."""
    if kind == "run" and jobs.attrs.get("split_unit") in ("time", "row"):
        kind = jobs.attrs["split_unit"]  # a table without run ids: by time, else by row (named as such)
    if kind == "run":
        split = run_split(jobs, seed=seed)
    elif kind == "time":
        split = time_split(jobs)
    elif kind == "row":
        split = row_split(jobs, seed=seed)
    elif kind == "paper":
        split = paper_split(jobs, data_dir=data_dir)
    elif kind == "workflow":
        if test_workflow is None:
            raise LlmadError("split 'workflow' needs a test workflow (--test-workflow)")
        split = workflow_split(jobs, test_workflow, seed=seed)
    else:
        raise LlmadError(f"unknown split {kind!r}; expected one of {', '.join(SPLIT_KINDS)}")
    if limit:
        for p in ("train", "validation", "test"):
            df = split.part(p)
            if len(df) > limit:
                setattr(split, p, subsample(df, limit, seed))
        split.info["limit_per_part"] = limit
    split.info["sizes"] = split.sizes()
    return split


__all__ = ["Split", "make_split", "run_split", "paper_split", "workflow_split", "published_rows",
           "parse_paper_sentence", "run_anomaly_type", "PAPER_FEATURES", "SPLIT_KINDS"]
