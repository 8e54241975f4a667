"""How a stream is replayed and when it alerts (``StreamConfig``), and the ``--speed`` parser."""
from __future__ import annotations

import re
from dataclasses import dataclass

from llmad.config import option
from llmad.errors import LlmadError


@dataclass
class StreamConfig:
    """How a stream is replayed and when it alerts."""

    # events: fields appear as their timestamps pass; features: the paper's study, one feature a step
    reveal: str = option("events", "events | features (the paper's online study)")
    # max, or <N>x: paced, event time runs N times faster than real time (each run on its own clock)
    speed: str = option("max", "max | Nx (pace event time N times faster than real)")
    alert: str = option("threshold", "threshold | k-of-n")
    k: int = option(2, "k-of-n: hits needed")
    n: int = option(3, "k-of-n: window of observations")
    # model: fitted on validation; validation: re-chosen on a validation replay; or a number
    threshold: str = option("model", "model | validation | a number")
    threshold_objective: str = option("f1", "objective of --threshold validation: f1 | accuracy | youden", cli=False)
    batch: str = option("run", "run | step: batch scoring per run or per time step")
    batch_size: int = option(1024, "rows per detector call", cli=False)
    # LRU: memory stays bounded however long the stream
    cache_size: int = option(200_000, "distinct inputs whose score is remembered", cli=False)
    quantize: bool = option(False, "SFT models: int8 dynamic quantization (CPU)")
    backend: str = option("auto", "SFT scoring: auto | torch | bf16 | onnx | onnx-int8 (llmad.detectors.sft.fast)")
    workers: int = option(1, "SFT scoring threads (e.g. 2 on 2 cores: batches in parallel)")

    def check(self) -> "StreamConfig":
        """Validate option values (raises LlmadError with the allowed values)."""
        if self.reveal not in ("events", "features"):
            raise LlmadError(f"--reveal {self.reveal!r}: expected events or features")
        if self.alert not in ("threshold", "k-of-n"):
            m = re.fullmatch(r"\s*(\d+)\s*-?of-?\s*(\d+)\s*", str(self.alert))
            k, n = m.groups() if m else ("K", "N")
            raise LlmadError(f"--alert {self.alert!r}: expected threshold or k-of-n (the window is set by --k and "
                             f"--n: --alert k-of-n --k {k} --n {n})")
        if self.alert == "k-of-n" and not 1 <= self.k <= self.n:
            raise LlmadError(f"k-of-n needs 1 <= k <= n, got k={self.k} n={self.n}")
        if self.batch not in ("run", "step"):
            raise LlmadError(f"--batch {self.batch!r}: expected run or step")
        from llmad.detectors.sft.fast import check_backend

        check_backend(self.backend)
        if self.workers < 1:
            raise LlmadError(f"--workers {self.workers}: expected >= 1")
        parse_speed(self.speed)
        if self.threshold not in ("model", "validation"):
            try:
                float(self.threshold)
            except ValueError:
                raise LlmadError(f"--threshold {self.threshold!r}: expected model, validation or a number") from None
        return self


def parse_speed(speed: str | float | None) -> float | None:
    """``max`` -> None (no pacing); ``10x`` / ``10`` -> 10.0."""
    if speed is None or str(speed).strip().lower() in ("max", "inf", ""):
        return None
    s = str(speed).strip().lower().rstrip("x")
    try:
        v = float(s)
    except ValueError:
        raise LlmadError(f"--speed {speed!r}: expected max or a factor such as 10x") from None
    if not v > 0:
        raise LlmadError(f"--speed {speed!r}: the factor must be positive")
    return v
