"""Flow-Bench job tables: read the official layout (a zip or folder of ``<workflow>-runNNNN.csv``) in memory.

One row per job with workflow, run_id, job_id, label, anomaly_type (``normal`` for normal jobs), job_type,
host, transformation, and every original column (unknown columns are kept, never fatal).
"""
from __future__ import annotations

import csv
import io
import re
import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from llmad.data.checks import PAPER_FEATURES, check_jobs, decode_text, read_member
from llmad.data.specs import find_data_dir, parse_spec
from llmad.errors import DataError, warn

RUN_RE = re.compile(r"(?:^|/)(?P<wf>[^/]+?)-run(?P<run>\d{4})\.csv$")
TIMESTAMPS = ["ready", "pre_script_start", "pre_script_end", "submit", "stage_in_start", "stage_in_end",
              "execute_start", "execute_end", "stage_out_start", "stage_out_end", "post_script_start",
              "post_script_end"]
DELAYS = ["wms_delay", "pre_script_delay", "queue_delay", "runtime", "post_script_delay", "stage_in_delay",
          "stage_out_delay"]
BYTES = ["stage_in_bytes", "stage_out_bytes", "stage_in_effective_bytes_per_sec", "stage_out_effective_bytes_per_sec"]
KICKSTART = ["kickstart_executables_cpu_time", "kickstart_status", "kickstart_executables_exitcode",
             "kickstart_online_iowait", "kickstart_online_bytes_read", "kickstart_online_bytes_written",
             "kickstart_online_read_system_calls", "kickstart_online_write_system_calls", "kickstart_online_utime",
             "kickstart_online_stime", "kickstart_online_bytes_read_per_second",
             "kickstart_online_bytes_written_per_second"]
NUMERIC = TIMESTAMPS + DELAYS + BYTES + KICKSTART + ["is_clustered"]
# PAPER_FEATURES (from data.checks): the nine features of the LLM_AD sentences, in the paper's order.
NORMAL_TOKENS = {"", "none", "nan", "normal"}
META = ["workflow", "run_id", "job_id", "label", "anomaly_type", "job_type", "host", "transformation"]


def flowbench_source(arg: str, data_dir: str | Path | None = None) -> Path:
    """Resolve the argument of ``flowbench:<arg>``: a workflow name in a data dir, or a zip/folder path."""
    if not str(arg).strip():
        # Path("") is the current folder: never read it recursively by accident.
        raise DataError("flowbench: needs a workflow name or a zip/folder path (e.g. flowbench:1000genome)")
    p = Path(arg).expanduser()
    if p.exists():
        return p
    if "/" in arg or arg.endswith(".zip"):
        raise DataError("no such zip or folder", file=arg)
    base = find_data_dir(data_dir, needs="flowbench")
    for cand in (base / "flowbench" / f"{arg}.zip", base / "flowbench" / arg):
        if cand.exists():
            return cand
    known = sorted(q.stem for q in (base / "flowbench").glob("*.zip"))
    raise DataError(f"unknown workflow {arg!r}; known here: {', '.join(known) or 'none'}",
                    file=str(base / "flowbench"))


def available_workflows(data_dir: str | Path | None = None) -> list[str]:
    """Workflow names with a zip in the data dir."""
    base = find_data_dir(data_dir, needs="flowbench")
    return sorted(q.stem for q in (base / "flowbench").glob("*.zip"))


def archive_members(src: Path) -> list[tuple[str, callable]]:
    """(name, opener) for every run CSV in a zip or folder, in run order."""
    if src.is_dir():
        files = sorted(f for f in src.rglob("*.csv") if RUN_RE.search(f.as_posix()))
        return [(str(f), (lambda f=f: f.read_bytes())) for f in files]
    try:
        zf = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"not a readable zip archive ({e})", file=str(src)) from None
    names = sorted(n for n in zf.namelist() if RUN_RE.search(n))
    return [(f"{src}!{n}", (lambda n=n: read_member(zf, n, f"{src}!{n}"))) for n in names]


def load_jobs(spec: str | Path, data_dir: str | Path | None = None) -> pd.DataFrame:
    """Load a Flow-Bench spec (``flowbench:<workflow>``, ``flowbench:<path>``, a path or a comma list) as one table."""
    spec = str(spec)
    kind, arg = parse_spec(spec)
    if kind != "flowbench":
        raise DataError(f"dataset spec {spec!r} is not a Flow-Bench spec (jobs come from flowbench:<workflow>)")
    if "," in arg:
        parts = [a.strip() for a in arg.split(",")]
        if "" in parts:
            raise DataError(f"dataset spec {spec!r}: empty name in the comma list")
        return pd.concat([load_jobs(f"flowbench:{a}", data_dir) for a in parts], ignore_index=True)
    if arg in ("all", "*"):
        return pd.concat([load_jobs(f"flowbench:{w}", data_dir) for w in available_workflows(data_dir)],
                         ignore_index=True)
    return read_source(flowbench_source(arg, data_dir))


