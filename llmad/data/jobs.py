"""Your own job table (``jobs:<path>``): a CSV, CSV.gz, Parquet file or a folder of them, read through a column map.

The map (YAML, ``--columns map.yaml`` or a sidecar ``<path>.llmad.yaml``; inferred and printed when neither exists)
names the table's run id, job id, label, anomaly type, host, job type, event timestamps and features. The table
becomes the same canonical job frame ``llmad.data.flowbench`` produces (workflow, run_id, job_id, label,
anomaly_type, job_type, host, transformation, timestamps under their Flow-Bench names), so splits, peer features,
templates, detectors and the replay work unchanged. The frame's feature list travels in ``frame.attrs["features"]``
(``job_features``); ``frame.attrs["split_unit"]`` says how it can be split (run, time or row).
"""
from __future__ import annotations

import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from llmad.data.checks import check_jobs
from llmad.data.flowbench import META, NORMAL_TOKENS, PAPER_FEATURES, TIMESTAMPS
from llmad.data.reveal import DERIVED_DELAYS
from llmad.errors import DataError, LlmadError, warn

MAP_KEYS = ("run", "job", "label", "anomaly_type", "host", "type", "timestamps", "features")
SIDECAR = ".llmad.yaml"
SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
# Names an inferred map recognises (lower-cased), most specific first.
GUESSES = {
    "run": ("run_id", "dag_run", "dag_run_id", "run", "dag_id", "workflow_run", "runid"),
    "job": ("job_id", "jobid", "job", "task_id", "id"),
    "label": ("label", "is_anomaly", "anomalous", "is_anomalous", "y"),
    "anomaly_type": ("anomaly_type", "fault", "fault_type", "anomaly"),
    "host": ("host", "hostname", "node", "kickstart_hostname", "machine"),
    "type": ("type", "job_type", "task_name", "transformation", "kickstart_transformations", "task"),
}
STAMP_WORDS = {"submit": ("submit",), "execute_start": ("start",), "execute_end": ("end", "finish", "stop")}
_PRINTED: set[str] = set()


# ------------------------------------------------------------------------------------------------ reading
def table_files(path: Path) -> list[Path]:
    """The table's files: the path itself, or every CSV/CSV.gz/Parquet file of a folder (sorted)."""
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file() and f.name.lower().endswith(SUFFIXES))
        if not files:
            raise DataError(f"no {', '.join(SUFFIXES)} files in this folder", file=str(path))
        return files
    if not path.is_file():
        raise DataError("no such file or folder", file=str(path))
    return [path]


def read_file(path: Path) -> pd.DataFrame:
    """One CSV / CSV.gz / Parquet file as a DataFrame (a clear one-line error for unreadable input)."""
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        try:
            import pyarrow  # noqa: F401  (pandas' Parquet engine)
        except ImportError:
            raise LlmadError(f"file {path}: reading Parquet needs pyarrow; install it (pip install pyarrow) "
                             f"or export the table as CSV") from None
        try:
            return pd.read_parquet(path)
        except Exception as e:  # pyarrow raises several types for damaged files
            raise DataError(f"not a readable Parquet file ({type(e).__name__}: {e})", file=str(path)) from None
    try:
        return pd.read_csv(path, low_memory=False, encoding_errors="replace")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as e:
        raise DataError(f"malformed CSV ({type(e).__name__}: {e})", file=str(path)) from None


def read_table(path: str | Path) -> pd.DataFrame:
    """Every file of the table concatenated (columns unioned)."""
    files = table_files(Path(path).expanduser())
    frames = [read_file(f) for f in files]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


# ------------------------------------------------------------------------------------------------ column map
def sidecar_path(path: str | Path) -> Path:
    """``<path>.llmad.yaml`` (for a folder: ``<folder>.llmad.yaml`` beside it)."""
    p = Path(path).expanduser()
    return p.parent / (p.name.rstrip("/") + SIDECAR)


