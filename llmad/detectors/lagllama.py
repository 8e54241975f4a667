"""Lag-Llama (Rasul et al., 2023, "Lag-Llama: Towards Foundation Models for Probabilistic Time Series
Forecasting") as a forecast-error / prediction-interval anomaly detector.

The model code is sktime's vendored copy (``sktime.libs.lag_llama.model.module.LagLlamaModel``, needs gluonts);
llmad calls the torch module directly (no lightning trainer), so the scoring path needs only torch + gluonts.
Score of a point = negative log-likelihood of the observed value under the model's one-step-ahead predictive
Student-t, given everything before it (teacher forcing), averaged over channels (Lag-Llama is univariate:
each metric is forecast on its own). ``score_kind="z"`` uses |y - median| / scale instead (a prediction-interval
distance). Thresholds come from validation.

Checkpoints: the official ``lag-llama.ckpt`` (Lightning format: ``hyper_parameters.model_kwargs`` +
``state_dict`` with ``model.`` keys) from the hub id ``time-series-foundation-models/Lag-Llama`` or a path.
Files are read with ``torch.load(weights_only=True)``; llmad writes the distribution output by name so its own
checkpoints need nothing more. The official file pickles a gluonts ``StudentTOutput`` (loading it can run
code), so it loads only from the official hub id or with ``trust_checkpoint=True``. Offline,
``build_small_lagllama`` writes a small checkpoint in the same format (tests; ``llmad numeric --method lagllama``
trains one on the train part when ``--model`` is ``scratch``).

Where llmad differs: time features are computed from a synthetic per-minute index when the checkpoint wants
them (our windows carry no calendar); history shorter than the largest lag is zero-padded and marked
unobserved (the model's scaler ignores it); windows are scored with up to ``max_lag + context_length`` earlier
points of the same series as history.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llmad.data.windows import WindowSet
from llmad.detectors.windows import WindowDetector, as_windows, check_finite, torch_threads
from llmad.errors import LlmadError, ModelNotFoundError

HUB_ID = "time-series-foundation-models/Lag-Llama"
CKPT_NAME = "lag-llama.ckpt"
NLL_CLIP = 1e3  # a near-constant channel can give an astronomically small scale; keep scores finite


def default_lags(freqs: tuple[str, ...] = ("min",)) -> list[int]:
    """Lag indices as Lag-Llama's estimator builds them (0-based) for the given frequency strings."""
    from gluonts.time_feature import get_lags_for_frequency

    lags: set[int] = set()
    for f in freqs:
        lags.update(get_lags_for_frequency(freq_str=f, num_default_lags=1))
    return sorted(i - 1 for i in lags)


def _distr_outputs() -> dict[str, Any]:
    from gluonts.torch.distributions import NormalOutput, StudentTOutput

    return {"studentt": StudentTOutput, "normal": NormalOutput}


def _plain_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    """model_kwargs with the distribution output stored by name, so ``weights_only=True`` can read the file."""
    out = dict(kw)
    d = out.get("distr_output")
    if not isinstance(d, str):
        names = {cls: name for name, cls in _distr_outputs().items()}
        if type(d) not in names:
            raise LlmadError(f"cannot store Lag-Llama distribution output {type(d).__name__} by name")
        out["distr_output"] = names[type(d)]
    return out


def resolve_checkpoint(name: str) -> Path:
    """A local ``.ckpt`` path, a folder holding ``lag-llama.ckpt``, or the hub id (download when reachable)."""
    p = Path(name).expanduser()
    if p.is_dir():
        p = p / CKPT_NAME
    if p.is_file():
        return p
    if name.startswith((".", "/", "~")) or p.suffix == ".ckpt":
        raise ModelNotFoundError(f"Lag-Llama checkpoint {name} does not exist")
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id=name, filename=CKPT_NAME))
    except Exception as e:
        raise ModelNotFoundError(f"Lag-Llama checkpoint {name!r} could not be fetched from the hub "
                                 f"({type(e).__name__}); pass a local .ckpt (e.g. one written by "
                                 f"llmad.detectors.lagllama.build_small_lagllama) or --model scratch") from None


def load_checkpoint(path: str | Path, trust_checkpoint: bool = False) -> dict[str, Any]:
    """Read a Lightning-format Lag-Llama checkpoint with ``weights_only=True`` and an allow-list."""
    import pickle

    import torch

    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not trust_checkpoint:
            raise LlmadError(f"Lag-Llama checkpoint {path} pickles Python objects (the official file stores a "
                             f"gluonts StudentTOutput); loading it can run code: pass trust_checkpoint=True "
                             f"(--trust-checkpoint) only for a file you trust") from None
        ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise LlmadError(f"{path} is not a Lag-Llama Lightning checkpoint (needs hyper_parameters and state_dict)")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any]):
    """A ``LagLlamaModel`` with the checkpoint's hyper-parameters and weights."""
    from sktime.libs.lag_llama.model.module import LagLlamaModel

    kw = dict(ckpt["hyper_parameters"]["model_kwargs"])
    if isinstance(kw.get("distr_output"), str):
        known = _distr_outputs()
        if kw["distr_output"] not in known:
            raise LlmadError(f"unknown Lag-Llama distribution output {kw['distr_output']!r}")
        kw["distr_output"] = known[kw["distr_output"]]()
    model = LagLlamaModel(**kw)
    sd = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    # rotary caches are buffers computed on the fly; anything else missing means a wrong file
    real_missing = [k for k in missing if "rotary" not in k]
    if real_missing:
        raise LlmadError(f"Lag-Llama checkpoint misses weights {real_missing[:3]}")
    return model, kw