def read_source(src: Path) -> pd.DataFrame:
    """Read every ``<workflow>-runNNNN.csv`` of a zip or folder into one job table."""
    members = archive_members(src)
    if not members:
        raise DataError("no <workflow>-runNNNN.csv files found (expected the Flow-Bench layout)", file=str(src))
    frames, files, rows, absent = [], [], [], {}
    for name, read in members:
        try:
            raw = read()
        except OSError as e:
            raise DataError(f"cannot read member ({e})", file=name) from None
        df = read_run_csv(raw, name, workflow=src.stem if src.suffix == ".zip" else src.name)
        if df.attrs.get("filled_columns"):
            absent.setdefault(tuple(df.attrs["filled_columns"]), []).append(name)
        frames.append(df)
        files += [name] * len(df)
        rows += range(2, len(df) + 2)
    for cols, names in absent.items():  # one warning per set of absent columns, naming the first file
        warn("missing-column", f"file {names[0]}: no column(s) {', '.join(map(repr, cols))} (nor in {len(names) - 1} "
                               f"more of {len(members)} files): left empty (missing) for their jobs")
    jobs = pd.concat(frames, ignore_index=True)
    check_jobs(jobs, str(src), files=files, rows=rows, numeric=NUMERIC)
    return jobs


def read_run_csv(raw: bytes, name: str, workflow: str | None = None) -> pd.DataFrame:
    """Parse one run CSV (bytes) into job rows; ``workflow`` defaults to the file's prefix."""
    m = RUN_RE.search(name.replace("!", "/"))
    if not m:
        raise DataError("file name does not match <workflow>-runNNNN.csv", file=name)
    text = decode_text(raw, name)
    _check_field_counts(text, name)
    try:
        df = pd.read_csv(io.StringIO(text), low_memory=False, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataError(f"malformed CSV ({e})", file=name) from None
    if df.columns[0].startswith("Unnamed") or df.columns[0] == "":
        df = df.rename(columns={df.columns[0]: "job_id"})
    elif "job_id" not in df.columns:
        raise DataError("first column must be the (unnamed) job id column", file=name, row=1,
                        field=str(df.columns[0]))
    if "anomaly_type" not in df.columns:
        raise DataError("missing column (needed for labels)", file=name, row=1, field="anomaly_type")
    for col in NUMERIC:
        if col in df.columns and df[col].dtype == object:
            conv = pd.to_numeric(df[col], errors="coerce")
            bad = conv.isna() & df[col].notna() & (df[col].astype(str).str.strip() != "")
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError(f"expected a number, got {str(df[col].iloc[i])[:40]!r}", file=name, row=i + 2,
                                field=col)
            df[col] = conv
    at = df["anomaly_type"].astype("string").fillna("").str.strip()
    df["anomaly_type"] = at.where(~at.str.lower().isin(NORMAL_TOKENS), "normal").astype(str)
    df["label"] = (df["anomaly_type"] != "normal").astype(int)
    # The zip's name is what users type (predict_future_sales); files inside may spell it otherwise.
    df["workflow"] = workflow or m.group("wf")
    df["run_id"] = f"{m.group('wf')}-run{m.group('run')}"
    df["job_type"] = df["type"].astype(str) if "type" in df.columns else "unknown"
    df["host"] = df["kickstart_hostname"].astype(str) if "kickstart_hostname" in df.columns else "unknown"
    df["transformation"] = (df["kickstart_transformations"].astype(str)
                            if "kickstart_transformations" in df.columns else "unknown")
    filled = [c for c in PAPER_FEATURES if c not in df.columns]
    for col in filled:
        df[col] = np.nan
    rest = [c for c in df.columns if c not in META]
    df = df[META + rest]
    df.attrs["filled_columns"] = filled  # read_source warns about them, once per column
    return df


def _check_field_counts(text: str, name: str) -> None:
    """Every data row must have as many fields as the header (catches truncated or shifted rows)."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError("empty file (no header)", file=name) from None
    except csv.Error as e:
        raise DataError(f"malformed CSV header ({e})", file=name, row=1) from None
    n = len(header)
    try:
        for i, row in enumerate(reader, start=2):
            if row and len(row) != n:
                raise DataError(f"expected {n} fields, found {len(row)} (truncated or malformed row)", file=name,
                                row=i, field=header[min(len(row), n) - 1] if row else None)
    except csv.Error as e:
        raise DataError(f"malformed CSV ({e})", file=name, row=reader.line_num) from None


def summarize(jobs: pd.DataFrame) -> dict:
    """Runs, jobs, label and anomaly-type counts, and features of a job table."""
    numeric = [c for c in jobs.columns if c not in META and pd.api.types.is_numeric_dtype(jobs[c])]
    return {
        "workflows": sorted(jobs["workflow"].unique().tolist()),
        "runs": int(jobs["run_id"].nunique()),
        "jobs": int(len(jobs)),
        "labels": {str(k): int(v) for k, v in jobs["label"].value_counts().sort_index().items()},
        "anomaly_types": {str(k): int(v) for k, v in jobs["anomaly_type"].value_counts().items()},
        "anomalous_runs": int(jobs.groupby("run_id")["label"].max().sum()),
        "job_types": {str(k): int(v) for k, v in jobs["job_type"].value_counts().items()},
        "hosts": int(jobs["host"].nunique()),
        "transformations": int(jobs["transformation"].nunique()),
        "numeric_features": numeric,
        "other_columns": [c for c in jobs.columns if c not in META and c not in numeric],
    }


def iter_workflow_specs(names: Iterable[str]) -> list[str]:
    """``flowbench:<name>`` for each name."""
    return [f"flowbench:{n}" for n in names]
