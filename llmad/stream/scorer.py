"""Batched scoring with a bounded cache: each distinct detector input is scored once (``CachedScorer``)."""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np
import pandas as pd

from llmad.data.flowbench import NUMERIC, PAPER_FEATURES
from llmad.data.reveal import ENDPOINTS, LABEL_COLUMNS
from llmad.stream.context import is_known


def _key(row: dict[str, Any], columns: Sequence[str]) -> tuple:
    return tuple(None if not is_known(v := row.get(c)) else v for c in columns)


class CachedScorer:
    """Scores detector rows in batches, remembering each distinct input's score (bounded cache).

    For a detector that renders text (``render`` + ``score_texts``, the SFT models) the sentence is cached too,
    which merges inputs (of any job, any run) that differ only below the template's rounding. The cache is an LRU
    (``OrderedDict``): memory stays bounded however long the stream, and sentences that recur across runs stay.
    """

    def __init__(self, detector: Any, columns: list[str] | None, batch_size: int = 1024,
                 cache_size: int = 200_000):
        self.detector, self.batch_size, self.cache_size = detector, batch_size, cache_size
        self.columns = columns
        self.by_text = callable(getattr(detector, "render", None)) and callable(
            getattr(detector, "score_texts", None))
        self.cache: OrderedDict[Any, float] = OrderedDict()
        self.pending: dict[Any, dict[str, Any]] = {}
        self.live: set[Any] = set()  # keys requested since the last release(): never evicted before use
        # Fields that say something about the job itself; before one is known the score is only the prior.
        self.evidence = None if columns is None else [
            c for c in columns if c in ENDPOINTS or (c.startswith("ctx_") and c != "ctx_peers")] or None
        self.requests = self.hits = self.model_rows = self.calls = 0
        self.model_s = self.render_s = 0.0

    def key(self, row: dict[str, Any]) -> tuple:
        """The value tuple the score depends on."""
        cols = self.columns if self.columns is not None else sorted(
            c for c in row if c not in LABEL_COLUMNS)
        return (tuple(cols), _key(row, cols)) if self.columns is None else _key(row, cols)

    def informative(self, row: dict[str, Any]) -> bool:
        """False while none of the detector's time-revealed inputs is known (nothing to score yet)."""
        return self.evidence is None or any(is_known(row.get(c)) for c in self.evidence)

    def request(self, key: Any, row: dict[str, Any]) -> None:
        """Ask for the score of ``key`` (computed at the next ``flush`` unless cached)."""
        self.requests += 1
        self.live.add(key)
        if key in self.cache:
            self.cache.move_to_end(key)
            self.hits += 1
            return
        if key in self.pending:
            self.hits += 1
            return
        self.pending[key] = row

    def _frame(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        df = pd.DataFrame(rows)
        for c in list(PAPER_FEATURES) + (self.columns or []):
            if c not in df.columns:
                df[c] = np.nan
        for c in df.columns:
            if df[c].dtype == object and c in NUMERIC or c.startswith("ctx_") or c in PAPER_FEATURES:
                df[c] = pd.to_numeric(df[c], errors="coerce")
        return df

    def flush(self) -> None:
        """Score every pending input (batched); evict the cache when it is full."""
        if not self.pending:
            return
        keys = list(self.pending)
        rows = [self.pending[k] for k in keys]
        self.pending = {}
        for i in range(0, len(keys), self.batch_size):
            ks, rs = keys[i:i + self.batch_size], rows[i:i + self.batch_size]
            frame = self._frame(rs)
            if self.by_text:
                t0 = time.perf_counter()
                texts = self.detector.render(frame)
                t1 = time.perf_counter()
                # Distinct inputs can render to one sentence (rounding): score each sentence once.
                uniq = {}
                for t in texts:
                    if ("text", t) in self.cache:
                        self.cache.move_to_end(("text", t))
                    else:
                        uniq[t] = None
                if uniq:
                    s = np.asarray(self.detector.score_texts(list(uniq)), dtype=np.float64)
                    self.model_rows += len(uniq)
                    self.calls += 1
                    for t, v in zip(uniq, s):
                        self.cache[("text", t)] = float(v)
                self.render_s += t1 - t0
                self.model_s += time.perf_counter() - t1
                for k, t in zip(ks, texts):
                    self.cache[k] = self.cache[("text", t)]
            else:
                t0 = time.perf_counter()
                # A detector that scores partly revealed rows differently (the NLL detector leaves unknown fields out
                # rather than writing them as missing) says so with ``score_partial``.
                score = getattr(self.detector, "score_partial", None) or self.detector.score
                s = np.asarray(score(frame), dtype=np.float64)
                self.model_s += time.perf_counter() - t0
                self.model_rows += len(ks)
                self.calls += 1
                for k, v in zip(ks, s):
                    self.cache[k] = float(v)
        self._evict()

    def _evict(self) -> None:
        """Drop least recently used entries beyond ``cache_size``; keys awaiting ``score`` stay."""
        budget = len(self.cache)
        while len(self.cache) > self.cache_size and budget > 0:
            k, v = self.cache.popitem(last=False)
            budget -= 1
            if k in self.live:  # requested since the last release(): re-append, its score is still to be read
                self.cache[k] = v

    def score(self, key: Any) -> float:
        """The score of a requested key (after ``flush``)."""
        return self.cache[key]

    def release(self) -> None:
        """The scores requested so far have been read: their keys may be evicted."""
        self.live = set()

    def stats(self) -> dict[str, Any]:
        """Requests, cache hits, detector rows and calls, seconds in the detector."""
        return {"requests": self.requests, "cache_hits": self.hits, "model_rows": self.model_rows,
                "model_calls": self.calls, "model_s": round(self.model_s, 3), "render_s": round(self.render_s, 3),
                "by_text": self.by_text}
