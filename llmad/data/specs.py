"""Dataset spec strings (``flowbench:1000genome``, ``flowbench:/path/x.zip``, ``nezha:trainticket`` ...) and data dirs.

Data dir precedence: ``--data-dir`` > ``$LLMAD_DATA_DIR`` > ``./data`` > the project's ``data/`` > ``../shared/data``.
"""
from __future__ import annotations

import os
from pathlib import Path

from llmad.errors import DataError, LlmadError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
KNOWN_KINDS = ("flowbench", "jobs", "nezha", "smd", "asd", "csv")
JOB_KINDS = ("flowbench", "jobs")  # job records: Flow-Bench archives, or your own table (jobs:<path>)
SERIES_KINDS = ("nezha", "smd", "asd", "csv")  # metric series (numeric track); flowbench is job records


def parse_spec(spec: str, family: str | None = None) -> tuple[str, str]:
    """The one dataset-spec parser: ``kind:arg`` -> (kind, arg); an existing path is a Flow-Bench folder or zip, or
    a job table (CSV, CSV.gz, Parquet: ``jobs:``).

    ``family="jobs"`` or ``"series"`` also requires a kind of that family (a clear error names what fits).
    """
    spec = str(spec)
    if not spec.strip():
        raise LlmadError("empty dataset spec: expected KIND:NAME (e.g. flowbench:1000genome)")
    if Path(spec).is_file() and spec.lower().endswith((".csv", ".csv.gz", ".parquet", ".pq")):
        kind, arg = "jobs", spec  # a table file: your own jobs (jobs:<path>)
    elif Path(spec).exists():
        kind, arg = "flowbench", spec
    elif ":" in spec and spec.split(":", 1)[0] in KNOWN_KINDS:
        kind, arg = spec.split(":", 1)
    elif family == "series":
        raise LlmadError(f"numeric dataset spec {spec!r}: expected nezha:trainticket, smd:<machine>|all, "
                         f"asd:<server>|all or csv:<path>")
    else:
        raise LlmadError(f"dataset spec {spec!r}: expected KIND:NAME with KIND one of {', '.join(KNOWN_KINDS)} "
                         f"(e.g. flowbench:1000genome)")
    if not arg.strip() and kind in ("flowbench", "jobs", "nezha", "csv"):
        # An empty path is the current folder: never read it (recursively) by accident.
        raise LlmadError(f"dataset spec {spec!r} has no name: expected {kind}:<name or path>")
    if family == "series" and kind not in SERIES_KINDS:
        raise LlmadError(f"numeric dataset kind {kind!r}: expected nezha, smd, asd or csv")
    if family == "jobs" and kind not in JOB_KINDS:
        raise LlmadError(f"this command needs job data (flowbench:<workflow> or jobs:<table>), got {spec!r}")
    return kind, arg


def spec_family(spec: str) -> str:
    """``series`` for metric-series specs (nezha, smd, asd, csv), else ``jobs``."""
    return "series" if str(spec).split(":", 1)[0] in SERIES_KINDS else "jobs"


def with_columns(spec: str, columns: str | None) -> str:
    """``jobs:<path>`` with its column map: ``jobs:<path>?columns=<map.yaml>`` (other specs unchanged).

    The map travels inside the spec so that every function taking a spec string (replay, harness) reads the same
    table the same way."""
    if not columns:
        return spec
    kind, arg = parse_spec(spec)
    if kind != "jobs":
        raise LlmadError(f"--columns {columns}: a column map applies to jobs:<table> specs only, got {spec!r}")
    return f"jobs:{arg.partition('?columns=')[0]}?columns={columns}"


def spec_name(spec: str) -> str:
    """A folder-safe name for a spec (``flowbench:a,b`` -> ``a+b``), used in default output folders."""
    if str(spec).startswith("jobs:"):  # a table path: its file name, without the column map
        return Path(str(spec)[5:].partition("?columns=")[0]).name.split(".")[0] or "jobs"
    return str(spec).split(":", 1)[-1].replace(",", "+").replace("/", "_")


def candidate_data_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Data dirs in precedence order (only the explicit one when given)."""
    if data_dir is not None:
        return [Path(data_dir)]
    out = []
    env = os.environ.get("LLMAD_DATA_DIR")
    if env:
        out.append(Path(env))
    out.append(Path.cwd() / "data")  # ./data of the folder the command runs in, before the checkout's
    out.append(PROJECT_ROOT / "data")
    out.append(PROJECT_ROOT.parent / "shared" / "data")
    out.append(Path.cwd().parent / "shared" / "data")
    seen, uniq = set(), []
    for d in out:
        key = d.resolve()
        if key not in seen:
            seen.add(key)
            uniq.append(d)
    return uniq


def find_data_dir(data_dir: str | Path | None = None, needs: str | None = None) -> Path:
    """First data dir that exists (and, with ``needs``, contains that relative path)."""
    cands = candidate_data_dirs(data_dir)
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataError("data dir does not exist", file=str(data_dir))
    for d in cands:
        if d.is_dir() and (needs is None or (d / needs).exists()):
            return d
    looked = ", ".join(str(c) for c in cands)
    what = f" containing {needs}" if needs else ""
    raise DataError(f"no data dir{what} found (looked in {looked}); pass --data-dir, set LLMAD_DATA_DIR, "
                    f"or run `llmad data fetch flowbench`")
