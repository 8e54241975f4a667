"""The bias LLM_AD measures on its SFT classifiers, and an augmentation that reduces it.

The paper (Jin et al., SC'24, "bias" experiment) asks what a fine-tuned classifier says when it is shown no
evidence: on an empty sentence it should give P(normal) ~ P(abnormal), and a gap shows a bias learned from the
data; augmenting the training data reduced the gap. llmad measures the gap P(abnormal) - P(normal) on two
content-free inputs, the empty sentence and the all-missing job (the job template rendered with every field
missing), before training (the pretrained encoder with its fresh head) and after, in ``metrics.json`` (``bias``).

``debias_augment`` (a share of the training rows) adds content-free sentences with balanced labels: the empty
sentence, the all-missing job and word prefixes of it (partial sentences that still carry no value), each text
once as normal and once as abnormal. Why this and not label-preserving field dropout: a dropped-out copy keeps
its row's label, so the all-missing job would be labelled with the train prior (about 30% abnormal on
Flow-Bench), and the model would learn P(abnormal | nothing) ~ 0.3, a gap of about -0.4 rather than 0;
label-preserving partial jobs already exist as ``--prefix-augment`` (for streaming). Balanced content-free rows
aim at exactly the paper's measure and leave every real row's label as it is.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

CONTENT_FREE = ("empty", "all_missing")
HIDDEN = ("label", "anomaly_type")  # never part of what a detector sees


def all_missing_job(like: pd.DataFrame) -> pd.DataFrame:
    """One job with the columns of ``like`` (plus the nine Flow-Bench features and the peer-context ones) and
    every field missing; ``like``'s attrs (a ``jobs:`` table's features) are kept."""
    from llmad.data.context import CONTEXT_FEATURES
    from llmad.data.flowbench import PAPER_FEATURES

    cols = [c for c in like.columns if c not in HIDDEN]
    cols += [c for c in [*PAPER_FEATURES, *CONTEXT_FEATURES, "transformation"] if c not in cols]
    job = pd.DataFrame({c: [np.nan] for c in cols})
    job.attrs.update(like.attrs)
    return job


def content_free_texts(render: Callable[[pd.DataFrame], list[str]], like: pd.DataFrame) -> dict[str, str]:
    """``{"empty": "", "all_missing": <the template rendered with every field missing>}``."""
    return {"empty": "", "all_missing": render(all_missing_job(like))[0]}


def gaps(p_abnormal: Sequence[float]) -> list[float]:
    """P(abnormal) - P(normal) per text (= 2 P(abnormal) - 1)."""
    return [float(2 * p - 1) for p in p_abnormal]


def bias_record(texts: dict[str, str], before: Sequence[float], after: Sequence[float] | None) -> dict[str, Any]:
    """``{name: {"before", "after", "text"}}`` of P(abnormal) - P(normal) (``after`` None: not measured)."""
    b = gaps(before)
    a = gaps(after) if after is not None else [None] * len(b)
    return {k: {"before": b[i], "after": a[i], "text": t} for i, (k, t) in enumerate(texts.items())}


def debias_rows(texts: dict[str, str], n_train: int, share: float, seed: int = 0) -> tuple[list[str], list[int]]:
    """About ``share * n_train`` content-free training sentences in (normal, abnormal) pairs of one text each:
    a quarter empty sentences, half all-missing jobs, a quarter random word prefixes of it."""
    if share <= 0:
        return [], []
    pairs = max(1, int(round(share * n_train / 2)))
    rng = np.random.default_rng(seed + 17)
    words = texts["all_missing"].split()
    out: list[str] = []
    for i in range(pairs):
        # Half all-missing jobs: the content-free text closest to real sentences, so the hardest to hold at 50/50.
        kind = i % 4
        if kind == 0:
            t = texts["empty"]
        elif kind in (1, 3) or len(words) < 2:
            t = texts["all_missing"]
        else:
            t = " ".join(words[:int(rng.integers(1, len(words)))])
        out += [t, t]
    return out, [0, 1] * pairs


def score_with(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int | None, batch_size: int
               ) -> np.ndarray:
    """P(abnormal) of ``texts`` under ``model`` as it is now (eval mode, no grad; its training mode restored)."""
    from llmad.detectors.sft.batching import encode, score_ids

    was_training = model.training
    model.eval()
    try:
        dev = str(next(model.parameters()).device)
        return score_ids(model, encode(tokenizer, texts, max_length), tokenizer.pad_token_id, batch_size, dev)
    finally:
        model.train(was_training)


__all__ = ["CONTENT_FREE", "all_missing_job", "content_free_texts", "gaps", "bias_record", "debias_rows",
           "score_with"]
