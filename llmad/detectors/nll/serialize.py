"""Rows (jobs or metric windows) -> text for the NLL detector, with the character span of every value.

Numbers are written with 3 significant digits (``sig_digits``), and ``k``/``M``/``G``/``T`` above 10,000:
``152``, ``1.52k`` is written ``1520``, ``15.2k``, ``0.0123``. Why: Flow-Bench delays are differences of 1-second
timestamps and runtimes vary by several percent between identical jobs, so the 4th digit and beyond are noise. A
likelihood detector is scored on every digit it reads: noise digits add ~log(10) nats each of irreducible NLL that
differs from row to row and drowns the signal (an anomaly moves the leading digits), and they cost tokens (time).

Values are data: each field reaches the (sandboxed) template as a string wrapped in private-use sentinel characters
that mark where it starts and ends; they are stripped after rendering, leaving the text and one (start, end) span
per field, so a template may reorder, rename or decorate fields freely. A missing value is written as ``missing``
(``NLLConfig.missing``; ``""`` leaves the field out), and in partial mode (streaming: fields not revealed yet) it is
left out. A value longer than ``max_value_chars`` is cut, with one ``warning [long-value]`` per call.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Sequence

import numpy as np
import pandas as pd

from llmad.errors import LlmadError

OPEN, CLOSE, BASE = "\ue000", "\ue001", 0xE100  # sentinels: open, close, field index offset (private use area)
MAX_FIELDS = 4096
SUFFIXES = ((1e12, 1e12, "T"), (1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k"))  # (from, divisor, suffix)


def sig_num(v: float, digits: int = 3) -> str:
    """A number with ``digits`` significant digits; k/M/G/T suffixes from 10,000 (see the module docstring)."""
    r = float(f"{float(v):.{digits}g}")  # round first: 999,960 becomes 1M, not 1000k
    if r == 0:
        return "0"
    a = abs(r)
    for start, div, suf in SUFFIXES:
        if a >= start:
            return _fmt(r / div, digits) + suf
    if a < 10 ** -(digits + 1):
        return f"{r:.{max(digits - 1, 0)}e}"
    return _fmt(r, digits)


def _fmt(x: float, digits: int) -> str:
    r = float(f"{x:.{digits}g}")
    return str(int(r)) if r == int(r) else np.format_float_positional(r, trim="-")


def fmt_value(v: Any, digits: int = 3) -> str | None:
    """A field value as text; None when missing (None, NaN, inf, empty)."""
    if v is None or v is pd.NA:
        return None
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, float, np.integer, np.floating)):
        f = float(v)
        return None if not math.isfinite(f) else sig_num(f, digits)
    s = str(v).strip()
    return s or None


class Serializer:
    """Field records -> (text, spans) through a sandboxed ``prompts/nll`` template."""

    def __init__(self, template: str = "job", digits: int = 3, missing: str = "missing", max_value_chars: int = 48):
        from llmad.render import get_template

        self.template, self.digits, self.missing, self.max_value_chars = template, digits, missing, max_value_chars
        self.tpl = get_template(template, "nll")
        self.cut = 0

    def values(self, record: dict[str, Any], order: Sequence[str], partial: bool = False) -> list[tuple[str, str]]:
        """(field, text) in ``order``; missing values as ``missing`` (left out when partial or ``missing=''``)."""
        out = []
        for name in order:
            text = fmt_value(record.get(name), self.digits)
            if text is None:
                if partial or not self.missing:
                    continue
                text = self.missing
            if len(text) > self.max_value_chars:
                text = text[:self.max_value_chars]
                self.cut += 1
            out.append((name, text))
        return out

    def render(self, pairs: list[tuple[str, str]]) -> tuple[str, list[tuple[str, int, int]]]:
        """The text of ``pairs`` and (field, start, end) of each value in it (template order)."""
        from llmad.render import bounded_render

        if len(pairs) > MAX_FIELDS:
            raise LlmadError(f"{len(pairs)} fields in one row; at most {MAX_FIELDS} can be serialized")
        clean = [(n, v.replace(OPEN, "").replace(CLOSE, "")) for n, v in pairs]
        fields = [{"name": n, "value": f"{OPEN}{chr(BASE + i)}{v}{CLOSE}"} for i, (n, v) in enumerate(clean)]
        raw = bounded_render(self.tpl, self.template, fields=fields)
        parts: list[str] = []
        spans: list[tuple[str, int, int]] = []
        pos, i, n = 0, 0, len(raw)
        while i < n:
            j = raw.find(OPEN, i)
            if j < 0:
                parts.append(raw[i:])
                break
            parts.append(raw[i:j])
            pos += j - i
            k = raw.find(CLOSE, j)
            if k < 0 or j + 1 >= n:
                raise LlmadError(f"template {self.template!r}: a field value was cut inside the template")
            idx = ord(raw[j + 1]) - BASE
            value = raw[j + 2:k]
            if 0 <= idx < len(clean) and value:
                spans.append((clean[idx][0], pos, pos + len(value)))
            parts.append(value)
            pos += len(value)
            i = k + 1
        return "".join(parts), spans

    def warn(self, where: str = "") -> None:
        """One ``warning [long-value]`` line for the values cut since the last call."""
        if self.cut:
            print(f"llmad: warning [long-value]: {self.cut} value(s){where} longer than {self.max_value_chars} "
                  f"characters were cut", file=sys.stderr)
            self.cut = 0


def job_records(jobs: pd.DataFrame, columns: Sequence[str]) -> list[dict[str, Any]]:
    """One ``{field: value}`` per job (absent columns are missing)."""
    cols = [c for c in columns if c in jobs.columns]
    recs = jobs[cols].to_dict(orient="records") if len(jobs) else []
    return recs


def window_records(windows: np.ndarray, features: Sequence[str], stats: Sequence[str]) -> list[dict[str, Any]]:
    """One ``{"<feature> <stat>": z}`` per metric window (N, L, F), stats among last, mean, max, min, std."""
    x = np.asarray(windows, dtype=np.float64)
    fns = {"last": lambda a: a[:, -1], "mean": lambda a: a.mean(1), "max": lambda a: a.max(1),
           "min": lambda a: a.min(1), "std": lambda a: a.std(1)}
    bad = [s for s in stats if s not in fns]
    if bad:
        raise LlmadError(f"window_stats {bad}: expected some of {', '.join(fns)}")
    cols = {f"{f} {s}": fns[s](x)[:, i] for i, f in enumerate(features) for s in stats} if len(x) else {}
    return pd.DataFrame(cols).to_dict(orient="records") if len(x) else []


def window_fields(features: Sequence[str], stats: Sequence[str]) -> list[str]:
    """The field names ``window_records`` writes."""
    return [f"{f} {s}" for f in features for s in stats]