def check_map(cmap: Any, where: str) -> dict[str, Any]:
    """Validate a column map's shape: known keys, strings, a timestamps mapping, a features list."""
    if not isinstance(cmap, dict):
        raise LlmadError(f"{where}: a column map is a mapping with keys {', '.join(MAP_KEYS)}")
    unknown = sorted(set(cmap) - set(MAP_KEYS))
    if unknown:
        raise LlmadError(f"{where}: unknown key(s) {unknown} in the column map; expected some of {list(MAP_KEYS)}")
    out: dict[str, Any] = {}
    for k in MAP_KEYS[:6]:
        v = cmap.get(k)
        if v is not None and not isinstance(v, (str, int)):
            raise LlmadError(f"{where}: key {k!r} must name one column, got {v!r}")
        if v is not None:
            out[k] = str(v)
    ts = cmap.get("timestamps") or {}
    if not isinstance(ts, dict):
        raise LlmadError(f"{where}: key 'timestamps' must map stamp names ({', '.join(TIMESTAMPS)}) to columns")
    bad = sorted(set(ts) - set(TIMESTAMPS))
    if bad:
        raise LlmadError(f"{where}: unknown timestamp(s) {bad}; expected some of {', '.join(TIMESTAMPS)}")
    if ts:
        out["timestamps"] = {str(k): str(v) for k, v in ts.items()}
    feats = cmap.get("features")
    if feats is not None:
        if isinstance(feats, str) or not isinstance(feats, list):
            raise LlmadError(f"{where}: key 'features' must be a list of column names")
        out["features"] = [str(f) for f in feats]
    return out


