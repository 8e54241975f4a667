"""Nezha metrics (``nezha:trainticket``, ``nezha:onlineboutique`` or ``nezha:<zip or rca_data folder>``): per-pod
and system-wide multivariate series with point labels from the fault list, and time / fault-type splits.

Source (Nezha, FSE'23, github.com/IntelligentDDS/Nezha): ``rca_data/<day>/metric/<pod>_metric.csv`` (one row
per minute, 19 metrics) and ``rca_data/<day>/<day>-fault_list.json`` (45 faults over two days).

Choices, each on purpose:
- Labels: a point is anomalous when its ``Time`` lies in [inject_time, inject_time + 180 s] on the injected pod
  (system view: on any pod). ``inject_time`` (a string on the metric clock) is used, never ``inject_timestamp``:
  on 2023-01-29 most of those epoch values are ~8 hours off (see the data README).
- Pods are redeployed between days (new hash suffix), so a series is keyed by *service* (``ts-order-service``)
  and day; the z-score is fitted per service on its train part (``meta["group"]``).
- Timestamps: the ``Time`` column (``2023-01-29 08:41:10.17 +0000 UTC m=+1.2``) is cut to whole seconds;
  the system view floors them to the minute to align pods (their clocks jitter by 1-2 s).
- A pod file with no rows is skipped and named in ``info["skipped"]``; a fault on a skipped pod is then dropped
  from the labels (also noted). An empty archive or one without any fault list is a ``DataError``.
- A metric file is a ``<pod>_metric.csv`` or a CSV whose header has ``Time`` and ``PodName``/``ServiceName``
  (``front_service.csv``). Other CSVs beside them (OnlineBoutique's ``dependency.csv``, ``source_50.csv``,
  ``destination_50.csv``: call graphs, not pod metrics) are skipped, named in ``info["skipped_files"]`` and in a
  ``warning [nezha-extra-files]`` line.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from llmad.data.checks import read_member
from llmad.data.timeseries import Series, SeriesSplit, clean_values, cut_at_times, fault_type_split, split_at_gaps
from llmad.errors import DataError, LlmadError, warn

FAULT_SECONDS = 180
META_COLS = ("Time", "TimeStamp", "PodName", "ServiceName")
SYSTEMS = ("trainticket", "onlineboutique")  # the two Nezha systems, nezha/nezha_<system>.zip in the data dir
_POD_SUFFIX = re.compile(r"-[0-9a-f]{8,10}-[0-9a-z]{5}$")


def service_of(pod: str) -> str:
    """``ts-order-service-5b67c48447-mv5hb`` -> ``ts-order-service`` (pods get new suffixes on redeploy)."""
    return _POD_SUFFIX.sub("", pod)


def find_zip(arg: str = "trainticket", data_dir: str | Path | None = None) -> Path:
    """Locate the Nezha archive: a path, or ``trainticket`` under ``<data dir>/nezha/``."""
    p = Path(arg).expanduser()
    if p.suffix == ".zip" or p.exists():
        if not p.exists():
            raise DataError("no such Nezha archive", file=str(p))
        return p
    if arg not in SYSTEMS:
        raise LlmadError(f"nezha:{arg}: expected one of {', '.join(SYSTEMS)} (or nezha:<path to zip or rca_data "
                         f"folder>)")
    from llmad.data.specs import find_data_dir

    return find_data_dir(data_dir, needs=f"nezha/nezha_{arg}.zip") / "nezha" / f"nezha_{arg}.zip"


def _parse_time(col: pd.Series) -> np.ndarray:
    return pd.to_datetime(col.astype(str).str.slice(0, 19), errors="coerce").to_numpy().astype("datetime64[s]")


class _Source:
    """A zip or an extracted folder, read without extracting to disk."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.zf = zipfile.ZipFile(path) if path.is_file() else None
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"not a readable zip archive ({e})", file=str(path)) from None

    def names(self) -> list[str]:
        if self.zf is not None:
            return self.zf.namelist()
        return [str(q.relative_to(self.path.parent if self.path.name == "rca_data" else self.path))
                for q in self.path.rglob("*") if q.is_file()]

    def read(self, name: str) -> bytes:
        if self.zf is not None:
            return read_member(self.zf, name, f"{self.path}!{name}")
        base = self.path.parent if self.path.name == "rca_data" else self.path
        return (base / name).read_bytes()


