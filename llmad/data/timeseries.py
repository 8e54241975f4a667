"""Multivariate time series with point labels: the shared containers of the numeric track, the ``csv:`` loader,
and leakage-safe splits by time and by fault type.

A ``Series`` is one contiguous, regularly sampled stretch (one pod on one day, one SMD machine's test part ...).
Every loader (``nezha:``, ``smd:``/``asd:``, ``csv:``) returns a ``SeriesSplit`` with train / validation / test
lists of series, so windows, detectors and metrics never special-case a dataset.

Bad input, one documented choice each:
- NaN / inf values: kept as NaN here; ``llmad.data.windows`` forward-fills them (then back-fills a leading gap)
  and fails with ``DataError`` when a whole feature is missing everywhere in train.
- Gaps in timestamps (a sampling interval much longer than the median): the series is cut into separate
  contiguous series at the gap, so no window ever spans a hole (``split_at_gaps``).
- Constant features: kept; the z-score uses std 1 for them (see ``windows.ZScore``), so they score 0 change
  rather than dividing by zero.
- A series with no rows, or shorter than one window: ``DataError`` (no rows) or dropped with a note in
  ``info["dropped"]`` by the windowing step; all series of a part too short is a ``DataError``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from llmad.data.checks import FLOAT32_MAX
from llmad.errors import DataError, LlmadError, warn


@dataclass
class Series:
    """One contiguous multivariate series: ``values`` (T, F), 0/1 point ``labels`` (T,), optional event ids/types."""

    name: str
    values: np.ndarray
    labels: np.ndarray
    features: list[str]
    timestamps: np.ndarray | None = None  # datetime64[s], or None for index-only data (SMD/ASD)
    event_ids: np.ndarray | None = None  # (T,) int, -1 outside any labelled event; same id = same fault
    event_types: dict[int, str] = field(default_factory=dict)  # event id -> fault/anomaly type
    labeled: bool = True  # False for the unlabeled SMD/ASD train parts (labels are all 0 by assumption)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        if self.values.ndim == 1:
            self.values = self.values[:, None]
        self.labels = np.asarray(self.labels).astype(np.int8).reshape(-1)
        if len(self.values) == 0:
            raise DataError(f"series {self.name!r} has no rows")
        if len(self.labels) != len(self.values):
            raise DataError(f"series {self.name!r}: {len(self.labels)} labels for {len(self.values)} rows")
        if self.values.shape[1] != len(self.features):
            raise DataError(f"series {self.name!r}: {self.values.shape[1]} columns but {len(self.features)} names")
        if self.event_ids is None:
            self.event_ids = events_from_labels(self.labels)
        self.event_ids = np.asarray(self.event_ids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.values)

    def slice(self, start: int, stop: int, name: str | None = None) -> "Series":
        """Rows ``[start, stop)`` as a new series (event types kept for the events it still holds)."""
        ev = self.event_ids[start:stop]
        # parent + absolute offsets let _merge_adjacent glue neighbouring segments back together
        base = self.meta.get("_start", 0)
        kept = {int(e) for e in np.unique(ev) if e >= 0}
        return replace(self, name=name or f"{self.name}[{start}:{stop}]", values=self.values[start:stop],
                       labels=self.labels[start:stop], event_ids=ev,
                       timestamps=None if self.timestamps is None else self.timestamps[start:stop],
                       event_types={k: v for k, v in self.event_types.items() if k in kept},
                       meta={**self.meta, "parent": self.meta.get("parent", self.name),
                             "_start": base + start, "_stop": base + stop})


@dataclass
class SeriesSplit:
    """Train / validation / test lists of series plus how they were made (thresholds come from validation)."""

    train: list[Series]
    validation: list[Series]
    test: list[Series]
    kind: str
    description: str
    info: dict[str, Any] = field(default_factory=dict)

    def parts(self) -> dict[str, list[Series]]:
        """The three parts by name."""
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def summary(self) -> dict[str, Any]:
        """Counts per part: series, points, positives, events (for metrics.json and `data info`)."""
        out: dict[str, Any] = {"kind": self.kind, "description": self.description}
        for name, part in self.parts().items():
            out[name] = {"series": len(part), "points": int(sum(len(s) for s in part)),
                         "positives": int(sum(int(s.labels.sum()) for s in part if s.labeled)),
                         "events": int(sum(len({e for e in np.unique(s.event_ids) if e >= 0}) for s in part)),
                         "labeled": all(s.labeled for s in part)}
        return out


def events_from_labels(labels: np.ndarray, start_id: int = 0) -> np.ndarray:
    """Event ids for contiguous runs of 1s (-1 elsewhere): used where no fault list names the events."""
    labels = np.asarray(labels).astype(int)
    ev = np.full(len(labels), -1, dtype=np.int64)
    if len(labels) == 0:
        return ev
    starts = np.flatnonzero(np.diff(np.concatenate([[0], labels])) == 1)
    ends = np.flatnonzero(np.diff(np.concatenate([labels, [0]])) == -1) + 1
    for i, (a, b) in enumerate(zip(starts, ends)):
        ev[a:b] = start_id + i
    return ev


def split_at_gaps(s: Series, factor: float = 3.0) -> list[Series]:
    """Cut ``s`` where the time step exceeds ``factor`` x the median step (no window may span a hole)."""
    if s.timestamps is None or len(s) < 3:
        return [s]
    t = s.timestamps.astype("datetime64[s]").astype(np.int64)
    d = np.diff(t)
    med = float(np.median(d)) if len(d) else 0.0
    if med <= 0:
        return [s]
    cuts = np.flatnonzero(d > factor * med) + 1
    if len(cuts) == 0:
        return [s]
    bounds = [0, *cuts.tolist(), len(s)]
    return [s.slice(a, b, name=f"{s.name}#{i}") for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]


def clean_values(values: np.ndarray, source: str | None = None, features: Sequence[str] | None = None,
                 rows: np.ndarray | None = None) -> np.ndarray:
    """inf -> NaN (both are 'missing' for us; windows forward-fill them); finite values beyond float32 are clipped.

    Clipped values warn ``huge-value`` naming ``source``, the feature and (given ``rows``, each row's file row) the
    first row (they would otherwise become inf in float32 and silently count as missing).
    """
    v = np.asarray(values, dtype=np.float64)
    big = np.isfinite(v) & (np.abs(v) > FLOAT32_MAX)
    if big.any():
        r, cols = np.nonzero(big)
        name = features[cols[0]] if features is not None else f"column {cols[0]}"
        where = f" (first at row {rows[r[0]]})" if rows is not None else ""
        warn("huge-value", f"{source or 'series'}, field {name!r}: {int(big.sum())} value(s) beyond ±3.4e38{where}; "
                           f"clipped to ±3.4e38")
        v = np.clip(v, -FLOAT32_MAX, FLOAT32_MAX)
    v = v.astype(np.float32)
    v[~np.isfinite(v)] = np.nan
    return v


# --------------------------------------------------------------------------------------------- splits
def time_split_series(series: Sequence[Series], fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
                      kind: str = "time") -> SeriesSplit:
    """Cut every series in time: the first ``fractions[0]`` to train, the next to validation, the rest to test."""
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise LlmadError(f"split fractions {fractions} must be >= 0 and sum to 1")
    parts: dict[str, list[Series]] = {"train": [], "validation": [], "test": []}
    for s in series:
        n = len(s)
        a = int(round(n * fractions[0]))
        b = int(round(n * (fractions[0] + fractions[1])))
        for name, (lo, hi) in zip(parts, ((0, a), (a, b), (b, n))):
            if hi > lo:
                parts[name].append(s.slice(lo, hi, name=f"{s.name}/{name}"))
    return SeriesSplit(parts["train"], parts["validation"], parts["test"], kind=kind,
                       description=f"time split per series, earlier -> later: {fractions[0]:.0%} train / "
                                   f"{fractions[1]:.0%} validation / {fractions[2]:.0%} test",
                       info={"fractions": list(fractions)})


def cut_at_times(series: Sequence[Series], cut_a: np.datetime64, cut_b: np.datetime64) -> dict[str, list[Series]]:
    """Assign each point by its timestamp: < cut_a train, < cut_b validation, else test (series stay contiguous)."""
    parts: dict[str, list[Series]] = {"train": [], "validation": [], "test": []}
    for s in series:
        if s.timestamps is None:
            raise DataError(f"series {s.name!r} has no timestamps; a time-cut split needs them")
        t = s.timestamps
        a = int(np.searchsorted(t, cut_a, side="left"))
        b = int(np.searchsorted(t, cut_b, side="left"))
        for name, (lo, hi) in zip(parts, ((0, a), (a, b), (b, len(s)))):
            if hi > lo:
                parts[name].append(s.slice(lo, hi, name=f"{s.name}/{name}"))
    return parts


def fault_type_split(series: Sequence[Series], test_types: Sequence[str], val_fraction: float = 0.25) -> SeriesSplit:
    """Cross-fault-type split: test holds the stretches around events of ``test_types``; train and validation
    hold stretches around the other types, so no detector or threshold ever sees a test-type event.

    A series with events is cut at the midpoints between consecutive events, one segment per event. Test-type
    segments go to test; of the other segments every ``round(1 / val_fraction)``-th (in time order over all
    series) goes to validation, the rest to train. Series without events are cut in time
    (``1 - val_fraction`` train, the rest validation). Neighbouring segments of one part are glued back.
    """
    test_types = {str(t) for t in test_types}
    known = {t for s in series for t in s.event_types.values()}
    missing = test_types - known
    if missing:
        raise LlmadError(f"unknown fault type(s) {sorted(missing)}; present: {sorted(known)}")
    if not known - test_types:
        raise LlmadError(f"test types {sorted(test_types)} leave no fault type for training")
    every = max(2, int(round(1 / max(val_fraction, 1e-9))))
    segs: list[tuple[Any, int, Series, str]] = []  # (time key, order, segment, event type)
    tr: list[Series] = []
    va: list[Series] = []
    te: list[Series] = []
    for s in series:
        ids = [int(e) for e in pd.unique(s.event_ids) if e >= 0]
        if not ids:
            cut = int(round(len(s) * (1 - val_fraction)))
            if cut > 0:
                tr.append(s.slice(0, cut, name=f"{s.name}/train"))
            if len(s) - cut > 0:
                va.append(s.slice(cut, len(s), name=f"{s.name}/validation"))
            continue
        spans = sorted((int(np.flatnonzero(s.event_ids == e)[0]), int(np.flatnonzero(s.event_ids == e)[-1]) + 1, e)
                       for e in ids)
        bounds = [0] + [(b0 + a1) // 2 for (_, b0, _), (a1, _, _) in zip(spans[:-1], spans[1:])] + [len(s)]
        for (lo, hi), (a, _, e) in zip(zip(bounds[:-1], bounds[1:]), spans):
            if hi > lo:
                key = s.timestamps[a] if s.timestamps is not None else a
                segs.append((key, len(segs), s.slice(lo, hi, name=f"{s.name}@{lo}"), s.event_types.get(e, "")))
    k = 0
    for _, _, seg, typ in sorted(segs, key=lambda r: (r[0], r[1])):
        if typ in test_types:
            te.append(seg)
        else:
            (va if k % every == every - 1 else tr).append(seg)
            k += 1
    order = lambda x: (x.meta.get("parent", x.name), x.meta.get("_start", 0))  # noqa: E731
    return SeriesSplit(_merge_adjacent(sorted(tr, key=order)), _merge_adjacent(sorted(va, key=order)),
                       _merge_adjacent(sorted(te, key=order)), kind="fault",
                       description=f"cross-fault-type split: test = stretches around {sorted(test_types)} faults, "
                                   f"unseen in train/validation; every {every}th other-type fault stretch to "
                                   f"validation, the rest (and fault-free series, cut in time) to train",
                       info={"test_types": sorted(test_types), "train_types": sorted(known - test_types)})


def alternate_event_segments(series: Sequence[Series]) -> tuple[list[Series], list[Series]]:
    """Cut series at midpoints between labelled events and deal the event stretches alternately into two
    parts (in time order over all series); fault-free series go whole to the first part. Used to carve a
    supervised label pool and a separate threshold-calibration part out of one labelled part."""
    segs = []
    first: list[Series] = []
    for s in series:
        ids = [int(e) for e in pd.unique(s.event_ids) if e >= 0]
        if not ids:
            first.append(s)
            continue
        spans = sorted((int(np.flatnonzero(s.event_ids == e)[0]), int(np.flatnonzero(s.event_ids == e)[-1]) + 1)
                       for e in ids)
        bounds = [0] + [(b0 + a1) // 2 for (_, b0), (a1, _) in zip(spans[:-1], spans[1:])] + [len(s)]
        for (lo, hi), (a, _) in zip(zip(bounds[:-1], bounds[1:]), spans):
            key = s.timestamps[a] if s.timestamps is not None else a
            segs.append((key, len(segs), s.slice(lo, hi, name=f"{s.name}@{lo}")))
    if len(segs) < 2:
        raise LlmadError(f"need at least 2 labelled events to separate a label pool from the threshold "
                         f"calibration part, found {len(segs)}")
    second: list[Series] = []
    for k, (_, _, seg) in enumerate(sorted(segs, key=lambda r: (r[0], r[1]))):
        (first if k % 2 == 0 else second).append(seg)
    order = lambda x: (x.meta.get("parent", x.name), x.meta.get("_start", 0))  # noqa: E731
    return _merge_adjacent(sorted(first, key=order)), _merge_adjacent(sorted(second, key=order))


def _merge_adjacent(parts: list[Series]) -> list[Series]:
    """Concatenate segments cut from the same parent that touch end-to-start (keeps windows long enough)."""
    out: list[Series] = []
    for s in parts:
        prev = out[-1] if out else None
        if (prev is not None and prev.meta.get("parent") == s.meta.get("parent")
                and prev.meta.get("_stop") == s.meta.get("_start")):
            merged = Series(name=prev.name, values=np.concatenate([prev.values, s.values]),
                            labels=np.concatenate([prev.labels, s.labels]), features=prev.features,
                            timestamps=None if prev.timestamps is None else np.concatenate([prev.timestamps,
                                                                                          s.timestamps]),
                            event_ids=np.concatenate([prev.event_ids, s.event_ids]),
                            event_types={**prev.event_types, **s.event_types}, labeled=prev.labeled,
                            meta={**prev.meta, "_stop": s.meta.get("_stop")})
            out[-1] = merged
        else:
            out.append(s)
    return out


# --------------------------------------------------------------------------------------------- csv:
def parse_times(col: pd.Series) -> pd.Series:
    """Epoch seconds or date strings -> naive UTC datetimes; NaT exactly where a value cannot be read.

    A column of epoch seconds with one bad value is read by pandas as strings: it is still epoch seconds, so the bad
    value (not the first row) is what fails. Strings pandas cannot parse in the first value's format are retried
    one by one, so only the truly unreadable ones are NaT.
    """
    num = pd.to_numeric(col, errors="coerce")
    if pd.api.types.is_numeric_dtype(col) or num.notna().sum() > col.notna().sum() / 2:
        return pd.to_datetime(num, unit="s", errors="coerce")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "could not infer format": the retry below handles it
        ts = pd.to_datetime(col, errors="coerce", utc=True)
        retry = ts.isna() & col.notna()
        if retry.any():
            ts[retry] = pd.to_datetime(col[retry].astype(str), errors="coerce", utc=True, format="mixed")
    return ts.dt.tz_localize(None)


def load_csv_series(path: str | Path, label_col: str = "label", time_col: str | None = None,
                    features: Sequence[str] | None = None, name: str | None = None) -> Series:
    """Read one CSV time series: numeric feature columns, a 0/1 ``label_col``, an optional time column."""
    p = Path(path)
    if not p.is_file():
        raise DataError("no such CSV file", file=str(p))
    try:
        df = pd.read_csv(p)
    except Exception as e:
        raise DataError(f"cannot read CSV: {e}", file=str(p)) from None
    if len(df) == 0:
        raise DataError("CSV has no rows", file=str(p))
    if label_col not in df.columns:
        raise DataError(f"no label column {label_col!r} (columns: {list(df.columns)[:12]})", file=str(p),
                        field=label_col)
    lab = pd.to_numeric(df[label_col], errors="coerce")
    bad = lab.isna() | ~lab.isin([0, 1])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"label must be 0 or 1, got {df[label_col].iloc[row]!r}", file=str(p), row=row + 2,
                        field=label_col)
    if time_col is None:
        time_col = next((c for c in ("timestamp", "time", "Time", "date") if c in df.columns), None)
    ts = None
    if time_col is not None:
        if time_col not in df.columns:
            raise DataError(f"no time column {time_col!r}", file=str(p), field=time_col)
        ts = parse_times(df[time_col])
        if ts.isna().any():
            row = int(np.flatnonzero(ts.isna().to_numpy())[0])
            raise DataError(f"unparseable timestamp {str(df[time_col].iloc[row])[:40]!r} (expected epoch seconds or a "
                            f"date like 2024-01-31 12:00:00)", file=str(p), row=row + 2, field=time_col)
        if not ts.is_monotonic_increasing:
            order = np.argsort(ts.to_numpy(), kind="stable")
            df, ts, lab = df.iloc[order], ts.iloc[order], lab.iloc[order]
        ts = ts.to_numpy().astype("datetime64[s]")
    if features is None:
        features = [c for c in df.columns if c not in (label_col, time_col)
                    and pd.api.types.is_numeric_dtype(df[c])]
    missing = [f for f in features if f not in df.columns]
    if missing:
        raise DataError(f"feature column(s) {missing} not in CSV", file=str(p))
    if not features:
        raise DataError("no numeric feature columns besides the label/time columns", file=str(p))
    vals = clean_values(df[list(features)].apply(pd.to_numeric, errors="coerce").to_numpy(), str(p), features,
                        rows=df.index.to_numpy() + 2)
    return Series(name=name or p.stem, values=vals, labels=lab.to_numpy().astype(int), features=list(features),
                  timestamps=ts, meta={"source": str(p)})


def load_csv_split(arg: str, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
                   label_col: str = "label", time_col: str | None = None) -> SeriesSplit:
    """``csv:PATH`` (one file or a folder of CSVs): each file a series, cut at gaps, then split in time."""
    p = Path(arg).expanduser()
    files = sorted(p.glob("*.csv")) if p.is_dir() else [p]
    if not files:
        raise DataError("no CSV files in folder", file=str(p))
    series: list[Series] = []
    for f in files:
        series.extend(split_at_gaps(load_csv_series(f, label_col=label_col, time_col=time_col)))
    split = time_split_series(series, fractions)
    split.info["source"] = str(p)
    return split
