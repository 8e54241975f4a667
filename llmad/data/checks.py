"""The checks every loader runs on what it read: archive members, text bytes, and the loaded job table.

Broken input raises ``DataError`` (one line naming file, row and field; the CLI exits 2). Suspicious-but-usable input
issues a named ``LlmadWarning`` (``warning [duplicate-job-id]: ...``) that ``llmad data info`` counts. Every job
loader (Flow-Bench archives, own job tables) ends with :func:`check_jobs`, so the same table gets the same verdict
whichever loader read it.
"""
from __future__ import annotations

import csv
import io
import zipfile
import zlib
from typing import Sequence

import numpy as np
import pandas as pd

from llmad.errors import DataError, LlmadWarning, warn

# What reading one member of a damaged or unusual zip raises: a bad header or CRC (BadZipFile), deflate damage
# (zlib.error), a truncated stream (EOFError), an encrypted member (RuntimeError), an unknown method (NotImplemented).
ARCHIVE_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError)
# sklearn casts features to float32 (trees) and the numeric track stores float32: beyond this a finite value
# becomes inf there. Larger magnitudes are clipped to it (still the most extreme value, so ranks and tree splits
# keep their meaning) rather than refused: one absurd reading should not block a whole dataset.
FLOAT32_MAX = float(np.finfo(np.float32).max)
# The nine features of the LLM_AD sentences (also in data.flowbench, which imports it from here).
PAPER_FEATURES = ["wms_delay", "queue_delay", "runtime", "post_script_delay", "stage_in_delay", "stage_out_delay",
                  "stage_in_bytes", "stage_out_bytes", "kickstart_executables_cpu_time"]


def read_member(zf: zipfile.ZipFile, member: str, label: str) -> bytes:
    """The bytes of one zip member, or a DataError naming the archive and member (``label``) when it is damaged."""
    try:
        return zf.read(member)
    except ARCHIVE_ERRORS as e:
        raise DataError(f"damaged archive member, cannot be decompressed ({e}); "
                        f"re-download or re-create the archive", file=label) from None


def decode_text(raw: bytes, name: str) -> str:
    """UTF-8 text of a CSV file: a NUL byte is an error (it cuts the field); other bad bytes warn ``non-utf8``.

    Why the difference: a NUL never belongs in CSV text and pandas silently ends the field there (data lost), while
    a stray Latin-1 byte in a host or transformation name leaves a usable table (shown as U+FFFD, and named).
    """
    try:
        text = raw.decode("utf-8-sig")  # -sig: a byte-order mark (spreadsheet exports) is not part of the header
    except UnicodeDecodeError as e:
        text = raw.decode("utf-8-sig", errors="replace")
        row, field = _locate(text, text.find("\ufffd"))
        n = text.count("\ufffd")
        warn("non-utf8", f"file {name}, row {row}, field {field!r}: {n} byte(s) that are not UTF-8 (first: "
                         f"0x{raw[e.start]:02x}) shown as U+FFFD; save the file as UTF-8 to keep them")
    nul = text.find("\0")
    if nul >= 0:
        row, field = _locate(text, nul)
        raise DataError("NUL byte inside the value (the file is damaged or binary); remove it or re-export the file",
                        file=name, row=row, field=field)
    return text


def _locate(text: str, pos: int) -> tuple[int, str | None]:
    """(1-based file row, header field) of character ``pos`` of CSV ``text``, for error messages."""
    line = text.count("\n", 0, pos) + 1
    header = next(csv.reader(io.StringIO(text[: text.find("\n") if "\n" in text else len(text)])), [])
    start = text.rfind("\n", 0, pos) + 1
    try:
        col = len(next(csv.reader([text[start:pos] + "x"]))) - 1
    except (csv.Error, StopIteration):
        col = 0
    return line, (header[col] if col < len(header) else None)


