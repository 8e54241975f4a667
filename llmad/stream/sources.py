"""Flow-Bench runs for a replay, one DAG run at a time: list the members, split run ids, parse runs lazily.

Memory does not grow with the stream: ``split_run_ids`` reads only labels, ``iter_runs`` parses one run per step.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pandas as pd

from llmad.errors import DataError, LlmadError


def _specs(spec: str) -> list[str]:
    from llmad.data.flowbench import available_workflows
    from llmad.data.specs import parse_spec

    kind, arg = parse_spec(spec, family="jobs")
    if arg in ("all", "*"):
        return list(available_workflows())
    return [a.strip() for a in arg.split(",") if a.strip()]


@lru_cache(maxsize=1)  # a replay lists, splits and iterates the same table several times: read it once
def table_runs(spec: str) -> list[tuple[str, str, Callable[[], pd.DataFrame], str]]:
    """The runs of a ``jobs:`` table (read whole: it is the user's own table), each reader returning its frame."""
    from llmad.data import load_jobs
    from llmad.data.flowbench import TIMESTAMPS

    jobs = load_jobs(spec)
    if jobs.attrs.get("split_unit") != "run":
        raise LlmadError(f"{spec}: a replay needs run ids; map the table's run/DAG id column (run: <column>)")
    stamps = [c for c in TIMESTAMPS if c in jobs.columns]
    if not stamps or not jobs[stamps].notna().any().any():
        raise LlmadError(f"{spec}: a replay needs event timestamps; map some under timestamps: (e.g. submit, "
                         f"execute_start, execute_end)")
    wf = str(jobs["workflow"].iloc[0])
    return [(str(rid), f"{spec}#{rid}", (lambda g=g: g), wf) for rid, g in jobs.groupby("run_id", sort=False)]


def list_run_members(spec: str, data_dir: str | Path | None = None) -> list[tuple[str, str, Callable[[], bytes], str]]:
    """(run_id, member name, reader, workflow) for every run of a spec, without parsing any run (a ``jobs:``
    table's readers return parsed frames)."""
    from llmad.data.flowbench import RUN_RE, archive_members, flowbench_source

    if str(spec).startswith("jobs:"):
        return table_runs(spec)
    out = []
    for arg in _specs(spec):
        src = flowbench_source(arg, data_dir)
        wf = src.stem if src.suffix == ".zip" else src.name
        for name, read in archive_members(src):
            m = RUN_RE.search(name.replace("!", "/"))
            out.append((f"{m.group('wf')}-run{m.group('run')}", name, read, wf))
    return out


def iter_runs(spec: str, data_dir: str | Path | None = None, run_ids: Sequence[str] | None = None
              ) -> Iterator[pd.DataFrame]:
    """Yield one job table per DAG run, parsing one run at a time (memory does not grow with the stream)."""
    from llmad.data.checks import check_jobs
    from llmad.data.flowbench import NUMERIC, read_run_csv

    wanted = None if run_ids is None else set(run_ids)
    for rid, name, read, wf in list_run_members(spec, data_dir):
        if wanted is not None and rid not in wanted:
            continue
        raw = read()
        if isinstance(raw, pd.DataFrame):  # a jobs: table's run: load_jobs checked the whole table
            yield raw.reset_index(drop=True)
            continue
        run = read_run_csv(raw, name, workflow=wf)
        check_jobs(run, name, numeric=NUMERIC)  # what load_jobs checks, per run (a replay never loads them all)
        yield run


def _light_run(run_id: str, name: str, read: Callable[[], bytes], workflow: str) -> pd.DataFrame:
    """Only what a run split needs (labels, anomaly types), read with the same normalisation as ``read_run_csv``."""
    import io

    from llmad.data.flowbench import NORMAL_TOKENS

    raw = read()
    if isinstance(raw, pd.DataFrame):  # a jobs: table's run, already parsed
        return raw[["workflow", "run_id", "label", "anomaly_type"]]
    try:
        df = pd.read_csv(io.BytesIO(raw), usecols=lambda c: c == "anomaly_type", dtype=str, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as e:
        raise DataError(f"malformed CSV ({e})", file=name) from None
    if "anomaly_type" not in df.columns:
        raise DataError("missing column (needed for labels)", file=name, row=1, field="anomaly_type")
    at = df["anomaly_type"].astype("string").fillna("").str.strip()
    at = at.where(~at.str.lower().isin(NORMAL_TOKENS), "normal").astype(str)
    return pd.DataFrame({"workflow": workflow, "run_id": run_id, "label": (at != "normal").astype(int).to_numpy(),
                         "anomaly_type": at.to_numpy()})


def split_run_ids(spec: str, split: str = "run", seed: int = 0, data_dir: str | Path | None = None,
                  test_workflow: str | None = None) -> dict[str, list[str]]:
    """Run ids of train/validation/test, computed from a light (ids + labels) table read one run at a time."""
    from llmad.data.splits import make_split

    if split == "paper":
        raise LlmadError("replay needs whole DAG runs; the paper split is job-level: use --split run or workflow")
    light = pd.concat([_light_run(rid, name, read, wf) for rid, name, read, wf in list_run_members(spec, data_dir)],
                      ignore_index=True)
    sp = make_split(light, kind=split, seed=seed, test_workflow=test_workflow, data_dir=data_dir)
    return {p: sorted(sp.part(p)["run_id"].unique().tolist()) for p in ("train", "validation", "test")}