def load_raw(path: Path) -> tuple[dict[str, dict[str, pd.DataFrame]], pd.DataFrame, dict[str, Any]]:
    """({day: {pod: frame}}, faults table, info) from the archive; frames keep every metric column."""
    src = _Source(path)
    names = src.names()
    days: dict[str, dict[str, pd.DataFrame]] = {}
    faults = []
    info: dict[str, Any] = {"skipped": [], "dropped_faults": [], "skipped_files": []}
    for n in sorted(names):
        m = re.search(r"rca_data/([^/]+)/metric/(.+)\.csv$", n)
        if m:
            day, stem = m.group(1), m.group(2)
            try:
                df = pd.read_csv(io.BytesIO(src.read(n)))
            except pd.errors.EmptyDataError:
                df = pd.DataFrame()
            except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
                raise DataError(f"malformed CSV ({' '.join(str(e).split())[:200]})", file=n) from None
            if not stem.endswith("_metric") and not is_metric_header(df.columns):
                info["skipped_files"].append(n)  # a call graph or other table beside the pod metrics
                continue
            if len(df) == 0:
                info["skipped"].append(n)
                continue
            if "Time" not in df.columns:
                raise DataError("no Time column", file=n, field="Time")
            df["_t"] = _parse_time(df["Time"])
            if df["_t"].isna().any():
                row = int(np.flatnonzero(df["_t"].isna().to_numpy())[0])
                raise DataError("unparseable Time", file=n, row=row + 2, field="Time")
            pod = stem[: -len("_metric")] if stem.endswith("_metric") else stem
            days.setdefault(day, {})[pod] = df.sort_values("_t").reset_index(drop=True)
        m = re.search(r"rca_data/([^/]+)/[^/]+fault_list\.json$", n)
        if m:
            try:
                fl = json.loads(src.read(n))
            except json.JSONDecodeError as e:
                raise DataError(f"invalid JSON: {e}", file=n) from None
            for hour, lst in fl.items():
                for f in lst:
                    faults.append({"day": m.group(1), "inject_time": f["inject_time"], "pod": f["inject_pod"],
                                   "type": f["inject_type"], "inject_timestamp": f.get("inject_timestamp")})
    if info["skipped_files"]:
        warn("nezha-extra-files", f"{path}: {len(info['skipped_files'])} CSV file(s) beside the pod metrics are not "
             f"pod metrics and were skipped: {', '.join(sorted({Path(n).name for n in info['skipped_files']}))}")
    if not days:
        raise DataError("no rca_data/<day>/metric/*.csv members found", file=str(path))
    if not faults:
        raise DataError("no rca_data/<day>/<day>-fault_list.json found", file=str(path))
    ft = pd.DataFrame(faults)
    ft["start"] = pd.to_datetime(ft["inject_time"]).to_numpy().astype("datetime64[s]")
    ft["end"] = ft["start"] + np.timedelta64(FAULT_SECONDS, "s")
    ft["service"] = ft["pod"].map(service_of)
    ft = ft.sort_values("start").reset_index(drop=True)
    ft["fault_id"] = np.arange(len(ft))
    return days, ft, info


def is_metric_header(columns: Sequence[str]) -> bool:
    """A pod/service metric table: a ``Time`` column and a ``PodName`` or ``ServiceName`` column."""
    cols = set(columns)
    return "Time" in cols and bool(cols & {"PodName", "ServiceName"})


