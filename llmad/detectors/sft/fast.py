"""Faster scoring backends for a fitted SFT model (streaming replay, ``llmad watch``).

The model, template and threshold stay those of the saved :class:`~llmad.detectors.sft.detector.SFTDetector`; only how
sentences become scores changes:

- ``torch``: the detector's own fp32 path (reference).
- ``bf16``: a bfloat16 copy of the weights, run under torch CPU autocast (which keeps layer norms and the softmax in
  fp32). On CPUs with AMX / AVX512-BF16 oneDNN runs the matmuls in bf16 (about 3x faster than fp32 for MiniLM here;
  the stored bf16 copy is 1.3x faster than autocasting fp32 weights, which re-casts every weight on every batch);
  scores move by ~1e-2 at most. On CPUs without native bf16 it is *slower*, which is why ``auto`` only picks it when
  the CPU says it has the instructions.
- ``onnx``: ONNX Runtime, fp32 graph with ORT's BERT fusions (attention, gelu, skip-layernorm) when they apply;
  scores equal torch's to ~1e-6. Needs the optional extra ``llmad[onnx]``.
- ``onnx-int8``: the same graph with dynamic int8 weights (MatMulInteger; VNNI/AMX kernels in MLAS): ~2.5x fp32,
  scores move by a few 1e-2, so alerts near the threshold can flip.
- ``auto``: CUDA -> ``torch`` (the detector already autocasts on GPU); CPU with native bf16 -> ``bf16``; else
  ``onnx-int8`` when onnxruntime is installed; else ``torch``.

Small batches (64, length-sorted, dynamic padding) are faster than large ones on CPU: the activations stay in cache.
``workers=N`` scores N batches at once in N threads (torch and ONNX Runtime release the GIL inside an op); with one
intra-op thread each this uses N cores better than one batch on N intra-op threads, whose small matmuls sync a lot.
A batch's scores do not depend on how many workers there are.
"""
from __future__ import annotations

import contextlib
import copy
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from llmad.detectors.sft.batching import length_order, pad_batch, softmax1
from llmad.errors import LlmadError

BACKENDS = ("auto", "torch", "bf16", "onnx", "onnx-int8")