def load_column_map(path: str | Path) -> dict[str, Any]:
    """Read and validate a column map YAML."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise LlmadError(f"file {p}: no such column map")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8", errors="replace"))
    except yaml.YAMLError as e:
        raise LlmadError(f"file {p}: invalid YAML: {str(e).splitlines()[0]}") from None
    return check_map(data or {}, f"file {p}")


def infer_column_map(df: pd.DataFrame) -> dict[str, Any]:
    """A column map guessed from the column names: ids, label, host, type, Flow-Bench stamps; features = the rest's
    numeric columns."""
    lower = {str(c).lower(): str(c) for c in df.columns}
    cmap: dict[str, Any] = {}
    used: set[str] = set()
    for key, names in GUESSES.items():
        for n in names:
            if n in lower and lower[n] not in used:
                cmap[key] = lower[n]
                used.add(lower[n])
                break
    ts = {t: lower[t] for t in TIMESTAMPS if t in lower and lower[t] not in used}
    for stamp, words in STAMP_WORDS.items():  # t_submit, start_time, end_ts ... that hold times
        if stamp in ts:
            continue
        for low, col in lower.items():
            if col not in used and col not in ts.values() and any(w in low for w in words) and _looks_like_time(
                    df[col], low):
                ts[stamp] = col
                break
    if ts:
        cmap["timestamps"] = ts
        used |= set(ts.values())
    cmap["features"] = [str(c) for c in df.columns if str(c) not in used
                        and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
    return cmap


def _looks_like_time(s: pd.Series, name: str) -> bool:
    """Date-times, or numbers under a time-like name (``t_start``, ``start_time``, ``end_ts``)."""
    if pd.api.types.is_datetime64_any_dtype(s):
        return True
    if pd.api.types.is_numeric_dtype(s):
        return name.startswith("t_") or name.endswith(("_time", "_ts", "_epoch"))
    sample = s.dropna().astype(str).head(20)
    return len(sample) > 0 and pd.to_datetime(sample, errors="coerce", format="mixed").notna().all()


def map_yaml(cmap: dict[str, Any]) -> str:
    """A column map as YAML, keys in the documented order."""
    return yaml.safe_dump({k: cmap[k] for k in MAP_KEYS if k in cmap}, sort_keys=False, default_flow_style=None)


def resolve_map(path: str | Path, columns: str | None, df: pd.DataFrame) -> tuple[dict[str, Any], str]:
    """The column map to use and where it came from: ``--columns``, the sidecar, or inferred (printed once)."""
    if columns:
        return load_column_map(columns), str(columns)
    side = sidecar_path(path)
    if side.is_file():
        return load_column_map(side), str(side)
    cmap = infer_column_map(df)
    key = str(Path(path).expanduser().resolve())
    if key not in _PRINTED:  # say what was chosen, once per table and process, on stderr (stdout stays data)
        _PRINTED.add(key)
        text = map_yaml(cmap).strip().replace("\n", "; ")
        print(f"llmad: no column map for {path} (--columns or {side.name}): inferred {text}", file=sys.stderr)
    return cmap, "inferred"


# ------------------------------------------------------------------------------------------------ canonical frame
def _numbers(s: pd.Series, file: str, field: str) -> pd.Series:
    """A numeric column; the first non-numeric value is a DataError naming its row."""
    conv = pd.to_numeric(s, errors="coerce")
    bad = conv.isna() & s.notna() & (s.astype(str).str.strip() != "")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"expected a number, got {str(s.iloc[i])[:40]!r}", file=file, row=i + 2, field=field)
    return conv.astype(float)


def _epoch_seconds(s: pd.Series, file: str, field: str) -> pd.Series:
    """A timestamp column as epoch seconds: numbers stay, date-time strings are parsed (UTC when naive)."""
    if pd.api.types.is_numeric_dtype(s):
        return s.astype(float)
    if pd.api.types.is_datetime64_any_dtype(s):
        t = s
    else:
        num = pd.to_numeric(s, errors="coerce")
        if num.notna().sum() == s.notna().sum():
            return num.astype(float)
        t = pd.to_datetime(s, errors="coerce", utc=True, format="mixed")
        bad = t.isna() & s.notna() & (s.astype(str).str.strip() != "")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"expected a timestamp (epoch seconds or a date-time), got {str(s.iloc[i])[:40]!r}",
                            file=file, row=i + 2, field=field)
    if getattr(t.dt, "tz", None) is None:
        t = t.dt.tz_localize("UTC")
    secs = (t - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    return secs.astype(float)


def _labels(s: pd.Series, file: str, field: str) -> pd.Series:
    """0/1 labels from numbers, booleans or true/false/yes/no words."""
    words = {"true": 1, "false": 0, "yes": 1, "no": 0, "anomaly": 1, "anomalous": 1, "normal": 0}
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        v = s.astype(float)
    else:
        txt = s.astype("string").str.strip().str.lower()
        v = pd.to_numeric(txt.map(lambda x: words.get(x, x) if isinstance(x, str) else x), errors="coerce")
    bad = ~(v.isna() | v.isin([0, 1]))
    bad |= v.isna() & s.notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"expected a 0/1 label, got {str(s.iloc[i])[:40]!r}", file=file, row=i + 2, field=field)
    return v


def to_job_frame(df: pd.DataFrame, cmap: dict[str, Any], name: str, file: str) -> pd.DataFrame:
    """Map a user table onto the canonical job frame (see the module docstring)."""
    cmap = check_map(cmap, f"column map of {file}")
    missing = [(k, cmap[k]) for k in MAP_KEYS[:6] if k in cmap and cmap[k] not in df.columns]
    missing += [(f"timestamps.{k}", v) for k, v in cmap.get("timestamps", {}).items() if v not in df.columns]
    if missing:
        k, col = missing[0]
        raise DataError(f"the column map names column {col!r} for {k!r}, but the table has no such column "
                        f"(columns: {', '.join(map(str, df.columns[:12]))}{' ...' if len(df.columns) > 12 else ''})",
                        file=file, row=1, field=col)
    df = df.reset_index(drop=True)
    df.columns = [str(c) for c in df.columns]
    out = pd.DataFrame(index=df.index)
    out["workflow"] = name
    has_run = "run" in cmap
    out["run_id"] = df[cmap["run"]].astype(str) if has_run else name
    out["job_id"] = df[cmap["job"]].astype(str) if "job" in cmap else pd.Series(range(len(df)), dtype=int).astype(str)
    if "anomaly_type" in cmap:
        at = df[cmap["anomaly_type"]].astype("string").fillna("").str.strip()
        at = at.where(~at.str.lower().isin(NORMAL_TOKENS), "normal").astype(str)
    else:
        at = None
    if "label" in cmap:
        label = _labels(df[cmap["label"]], file, cmap["label"])
        if at is None:
            at = pd.Series(np.where(label == 1, "anomalous", "normal"), index=df.index)
    elif at is not None:
        label = (at != "normal").astype(float)
    else:
        label = pd.Series(np.nan, index=df.index)
    out["label"] = label.astype(int) if label.notna().all() else label
    out["anomaly_type"] = at if at is not None else "unknown"
    typ = df[cmap["type"]].astype(str) if "type" in cmap else "unknown"
    out["job_type"] = typ
    out["host"] = df[cmap["host"]].astype(str) if "host" in cmap else "unknown"
    out["transformation"] = typ
    stamps = cmap.get("timestamps", {})
    for stamp, col in stamps.items():
        out[stamp] = _epoch_seconds(df[col], file, col)
    # Flow-Bench's delays from their endpoints (runtime = execute_end - execute_start ...): peer features use them.
    for delay, (a, b) in DERIVED_DELAYS.items():
        if a in out.columns and b in out.columns and delay not in df.columns:
            out[delay] = out[b] - out[a]
    named = {cmap[k] for k in MAP_KEYS[:6] if k in cmap} | set(stamps.values())
    if "features" in cmap:
        absent = [f for f in cmap["features"] if f not in df.columns]
        if absent:  # an optional column: the detector gets fewer features, the run goes on
            warn("missing-feature", f"file {file}: feature column(s) {absent} not in the table; using the others")
        feats = [f for f in cmap["features"] if f in df.columns]
    else:
        feats = [c for c in df.columns if c not in named and pd.api.types.is_numeric_dtype(df[c])
                 and not pd.api.types.is_bool_dtype(df[c])]
    rest = [c for c in df.columns if c not in named and c not in out.columns]
    for c in rest:
        col, target = df[c], (c if c not in out.columns else f"{c}_orig")  # never overwrite a canonical column
        if c in feats and not pd.api.types.is_numeric_dtype(col):
            conv = pd.to_numeric(col, errors="coerce")
            # A mostly-numeric column with stray text is a data error; otherwise it is a category feature.
            if conv.notna().sum() >= 0.9 * col.notna().sum() and conv.notna().any():
                col = _numbers(col, file, c)
            else:
                col = col.astype("string").fillna("").astype(str)
        out[target] = col
    out = out[[c for c in META if c in out.columns] + [c for c in out.columns if c not in META]]
    out.attrs["features"] = [f if f not in META else f"{f}_orig" for f in feats]
    # Numbers are measurements of the run (known when the job ends); categories (a queue, a partition) are planned.
    out.attrs["measured"] = [f for f in out.attrs["features"] if f in out.columns
                             and pd.api.types.is_numeric_dtype(out[f]) and f not in TIMESTAMPS]
    out.attrs["split_unit"] = "run" if has_run else ("time" if stamps else "row")
    out.attrs["source"] = file
    # The checks every job loader ends with (repeated job ids, values beyond float32), on the table's own features.
    check_jobs(out, file, numeric=out.attrs["measured"],
               features=[f for f in out.attrs["features"] if pd.api.types.is_numeric_dtype(out[f])])
    return out


def jobs_arg(arg: str) -> tuple[str, str | None]:
    """``<path>[?columns=<map.yaml>]`` -> (path, map path or None)."""
    path, sep, query = arg.partition("?columns=")
    return path, (query or None) if sep else None


def load_job_table(arg: str, columns: str | None = None) -> pd.DataFrame:
    """Load ``jobs:<arg>`` (``<path>[?columns=<map.yaml>]``) as the canonical job frame."""
    path, spec_columns = jobs_arg(arg)
    if not path:
        raise LlmadError("dataset spec 'jobs:': expected jobs:<table.csv|.csv.gz|.parquet|folder>")
    df = read_table(path)
    if df.empty:
        raise DataError("the table has no rows", file=path)
    cmap, _ = resolve_map(path, columns or spec_columns, df)
    p = Path(path)
    name = p.name.split(".")[0] or "jobs"
    return to_job_frame(df, cmap, name, path)


# ------------------------------------------------------------------------------------------------ downstream helpers
def job_features(jobs: pd.DataFrame) -> list[str]:
    """The feature columns of a job frame: its map's features (``attrs``), else the nine Flow-Bench features."""
    feats = jobs.attrs.get("features")
    return list(feats) if feats else list(PAPER_FEATURES)