def _label(times: np.ndarray, faults: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Point labels and event ids for the given faults on one timeline."""
    lab = np.zeros(len(times), dtype=np.int8)
    ev = np.full(len(times), -1, dtype=np.int64)
    for f in faults.itertuples():
        m = (times >= f.start) & (times <= f.end)
        lab[m] = 1
        ev[m] = f.fault_id
    return lab, ev


def load_series(arg: str = "trainticket", data_dir: str | Path | None = None, view: str = "pod",
                services: Sequence[str] | None = None) -> tuple[list[Series], pd.DataFrame, dict[str, Any]]:
    """All Nezha series for a view: ``pod`` (one per service and day) or ``system`` (all pods, one per day)."""
    if view not in ("pod", "system"):
        raise LlmadError(f"nezha view {view!r}: expected pod or system")
    path = find_zip(arg, data_dir)
    days, faults, info = load_raw(path)
    present = {(d, p) for d, pods in days.items() for p in pods}
    keep = faults.apply(lambda f: (f["day"], f["pod"]) in present, axis=1)
    if (~keep).any():
        info["dropped_faults"] = faults.loc[~keep, ["inject_time", "pod", "type"]].to_dict("records")
        faults = faults[keep].reset_index(drop=True)
    types = dict(zip(faults["fault_id"].astype(int), faults["type"]))
    out: list[Series] = []
    if view == "pod":
        for day in sorted(days):
            for pod, df in sorted(days[day].items()):
                if pod == "front_service":
                    continue
                svc = service_of(pod)
                if services and svc not in services:
                    continue
                feats = [c for c in df.columns if c not in META_COLS and c != "_t"]
                t = df["_t"].to_numpy().astype("datetime64[s]")
                lab, ev = _label(t, faults[(faults["pod"] == pod)])
                s = Series(name=f"{svc}/{day}", values=clean_values(df[feats].apply(pd.to_numeric, errors="coerce")
                                                                     .to_numpy()),
                           labels=lab, features=feats, timestamps=t, event_ids=ev,
                           event_types={int(e): types[int(e)] for e in np.unique(ev) if e >= 0},
                           meta={"group": svc, "pod": pod, "day": day})
                out.extend(split_at_gaps(s))
    else:
        for day in sorted(days):
            frames = []
            for pod, df in sorted(days[day].items()):
                svc = "front" if pod == "front_service" else service_of(pod)
                feats = [c for c in df.columns if c not in META_COLS and c != "_t"]
                f = df[feats].apply(pd.to_numeric, errors="coerce").copy()
                f.columns = [f"{svc}:{c}" for c in feats]
                f.index = pd.DatetimeIndex(df["_t"]).floor("min")
                frames.append(f[~f.index.duplicated(keep="last")])
            wide = pd.concat(frames, axis=1).sort_index()
            t = wide.index.to_numpy().astype("datetime64[s]")
            # A fault's minute-floored window: the sample at 08:43 covers an 08:43:04 injection.
            fl = faults[faults["day"] == day].copy()
            fl["start"] = pd.to_datetime(fl["start"]).dt.floor("min").to_numpy().astype("datetime64[s]")
            lab, ev = _label(t, fl)
            s = Series(name=f"system/{day}", values=clean_values(wide.to_numpy()), labels=lab,
                       features=list(wide.columns), timestamps=t, event_ids=ev,
                       event_types={int(e): types[int(e)] for e in np.unique(ev) if e >= 0},
                       meta={"group": "system", "day": day})
            out.extend(split_at_gaps(s))
    info.update({"source": str(path), "view": view, "faults": int(len(faults)),
                 "fault_types": faults["type"].value_counts().to_dict()})
    return out, faults, info


def make_split(arg: str = "trainticket", data_dir: str | Path | None = None, view: str = "pod",
               split: str = "time", test_types: Sequence[str] | None = None,
               fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
               services: Sequence[str] | None = None) -> SeriesSplit:
    """Nezha series split by ``time`` (cut between faults: first 60% of faults train, next 20% validation,
    last 20% test, all pods cut at the same instants) or by ``fault`` type (``test_types`` unseen in train)."""
    series, faults, info = load_series(arg, data_dir, view=view, services=services)
    if split == "time":
        n = len(faults)
        k1, k2 = int(round(n * fractions[0])), int(round(n * (fractions[0] + fractions[1])))
        if not 0 < k1 < k2 < n:
            raise LlmadError(f"time split {fractions} leaves a part without faults ({n} faults)")

        def cut(k: int) -> np.datetime64:
            # halfway between the end of fault k-1 and the start of fault k
            a = pd.Timestamp(faults["end"].iloc[k - 1])
            b = pd.Timestamp(faults["start"].iloc[k])
            return np.datetime64(a + (b - a) / 2, "s")

        ca, cb = cut(k1), cut(k2)
        parts = cut_at_times(series, ca, cb)
        out = SeriesSplit(parts["train"], parts["validation"], parts["test"], kind="time",
                          description=f"Nezha time split: train before {ca}, validation until {cb}, test after "
                                      f"(faults {k1}/{k2 - k1}/{n - k2}); every pod cut at the same instants",
                          info={"cuts": [str(ca), str(cb)]})
    elif split == "fault":
        out = fault_type_split(series, test_types or ["cpu_contention"])
    else:
        raise LlmadError(f"nezha split {split!r}: expected time or fault")
    out.info.update(info)
    out.info["dataset"] = f"nezha:{arg}"
    return out