def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises AMX-BF16 or AVX512-BF16 (Linux /proc/cpuinfo; False when unknown)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def onnxruntime_available() -> bool:
    """onnxruntime and onnx (export + quantization) are importable."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def check_backend(backend: str) -> str:
    """``backend`` when it is a known name; else a one-line error listing the names."""
    if backend not in BACKENDS:
        raise LlmadError(f"--backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    return backend


def pick_backend(detector: Any, backend: str = "auto") -> str:
    """Resolve ``auto`` (and check a named backend can run here)."""
    check_backend(backend)
    dev = getattr(detector, "device_", "cpu")
    if backend == "auto":
        if dev != "cpu" or getattr(detector, "quantized_", False):
            return "torch"
        if cpu_has_native_bf16():
            return "bf16"
        return "onnx-int8" if onnxruntime_available() else "torch"
    if backend.startswith("onnx") and not onnxruntime_available():
        raise LlmadError(f"--backend {backend} needs onnxruntime and onnx: pip install 'llmad[onnx]'")
    if backend != "torch" and dev != "cpu":
        raise LlmadError(f"--backend {backend} is a CPU backend; on {dev} use torch (it autocasts already)")
    return backend


class FastSFT:
    """A fitted SFT detector with a faster ``score_texts``; everything else (render, threshold, config) delegates."""

    def __init__(self, detector: Any, backend: str = "auto", batch_size: int = 64, threads: int | None = None,
                 workers: int = 1):
        if not callable(getattr(detector, "score_texts", None)) or not callable(getattr(detector, "render", None)):
            raise LlmadError("a scoring backend wraps an SFT detector (render + score_texts)")
        self.detector = detector
        self.backend = pick_backend(detector, backend)
        self.batch_size = int(batch_size)
        self.threads = threads
        self.workers = max(1, int(workers))
        self._session = None
        self._tmp = None
        self._model = None  # bf16: the bfloat16 weight copy
        if self.backend.startswith("onnx"):
            self._session = self._build_onnx(int8=self.backend == "onnx-int8")
            self._input_names = {i.name for i in self._session.get_inputs()}
        else:
            import torch

            if self.backend == "bf16":
                # Half the weight memory of the fp32 model on top of it; the detector's own model stays fp32.
                self._model = copy.deepcopy(detector.model_).to(torch.bfloat16).eval()
            if self.workers > 1:
                # Each worker thread is one core's worth: intra-op threads on top would oversubscribe.
                torch.set_num_threads(1)
        self.name = f"{getattr(detector, 'name', 'sft')}[{self.backend}]"

    def __getattr__(self, item: str) -> Any:
        # Only reached for attributes FastSFT itself lacks: config, threshold_, tokenizer_, encode, _template_path, ...
        if item.startswith("__") or item == "detector":
            raise AttributeError(item)
        return getattr(self.detector, item)

    # ------------------------------------------------------------------ scoring
    def render(self, jobs: pd.DataFrame) -> list[str]:
        """Job sentences under the wrapped detector's template."""
        return self.detector.render(jobs)

    def score(self, items: pd.DataFrame) -> np.ndarray:
        """P(anomalous) per job, through this backend."""
        if len(items) == 0:
            return np.zeros(0)
        return self.score_texts(self.render(items))

    def predict(self, items: pd.DataFrame) -> np.ndarray:
        """1 where the score reaches the wrapped detector's threshold."""
        return (self.score(items) >= self.detector.threshold_).astype(int)

    def score_texts(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """P(anomalous) per sentence: length-sorted small batches, dynamic padding."""
        texts = list(texts)
        if not texts:
            return np.zeros(0)
        bs = batch_size or self.batch_size
        if self.backend == "torch" and self.workers == 1:
            return self.detector.score_texts(texts, batch_size=bs)
        ids = self.detector.encode(texts)
        order = length_order(ids)
        out = np.empty(len(ids), dtype=np.float64)
        pad = self.detector.tokenizer_.pad_token_id
        batches = [order[i:i + bs] for i in range(0, len(order), bs)]

        canonical = self._session is None  # torch/oneDNN: see _canonical_batch

        def one(idx: np.ndarray) -> None:
            seqs = [ids[j] for j in idx]
            x, m = self._canonical_batch(seqs, bs) if canonical else pad_batch(seqs, pad)
            out[idx] = softmax1(self._logits(x, m).astype(np.float64))[:len(idx)]

        if self.workers > 1 and len(batches) > 1:
            list(self._executor().map(one, batches))
        else:
            for idx in batches:
                one(idx)
        return out

    def _canonical_batch(self, seqs: list[list[int]], bs: int):
        """Padded (ids, mask) of ``bs`` rows (copies of the first row after the real ones, dropped later), as wide
        as the longest sequence rounded up to a multiple of 8 (masked pad tokens). oneDNN builds and keeps a kernel
        per input shape (~3 MB each in bf16 here), so free shapes made RSS grow with the stream; a few fixed shapes
        keep it flat and skip the rebuilds."""
        import torch

        n = max(len(q) for q in seqs)
        width = -(-n // 8) * 8
        limit = getattr(getattr(self.detector, "config", None), "max_length", None)
        if limit:
            width = max(n, min(width, int(limit)))
        rows = max(bs, len(seqs))
        ids = torch.full((rows, width), self.detector.tokenizer_.pad_token_id, dtype=torch.long)
        mask = torch.zeros((rows, width), dtype=torch.long)
        for j, q in enumerate(seqs):
            ids[j, :len(q)] = torch.tensor(q, dtype=torch.long)
            mask[j, :len(q)] = 1
        ids[len(seqs):] = ids[0]
        mask[len(seqs):] = mask[0]
        return ids, mask

    def _executor(self):
        """One pool for the wrapper's life: the same threads (and malloc arenas) serve every call."""
        if self.__dict__.get("_pool") is None or self.__dict__.get("_pool_workers") != self.workers:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="llmad-score")
            self._pool_workers = self.workers
        return self._pool

    def _logits(self, x, m) -> np.ndarray:
        """2-class logits of one padded batch (called from worker threads: autocast/inference mode are per thread)."""
        if self._session is None:
            import torch

            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if self.backend == "bf16" else contextlib.nullcontext()
            model = self._model if self._model is not None else self.detector.model_
            with torch.inference_mode(), ctx:
                return model(input_ids=x, attention_mask=m).logits.float().numpy()
        names = self._input_names
        feed = {"input_ids": x.numpy(), "attention_mask": m.numpy()}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        return self._session.run(None, {k: v for k, v in feed.items() if k in names})[0]

    # ------------------------------------------------------------------ ONNX
    def _build_onnx(self, int8: bool):
        """Export the model to ONNX (eager attention, so ORT can fuse it), optimise, optionally int8; a session."""
        import onnxruntime as ort
        import torch

        det = self.detector
        self._tmp = tempfile.TemporaryDirectory(prefix="llmad-onnx-")
        d = Path(self._tmp.name)
        model = copy.deepcopy(det.model_).to("cpu").float().eval()
        try:
            model.set_attn_implementation("eager")  # the SDPA export is not matched by ORT's attention fusion
        except Exception:
            pass
        x, m = pad_batch(det.encode(["wms 1 queue 2 run 3", "wms 1"]), det.tokenizer_.pad_token_id)

        class _Logits(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask):
                return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

        raw = d / "model.onnx"
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            # The TorchScript exporter: no onnxscript dependency, dynamic batch and length axes.
            torch.onnx.export(_Logits(model), (x, m), str(raw), input_names=["input_ids", "attention_mask"],
                              output_names=["logits"], opset_version=17, dynamo=False,
                              dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                            "attention_mask": {0: "batch", 1: "seq"}, "logits": {0: "batch"}})
        path = raw
        cfg = getattr(model, "config", None)
        if getattr(cfg, "model_type", None) in ("bert", "roberta", "distilbert", "xlm-roberta"):
            try:
                from onnxruntime.transformers.optimizer import optimize_model

                opt = optimize_model(str(raw), model_type="bert", num_heads=cfg.num_attention_heads,
                                     hidden_size=cfg.hidden_size, opt_level=1)
                path = d / "model.opt.onnx"
                opt.save_model_to_file(str(path))
            except Exception as e:  # fusions are an optimisation only: the plain graph scores the same
                warnings.warn(f"ONNX Runtime transformer fusion skipped: {e}")
                path = raw
        if int8:
            import onnx
            from onnxruntime.quantization import QuantType, quantize_dynamic

            q = d / "model.int8.onnx"
            # Fused ops carry no inferred output types: tell the quantizer they are float.
            quantize_dynamic(str(path), str(q), weight_type=QuantType.QInt8,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            path = q
        so = ort.SessionOptions()
        # One intra-op thread per worker when several workers share the cores.
        so.intra_op_num_threads = 1 if self.workers > 1 else int(
            self.threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0))
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def with_backend(detector: Any, backend: str | None = "auto", **kw: Any) -> Any:
    """``detector`` wrapped in :class:`FastSFT` when it is an SFT model; other detectors unchanged."""
    if backend is None or not (callable(getattr(detector, "score_texts", None))
                               and hasattr(detector, "tokenizer_") and hasattr(detector, "model_")):
        return detector
    if isinstance(detector, FastSFT):
        return detector
    return FastSFT(detector, backend, **kw)
