"""The LLM_AD paper's published job sentences (Jin et al., SC'24): their format, parsing and the published rows.

The sentence is a data format here, not a prompt: the paper split matches the published validation/test rows to
jobs by it. ``prompts/job/paper.j2`` renders the same bytes for prompting (a test keeps the two equal).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from llmad.data.flowbench import PAPER_FEATURES
from llmad.data.specs import candidate_data_dirs, find_data_dir
from llmad.errors import DataError


def pyfloat(v: Any) -> str:
    """Python's float repr, as the LLM_AD sentences print values (``6.0``, ``nan``)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return str(f)


def paper_sentences(jobs: pd.DataFrame, features: Sequence[str] = PAPER_FEATURES) -> list[str]:
    """Each job as the published sentence: ``wms_delay is 6.0 queue_delay is 2.0 ... `` (trailing space)."""
    cols = [jobs[f].tolist() for f in features]
    return ["".join(f"{f} is {pyfloat(v)} " for f, v in zip(features, row)) for row in zip(*cols)]


_SENT = re.compile(r"(\w+) is (\S+) ")


def parse_paper_sentence(text: str) -> dict[str, float]:
    """Features back from a published sentence (``wms_delay is 6.0 ...``)."""
    return {k: float(v) for k, v in _SENT.findall(text)}


def published_workflows(data_dir: str | Path | None = None) -> str:
    """Which workflows have published LLM_AD rows in the data dirs, as a hint for an error message."""
    names = sorted({p.parent.name for d in candidate_data_dirs(data_dir) for p in d.glob("llm_ad/*/test.csv")})
    if not names:
        return "no data dir holds llm_ad/<workflow>/ (use --split run or --split workflow)"
    return f"these have one: {', '.join(names)} (or use --split run or --split workflow)"


def published_rows(workflow: str, part: str, data_dir: str | Path | None = None) -> pd.DataFrame:
    """The published LLM_AD rows (``text,label``) for a workflow and part."""
    try:
        base = find_data_dir(data_dir, needs=f"llm_ad/{workflow}")
    except DataError:
        raise DataError(f"--split paper: workflow {workflow!r} has no published LLM_AD split; "
                        f"{published_workflows(data_dir)}") from None
    path = base / "llm_ad" / workflow / f"{part}.csv"
    if not path.is_file():
        raise DataError(f"no published {part} rows for workflow {workflow!r}", file=str(path))
    df = pd.read_csv(path)
    for col in ("text", "label"):
        if col not in df.columns:
            raise DataError("missing column", file=str(path), row=1, field=col)
    return df