def build_small_lagllama(path: str | Path, context_length: int = 32, n_layer: int = 2, n_head: int = 2,
                         n_embd_per_head: int = 8, lags_seq: list[int] | None = None, time_feat: bool = False,
                         seed: int = 0, train_windows: np.ndarray | None = None, steps: int = 0,
                         batch_size: int = 64, lr: float = 1e-3) -> Path:
    """Write a small Lag-Llama checkpoint in the official format (optionally trained ``steps`` on windows)."""
    import torch
    from gluonts.torch.distributions import StudentTOutput
    from sktime.libs.lag_llama.model.module import LagLlamaModel

    torch.manual_seed(seed)
    kw = {"context_length": context_length, "max_context_length": 2048, "scaling": "robust", "input_size": 1,
          "n_layer": n_layer, "n_embd_per_head": n_embd_per_head, "n_head": n_head,
          "lags_seq": lags_seq if lags_seq is not None else default_lags(), "distr_output": StudentTOutput(),
          "rope_scaling": None, "num_parallel_samples": 20, "time_feat": time_feat, "dropout": 0.0}
    model = LagLlamaModel(**kw)
    if steps and train_windows is not None:
        train_forecaster(model, kw, train_windows, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from llmad.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save({"hyper_parameters": {"model_kwargs": _plain_kwargs(kw)},
                    "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, str(tmp))
    return path


def _time_feats(n: int) -> np.ndarray:
    import pandas as pd
    from gluonts.time_feature import time_features_from_frequency_str

    idx = pd.date_range("2023-01-01", periods=n, freq="min")
    return np.stack([f(idx) for f in time_features_from_frequency_str("S")], axis=-1).astype(np.float32)


def _forward(model, kw, past, past_obs, future):
    """Distribution params for each future step (teacher-forced one-step-ahead), with loc/scale."""
    import torch

    tf = None
    if kw.get("time_feat"):
        T = past.shape[1] + future.shape[1]
        feats = torch.from_numpy(_time_feats(T)).to(past.device).unsqueeze(0).expand(past.shape[0], -1, -1)
        tf = (feats[:, :past.shape[1]], feats[:, past.shape[1]:])
    params, loc, scale = model(past_target=past, past_observed_values=past_obs,
                               past_time_feat=None if tf is None else tf[0],
                               future_time_feat=None if tf is None else tf[1], future_target=future)
    L = future.shape[1]
    sliced = [p[:, -L:] for p in params]
    return model.distr_output.distribution(sliced, loc, scale)


def train_forecaster(model, kw, windows_hist: np.ndarray, steps: int = 100, batch_size: int = 64,
                     lr: float = 1e-3, seed: int = 0, obs: np.ndarray | None = None,
                     horizon: int | None = None, device: str = "cpu") -> list[float]:
    """Teacher-forced NLL training on univariate sequences cut from (N, T, F) windows (history included)."""
    import torch

    hist = max(kw["lags_seq"]) + kw["context_length"]
    x = np.asarray(windows_hist, dtype=np.float32)
    N, T, F = x.shape
    H = horizon or max(1, T - hist)
    if T <= hist:
        raise LlmadError(f"Lag-Llama training sequences of {T} points are not longer than its history {hist}")
    o = np.ones((N, T), np.float32) if obs is None else obs
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-8)
    model.to(device).train()
    losses = []
    while len(losses) < steps:
        i = rng.integers(0, N, batch_size)
        c = rng.integers(0, F, batch_size)
        st = rng.integers(0, T - hist - H + 1, batch_size) if T - hist - H > 0 else np.zeros(batch_size, int)
        seq = np.stack([x[a, s:s + hist + H, b] for a, b, s in zip(i, c, st)])
        ob = np.stack([o[a, s:s + hist + H] for a, s in zip(i, st)])
        past = torch.from_numpy(seq[:, :hist]).to(device)
        fut = torch.from_numpy(seq[:, hist:]).to(device)
        po = torch.from_numpy(ob[:, :hist]).to(device)
        fo = torch.from_numpy(ob[:, hist:]).to(device)
        d = _forward(model, kw, past, po, fut)
        loss = (-(d.log_prob(fut)) * fo).sum() / fo.sum().clamp_min(1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    model.eval()
    return losses


class LagLlamaDetector(WindowDetector):
    """One-step-ahead forecast NLL (or z-distance) per point; ``finetune`` = none | full (NLL on train)."""

    name = "lagllama"
    kind = "lagllama"
    zero_shot_ok = True

    def __init__(self, model: str = HUB_ID, finetune: str = "none", score_kind: str = "nll", max_steps: int = 100,
                 batch_size: int = 64, lr: float = 1e-3, seed: int = 0, device: str | None = None,
                 trust_checkpoint: bool = False, score_batch: int = 256):
        if finetune not in ("none", "full"):
            raise LlmadError(f"lagllama finetune {finetune!r}: expected none or full")
        if score_kind not in ("nll", "z"):
            raise LlmadError(f"lagllama score_kind {score_kind!r}: expected nll or z")
        self.model, self.finetune, self.score_kind, self.max_steps = model, finetune, score_kind, max_steps
        self.batch_size, self.lr, self.seed, self.device = batch_size, lr, seed, device
        self.trust_checkpoint, self.score_batch = trust_checkpoint, score_batch
        self.name = "lagllama" if finetune == "none" else "lagllama-ft"

    def _load(self) -> None:
        import torch

        from llmad.models.resolve import pick_device_dtype

        torch_threads()
        torch.manual_seed(self.seed)
        # The official hub file pickles a gluonts object; naming its hub id is the user's explicit choice of it.
        ckpt = load_checkpoint(resolve_checkpoint(self.model), self.trust_checkpoint or self.model == HUB_ID)
        self.model_, self.kw_ = model_from_checkpoint(ckpt)
        self.device_ = self.device or pick_device_dtype()[0]
        self.model_.to(self.device_).eval()
        self.history_ = int(max(self.kw_["lags_seq"]) + self.kw_["context_length"])

    def _fit(self, train: WindowSet) -> None:
        self._load()
        self.train_steps_ = 0
        if self.finetune == "full" and len(train):
            xh, m = train.windows_with_history(self.history_)
            self.losses_ = train_forecaster(self.model_, self.kw_, check_finite(xh), steps=self.max_steps,
                                            batch_size=self.batch_size, lr=self.lr, seed=self.seed, obs=m,
                                            horizon=train.length, device=self.device_)
            self.train_steps_ = len(self.losses_)

    def score_steps(self, items: Any) -> np.ndarray:
        if isinstance(items, WindowSet):
            xh, m = items.windows_with_history(self.history_)
        else:
            x = as_windows(items)
            pad = np.zeros((x.shape[0], self.history_, x.shape[2]), np.float32)
            xh = np.concatenate([pad, x], axis=1)
            m = np.concatenate([np.zeros((x.shape[0], self.history_), np.float32),
                                np.ones(x.shape[:2], np.float32)], axis=1)
        return self._score_hist(check_finite(xh), m)

    def _score_hist(self, xh: np.ndarray, m: np.ndarray) -> np.ndarray:
        import torch

        N, T, F = xh.shape
        H = self.history_
        L = T - H
        seqs = np.transpose(xh, (0, 2, 1)).reshape(N * F, T)
        obs = np.repeat(m, F, axis=0)
        out = []
        self.model_.eval()
        with torch.no_grad():
            for i in range(0, len(seqs), self.score_batch):
                s = torch.from_numpy(seqs[i:i + self.score_batch]).to(self.device_)
                o = torch.from_numpy(obs[i:i + self.score_batch]).to(self.device_)
                past, fut = s[:, :H], s[:, H:]
                d = _forward(self.model_, self.kw_, past, o[:, :H], fut)
                if self.score_kind == "nll":
                    sc = -d.log_prob(fut)
                else:
                    center = d.base_dist.loc * d.scale + d.loc if hasattr(d, "base_dist") else d.mean
                    spread = d.stddev if not hasattr(d, "base_dist") else d.base_dist.scale * d.scale
                    sc = (fut - center).abs() / spread.clamp_min(1e-6)
                out.append(sc.float().clamp(-NLL_CLIP, NLL_CLIP).cpu().numpy())
        s = np.concatenate(out).reshape(N, F, L)
        return s.mean(axis=1)

    def save(self, path: str | Path) -> None:
        """detector.json + the (fine-tuned) checkpoint in the official format."""
        import torch

        from llmad.io import atomic_path

        path = Path(path)
        with atomic_path(path / CKPT_NAME) as tmp:
            torch.save({"hyper_parameters": {"model_kwargs": _plain_kwargs(self.kw_)},
                        "state_dict": {f"model.{k}": v.cpu() for k, v in self.model_.state_dict().items()}},
                       str(tmp))
        self._write_meta(path, {"history": self.history_})

    @classmethod
    def load(cls, path: str | Path) -> "LagLlamaDetector":
        """Inverse of ``save`` (reads the checkpoint stored beside detector.json)."""
        meta = cls._read_meta(Path(path))
        params = dict(meta["params"])
        params["model"] = str(Path(path) / CKPT_NAME)
        det = cls(**params)
        det._load()
        det.threshold_ = meta["threshold"]
        return det
