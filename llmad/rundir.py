"""Run output directories: resolved config, metrics.json, per-job predictions, provenance; all written atomically."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from llmad.config import option
from llmad.errors import LlmadError, LlmadWarning
from llmad.io import provenance, write_frame_csv, write_json

# Files by which an earlier llmad run folder is recognised, finished or interrupted (run files, SFT's run file and
# checkpoints, pretraining, compare's cache, a replay's streamed outputs, numeric's scratch models).
RUN_MARKERS = ("config.json", "metrics.json", "provenance.json", "sft_run.json", "pretrain.json",
               "recipe.resolved.json", "model/detector.json", "detector/detector.json", "checkpoints",
               "predictions.csv", "alerts.jsonl", "models", "warnings.log", "runs")


@dataclass
class RunOptions:
    """Where a command writes its run folder and how much it says: the options every such command shares."""

    out: str | None = option(None, "output folder [runs/<command>/<name>-<time>]", flag="--out -o")
    quiet: bool = option(False, "no progress bars or log lines (library warnings go to <out>/warnings.log)",
                         flag="--quiet -q")
    force: bool = option(False, "replace the earlier run an existing --out holds (it is cleared first)",
                         flag="--force")


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _can_create_in(folder: Path) -> bool:
    """Whether a folder can really be created in ``folder`` (root passes ``os.access`` on read-only mounts)."""
    import tempfile

    try:
        os.rmdir(tempfile.mkdtemp(prefix=".llmad-probe.", dir=folder))
        return True
    except OSError:
        return False


def check_out(out: str | Path, *, kind: str = "dir", force: bool = False, resume: bool = False,
              reuse_ok: bool = False, flag: str = "--out") -> Path:
    """Fail with one line (before any work) when ``out`` cannot be written or holds an earlier run.

    ``kind``: ``dir`` (a run folder) or ``file`` (a CSV, an alerts file; written by replacing it in its folder);
    ``flag``: the option named in errors. An existing non-empty folder is refused unless ``resume`` (continue it),
    ``reuse_ok`` (the command's out is meant to be reused, e.g. compare's cache) or ``force``; with ``force`` it is
    cleared here, and only when it looks like an llmad run (never an arbitrary folder, the current folder or one
    above it).
    """
    p = Path(out)
    what = "folder" if kind == "dir" else "file"
    if p.exists():
        if kind == "dir" and not p.is_dir():
            raise LlmadError(f"{flag} {p}: is a file, expected a folder; choose another {flag}")
        if kind == "file" and p.is_dir():
            raise LlmadError(f"{flag} {p}: is a folder, expected a file path; choose another {flag}")
    base = p if kind == "dir" and p.is_dir() else _nearest_existing(p.parent)
    if not base.is_dir():
        raise LlmadError(f"{flag} {p}: {base} is a file, so the {what} cannot be created; choose another {flag}")
    if not os.access(base, os.W_OK | os.X_OK) or not _can_create_in(base):
        raise LlmadError(f"{flag} {p}: {base} is not writable; choose another {flag}")
    if kind == "dir" and p.is_dir() and any(p.iterdir()) and not (resume or reuse_ok):
        if not force:
            hint = "--resume to continue it, " if (p / "sft_run.json").is_file() else ""
            raise LlmadError(f"{flag} {p}: holds an earlier run ({', '.join(sorted(q.name for q in p.iterdir())[:4])}"
                             f"); pass {hint}--force to replace it, or choose another {flag}")
        clear_run_dir(p)
    return p


def clear_run_dir(p: Path) -> None:
    """Empty an earlier llmad run folder for ``--force`` (refusing folders that are not one).

    Cleared in place, not built beside and swapped in at the end: saved detectors and SFT checkpoints name paths
    inside the run folder (a Lag-Llama scratch checkpoint, ``--resume``'s checkpoints), which a rename would break,
    and ``--resume`` after a killed forced run must find its checkpoints where they stay.
    """
    here = Path.cwd().resolve()
    rp = p.resolve()
    if rp == here or rp in here.parents or rp == Path.home().resolve():
        raise LlmadError(f"--out {p}: --force never clears the current folder, one above it or the home folder")
    # temp files of an interrupted atomic write (".name.ext.XXXX", io.py) and nothing else, e.g. no .git or .env
    leftovers_only = all(q.is_file() and q.name.startswith(".") and q.name.count(".") >= 3 for q in p.iterdir())
    if not leftovers_only and not any((p / m).exists() for m in RUN_MARKERS):
        raise LlmadError(f"--out {p}: --force replaces an earlier llmad run only, and this folder holds other "
                         f"files (no {' / '.join(RUN_MARKERS[:3])}); choose another --out")
    for q in p.iterdir():
        if q.is_dir() and not q.is_symlink():
            shutil.rmtree(q)
        else:
            q.unlink()


def _hf_progress_bars(on: bool | None) -> bool | None:
    """Turn the Hugging Face libraries' own tqdm bars (model shards, downloads) on/off; returns the old state
    (None, and nothing changed, where transformers is not installed)."""
    if on is None:
        return None
    try:
        import transformers.utils.logging as hf
    except ImportError:
        return None
    old = hf.is_progress_bar_enabled()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # huggingface_hub warns when its environment variable disagrees
        (hf.enable_progress_bar if on else hf.disable_progress_bar)()
    return old


@contextlib.contextmanager
def quiet_warnings(out: str | Path | None, quiet: bool) -> Iterator[None]:
    """With ``quiet``: Python warnings and library log records (transformers, torch ...) go to
    ``<out>/warnings.log`` instead of the terminal; they need no action from the user. llmad's own named
    warnings (``llmad.errors.warn``: suspicious input) are still shown."""
    if not quiet:
        yield
        return
    log = Path(out) / "warnings.log" if out else None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log, "a") if log is not None else open(os.devnull, "w")
    handler = logging.StreamHandler(fh)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    # First: importing transformers (to turn its bars off) gives its logger its own stderr handler, replaced below.
    bars = _hf_progress_bars(False)
    names = ("", "transformers", "torch", "accelerate", "peft", "datasets", "huggingface_hub")
    saved = {}
    for n in names:
        lg = logging.getLogger(n)
        saved[n] = (lg.handlers[:], lg.propagate)
        lg.handlers = [handler]
        lg.propagate = n == ""
    old_show = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, LlmadWarning):  # llmad's named warnings are about the user's input: shown
            old_show(message, category, filename, lineno, file, line)
        else:
            fh.write(warnings.formatwarning(message, category, filename, lineno, line))

    warnings.showwarning = show
    try:
        yield
    finally:
        _hf_progress_bars(bars)
        warnings.showwarning = old_show
        for n, (handlers, prop) in saved.items():
            lg = logging.getLogger(n)
            lg.handlers, lg.propagate = handlers, prop
        fh.close()
        if log is not None and log.is_file() and log.stat().st_size == 0:
            log.unlink()  # nothing was said: no empty file in the run folder


def default_out(command: str, name: str) -> Path:
    """``runs/<command>/<name>-<UTC timestamp>``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / command / f"{name}-{stamp}"


def write_run(out_dir: str | Path, *, config: Any, metrics: dict[str, Any], predictions: pd.DataFrame | None = None,
              summary: str | None = None, extra: dict[str, Any] | None = None, command: str | None = None,
              data_dir: str | Path | None = None) -> Path:
    """Write config.json, predictions.csv, provenance.json, then metrics.json last (its presence means done).

    config.json holds the resolved values: ``command``, the absolute ``out``, the data folder actually read
    (``data_dir``) and ``config`` with its defaults filled.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    resolved = {"command": command, "out": str(out.resolve()),
                "data_dir": str(Path(data_dir).resolve()) if data_dir is not None else None}
    write_json(out / "config.json", {**resolved, **(config if isinstance(config, dict) else {"config": config})})
    if predictions is not None:
        write_frame_csv(out / "predictions.csv", predictions)
    prov = provenance()
    prov["finished_utc"] = datetime.now(timezone.utc).isoformat()
    if extra:
        prov.update(extra)
    write_json(out / "provenance.json", prov)
    write_json(out / "metrics.json", metrics)
    if summary:
        print(summary)
    return out


class Timer:
    """Wall-clock timer as a context manager (``with Timer() as t: ...; t.seconds``)."""

    def __enter__(self) -> "Timer":
        self.t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.t0


def peak_rss_mb() -> float:
    """Peak resident memory of this process since it started (MiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    """Resident memory of this process now (MiB); NaN where psutil cannot tell."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2 ** 20
    except Exception:
        return float("nan")


class PeakRSS:
    """Peak resident memory while a block runs, sampled every 0.2 s (``ru_maxrss`` only ever grows)."""

    def __enter__(self) -> "PeakRSS":
        import threading

        self.peak, self._stop = 0.0, threading.Event()
        self._sample()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        return self

    def _sample(self) -> None:
        rss = current_rss_mb()
        if rss == rss:
            self.peak = max(self.peak, rss)

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join(timeout=2)
        self._sample()