def numeric_matrix(jobs: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Columns as floats: a missing column is NaN (fewer features, no crash); a category is a stable code (crc32,
    so train and test agree without storing a vocabulary)."""
    cols = []
    for c in columns:
        if c not in jobs.columns:
            cols.append(np.full(len(jobs), np.nan))
            continue
        s = jobs[c]
        if pd.api.types.is_numeric_dtype(s):
            cols.append(s.to_numpy(dtype=np.float64))
        else:
            cols.append(np.array([np.nan if pd.isna(v) else float(zlib.crc32(str(v).encode()) % 1_000_003)
                                  for v in s], dtype=np.float64))
    return np.column_stack(cols) if cols else np.zeros((len(jobs), 0))


def feed_renamer(cmap: dict[str, Any]):
    """For ``llmad watch --columns``: a function turning one feed record (the table's column names) into the canonical
    field names, date-time stamps into epoch seconds (an unparseable one is left for the feed's number check)."""
    ren = {cmap[k]: canon for k, canon in (("run", "run_id"), ("job", "job_id"), ("host", "host"),
                                           ("type", "transformation"), ("anomaly_type", "anomaly_type"),
                                           ("label", "label")) if k in cmap}
    ren.update({col: stamp for stamp, col in cmap.get("timestamps", {}).items()})
    stamps = set(cmap.get("timestamps", {}))

    def apply(rec: dict[str, Any]) -> dict[str, Any]:
        out = {ren.get(k, k): v for k, v in rec.items()}
        for s in stamps & set(out):
            v = out[s]
            if isinstance(v, str):
                try:
                    out[s] = float(v)
                except ValueError:
                    t = pd.to_datetime(v, errors="coerce", utc=True)
                    if not pd.isna(t):
                        out[s] = (t - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
        if "transformation" in out and "job_type" not in out:
            out["job_type"] = out["transformation"]
        return out

    return apply


def table_report(path: str, columns: str | None = None) -> dict[str, Any]:
    """What ``llmad data import`` prints: rows, runs, label rate, the map used, per-column type and missing rate."""
    df = read_table(path)
    cmap, source = resolve_map(path, columns, df) if columns or sidecar_path(path).is_file() \
        else (infer_column_map(df), "inferred")
    frame = to_job_frame(df, cmap, Path(path).name.split(".")[0] or "jobs", path)
    labelled = frame["label"].notna().all() and ("label" in cmap or "anomaly_type" in cmap)
    roles = {v: k for k, v in cmap.items() if isinstance(v, str)}
    roles.update({v: f"timestamps.{k}" for k, v in cmap.get("timestamps", {}).items()})
    roles.update({f: "feature" for f in frame.attrs["features"]})
    cols = [{"column": str(c), "dtype": str(df[c].dtype), "missing_rate": float(df[c].isna().mean()),
             "role": roles.get(str(c), "-")} for c in df.columns]
    return {"path": str(path), "map_source": source, "map": cmap, "rows": int(len(frame)),
            "runs": int(frame["run_id"].nunique()) if "run" in cmap else None,
            "split_unit": frame.attrs["split_unit"],
            "label_rate": float(frame["label"].mean()) if labelled else None,
            "features": frame.attrs["features"], "columns": cols}


__all__ = ["MAP_KEYS", "load_job_table", "load_column_map", "infer_column_map", "map_yaml", "resolve_map",
           "to_job_frame", "job_features", "feed_renamer", "numeric_matrix", "table_report", "sidecar_path", "jobs_arg",
           "read_table"]