def huge_values(frame: pd.DataFrame, columns: Sequence[str], source: str, rows: Sequence[int] | None = None,
                files: Sequence[str] | None = None) -> list[LlmadWarning]:
    """Warn ``huge-value`` per numeric column holding finite values beyond the float32 range."""
    out = []
    for col in columns:
        if col not in frame.columns or not pd.api.types.is_numeric_dtype(frame[col]):
            continue
        v = frame[col].to_numpy(dtype=np.float64, na_value=np.nan)
        big = np.isfinite(v) & (np.abs(v) > FLOAT32_MAX)
        if big.any():
            i = int(np.flatnonzero(big)[0])
            row = rows[i] if rows is not None else i + 2
            where = f"file {files[i] if files is not None else source}, row {row}, field {col!r}"
            out.append(warn("huge-value", f"{where}: {v[i]:.3g} is beyond ±3.4e38 ({int(big.sum())} such value(s) in "
                                          f"this field); clipped to ±3.4e38 as model features"))
    return out


def clip_features(x: np.ndarray) -> np.ndarray:
    """Feature matrix with finite values beyond the float32 range clipped to it (the loaders warned about them)."""
    x = np.asarray(x, dtype=np.float64)
    return np.clip(x, -FLOAT32_MAX, FLOAT32_MAX, out=x.copy(), where=np.isfinite(x))


def check_jobs(jobs: pd.DataFrame, source: str, files: Sequence[str] | None = None,
               rows: Sequence[int] | None = None, numeric: Sequence[str] = (),
               features: Sequence[str] = PAPER_FEATURES) -> list[LlmadWarning]:
    """Check a loaded job table (one row per job; ``run_id``, ``job_id``, ``label``, ``anomaly_type``).

    ``files``/``rows`` give each job's file and 1-based file row for messages (default: ``source``, index + 2).
    Raises DataError for a job id that repeats in its run with a different label; warns ``duplicate-job-id`` for
    repeats that agree, ``missing-column`` for absent sentence features (added as empty), ``huge-value`` for
    finite values beyond float32 in ``numeric`` (+ the sentence features). ``features``: the sentence features (a
    ``jobs:`` table's own). Returns the warnings issued.
    """
    out: list[LlmadWarning] = []
    rows_ = list(rows) if rows is not None else [i + 2 for i in range(len(jobs))]
    files_ = list(files) if files is not None else [source] * len(jobs)
    key = ["run_id", "job_id"] if "run_id" in jobs.columns else ["job_id"]
    dup = jobs.duplicated(key, keep=False).to_numpy()
    if dup.any():
        d = jobs.loc[dup, key + ["anomaly_type"]].assign(_pos=np.flatnonzero(dup))
        conflict = d.groupby(key, sort=False)["anomaly_type"].transform("nunique").to_numpy() > 1
        if conflict.any():
            grp = d[conflict]
            first = grp[grp[key].eq(grp[key].iloc[0]).all(axis=1)]
            a, b = int(first["_pos"].iloc[0]), int(first["_pos"].iloc[1])
            raise DataError(f"job id {jobs['job_id'].iloc[b]!r} repeats row {rows_[a]} of {files_[a]} with another "
                            f"label ({jobs['anomaly_type'].iloc[a]!r} there, {jobs['anomaly_type'].iloc[b]!r} here); "
                            f"keep one row per job", file=files_[b], row=rows_[b], field="anomaly_type")
        n_ids = int(d.drop_duplicates(key).shape[0])
        p = int(d["_pos"].iloc[0])
        out.append(warn("duplicate-job-id", f"{source}: {n_ids} job id(s) appear more than once in their run with "
                                            f"the same label (first: {jobs['job_id'].iloc[p]!r}, file {files_[p]}, "
                                            f"row {rows_[p]}); every row is kept"))
    absent = [c for c in features if c not in jobs.columns]
    if absent:
        out.append(warn("missing-column", f"{source}: no column(s) {', '.join(absent)}: left empty (missing) for "
                                          f"every job"))
        for c in absent:
            jobs[c] = np.nan
    cols = list(dict.fromkeys([*numeric, *features]))
    out.extend(huge_values(jobs, cols, source, rows=rows_, files=files_))
    return out


__all__ = ["ARCHIVE_ERRORS", "FLOAT32_MAX", "PAPER_FEATURES", "read_member", "decode_text", "huge_values",
           "clip_features", "check_jobs"]
