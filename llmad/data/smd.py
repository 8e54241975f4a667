"""Server Machine Dataset (``smd:machine-1-2``) and Application Server Dataset (``asd:omi-1``) loaders.

Each ``.npz`` holds ``train`` (unlabeled), ``test`` and ``test_label`` (per point). ``smd:all`` / ``asd:all``
load every machine in the folder; ``smd:machine-1-2,machine-2-1`` a list; ``smd:/path/x.npz`` a file.

Split (thresholds never see test labels): train = the ``train`` array (unlabeled; anomalies in it are unknown,
so ``labeled=False`` and detectors treat it as normal), validation = the first ``val_fraction`` (default 30%)
of each machine's labelled test part, test = the remaining 70%. Published SMD numbers often pick thresholds on
the whole test part; ours are therefore not directly comparable (and lower), by design.

Event types: ASD segments get their type (``metric`` / ``temporal`` / ``metric-temporal``) from
``asd/anomaly_type.txt``; SMD segments are typed ``smd``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from llmad.data.checks import ARCHIVE_ERRORS
from llmad.data.timeseries import Series, SeriesSplit, clean_values, events_from_labels
from llmad.errors import DataError, LlmadError

KINDS = {"smd": "smd", "asd": "asd"}


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def find_files(kind: str, arg: str, data_dir: str | Path | None = None) -> list[Path]:
    """The ``.npz`` files a spec names: ``all``, a comma list of names, or a path."""
    if kind not in KINDS:
        raise LlmadError(f"unknown numeric dataset kind {kind!r}: expected smd or asd")
    p = Path(arg).expanduser()
    if p.suffix == ".npz" or p.is_dir():
        if p.is_dir():
            files = sorted(p.glob("*.npz"), key=lambda q: _natural(q.name))
            if not files:
                raise DataError("no .npz files in folder", file=str(p))
            return files
        if not p.is_file():
            raise DataError("no such .npz file", file=str(p))
        return [p]
    from llmad.data.specs import find_data_dir

    folder = find_data_dir(data_dir, needs=kind) / kind
    available = sorted((q.stem for q in folder.glob("*.npz")), key=_natural)
    if arg in ("all", "*", ""):
        names = available
    else:
        names = [a.strip() for a in arg.split(",") if a.strip()]
    missing = [n for n in names if n not in available]
    if missing:
        raise DataError(f"{kind}: unknown machine(s) {missing}; available: {', '.join(available)}", file=str(folder))
    return [folder / f"{n}.npz" for n in names]


def _asd_types(folder: Path) -> pd.DataFrame | None:
    f = folder / "anomaly_type.txt"
    if not f.is_file():
        return None
    df = pd.read_csv(f)
    se = df["anomaly_segment"].astype(str).str.split("-", expand=True).astype(int)
    df["start"], df["end"] = se[0], se[1]
    return df


def load_machine(path: Path, kind: str) -> tuple[np.ndarray, Series]:
    """(train array, labelled test series) for one machine; checks shapes and labels."""
    try:
        with np.load(path, allow_pickle=False) as d:
            missing = [k for k in ("train", "test", "test_label") if k not in d.files]
            if missing:
                raise DataError(f"missing array(s) {missing} (has {d.files})", file=str(path))
            train, test, lab = d["train"], d["test"], d["test_label"]
    except (ValueError, *ARCHIVE_ERRORS) as e:  # a damaged npz member: bad CRC, deflate damage, truncation
        raise DataError(f"cannot read npz: {e}", file=str(path)) from None
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise DataError(f"expected 2-D train/test with the same columns, got {train.shape} and {test.shape}",
                        file=str(path))
    lab = np.asarray(lab).reshape(-1)
    if len(lab) != len(test):
        raise DataError(f"{len(lab)} test labels for {len(test)} test rows", file=str(path), field="test_label")
    if not np.isin(lab, [0, 1]).all():
        raise DataError("test_label must be 0/1", file=str(path), field="test_label")
    name = path.stem
    feats = [f"m{i}" for i in range(test.shape[1])]
    ev = events_from_labels(lab)
    types = {int(e): kind for e in np.unique(ev) if e >= 0}
    tt = _asd_types(path.parent) if kind == "asd" else None
    if tt is not None:
        rows = tt[tt["dataset"] == name]
        for e in types:
            idx = np.flatnonzero(ev == e)
            a, b = idx[0], idx[-1]
            # segments in anomaly_type.txt are 1-based or 0-based depending on source: match by overlap
            hit = rows[(rows["start"] <= b + 1) & (rows["end"] >= a)]
            if len(hit):
                types[e] = str(hit["anomaly_type"].iloc[0])
    test_s = Series(name=f"{kind}:{name}", values=clean_values(test), labels=lab.astype(int), features=feats,
                    event_ids=ev, event_types=types, meta={"group": f"{kind}:{name}", "machine": name})
    return clean_values(train), test_s


def make_split(kind: str, arg: str, data_dir: str | Path | None = None, val_fraction: float = 0.3,
               limit_machines: int | None = None) -> SeriesSplit:
    """Train = unlabeled train arrays; validation / test = first ``val_fraction`` / the rest of each test part."""
    if not 0 < val_fraction < 1:
        raise LlmadError(f"val_fraction must be in (0, 1), got {val_fraction}")
    files = find_files(kind, arg, data_dir)
    if limit_machines:
        files = files[:limit_machines]
    tr, va, te = [], [], []
    for f in files:
        train, test_s = load_machine(f, kind)
        group = test_s.meta["group"]
        tr.append(Series(name=f"{kind}:{f.stem}/train", values=train, labels=np.zeros(len(train), int),
                         features=test_s.features, labeled=False, meta={"group": group, "machine": f.stem}))
        cut = int(round(len(test_s) * val_fraction))
        va.append(test_s.slice(0, cut, name=f"{kind}:{f.stem}/validation"))
        te.append(test_s.slice(cut, len(test_s), name=f"{kind}:{f.stem}/test"))
    return SeriesSplit(tr, va, te, kind="time",
                       description=f"{kind.upper()}: train = unlabeled train part; validation = first "
                                   f"{val_fraction:.0%} of the labelled test part, test = the rest (threshold "
                                   f"chosen on validation, never on test)",
                       info={"dataset": f"{kind}:{arg}", "machines": [f.stem for f in files],
                             "val_fraction": val_fraction})


def load_train_arrays(kind: str, arg: str, data_dir: str | Path | None = None) -> list[np.ndarray]:
    """Only the unlabeled train arrays (for self-supervised pretraining)."""
    return [load_machine(f, kind)[0] for f in find_files(kind, arg, data_dir)]


def names(kind: str, data_dir: str | Path | None = None) -> Sequence[str]:
    """Machine names available for ``kind``."""
    return [f.stem for f in find_files(kind, "all", data_dir)]
