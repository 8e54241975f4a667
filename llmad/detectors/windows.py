"""Numeric-track detectors on metric windows: the shared ``WindowDetector`` contract, and the classical
baselines IsolationForest, an LSTM autoencoder (torch) and random forest / gradient boosting on window features.

Every detector scores *steps* inside a window (``score_steps`` -> (N, L), higher = more anomalous); overlapping
windows are averaged back to one score per point (``WindowSet.points_from_steps``), and the threshold is chosen
on validation *points* (``Detector.set_threshold``), never on test. Window-level models (iforest, rf, hgb)
broadcast their window score over the window's steps.

Saved sklearn models are pickles: load only files you wrote yourself.
"""
from __future__ import annotations

import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np

from llmad.data.windows import WindowSet, window_features
from llmad.detectors.base import Detector, read_detector_json, write_detector_json
from llmad.detectors.baselines import fit_tree, make_estimator
from llmad.errors import LlmadError


def as_windows(items: Any) -> np.ndarray:
    """A WindowSet or an (N, L, F) array -> (N, L, F) float32 array."""
    if isinstance(items, WindowSet):
        return items.windows()
    x = np.asarray(items, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise LlmadError(f"expected windows of shape (N, L, F), got {x.shape}")
    return x


def check_finite(x: np.ndarray, what: str = "windows") -> np.ndarray:
    """Numeric detectors get gap-filled, normalised input; NaN/inf here is a bug upstream, so fail loudly."""
    if not np.isfinite(x).all():
        raise LlmadError(f"{what} contain {int((~np.isfinite(x)).sum())} NaN/inf values; build them with "
                         f"llmad.data.windows.make_windows (it forward-fills gaps)")
    return x


class WindowDetector(Detector):
    """Base of the numeric detectors: fit on train windows, step scores, point threshold from validation."""

    name = "window-detector"
    data_kind = "windows"  # metric windows: llmad numeric, not predict/replay/watch
    supervised = False

    # -- to implement ------------------------------------------------------------------------------------
    def _fit(self, train: WindowSet) -> None:
        raise NotImplementedError

    def score_steps(self, items: Any) -> np.ndarray:
        """(N, L) step scores, higher = more anomalous."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------------------
    def fit(self, train: WindowSet, validation: WindowSet | None = None) -> "WindowDetector":
        """Learn from ``train`` windows; choose ``threshold_`` on ``validation`` point scores."""
        if len(train) == 0 and not getattr(self, "zero_shot_ok", False):
            raise LlmadError(f"{self.name}: no training windows")
        t0 = time.perf_counter()
        self._fit(train)
        self.fit_seconds_ = time.perf_counter() - t0
        if validation is not None and len(validation):
            self.calibrate(validation)
        return self

    def calibrate(self, validation: WindowSet) -> float:
        """Set ``threshold_`` on validation point scores and labels."""
        if not validation.all_labeled():
            raise LlmadError("the validation part has no labels; cannot choose a threshold")
        s = self.score_points(validation)
        return self.set_threshold(s, validation.point_labels())

    def score(self, items: Any) -> np.ndarray:
        """One score per window: the mean of its step scores."""
        return np.asarray(self.score_steps(items)).mean(axis=1)

    def score_points(self, ws: WindowSet, how: str = "mean") -> np.ndarray:
        """One score per point of the WindowSet's series (overlapping windows averaged)."""
        pts = ws.points_from_steps(self.score_steps(ws), how=how)
        if not np.isfinite(pts).all():
            raise LlmadError(f"{self.name}: produced non-finite scores")
        return pts

    def predict_points(self, ws: WindowSet) -> np.ndarray:
        """0/1 per point from ``score_points`` and the validation threshold."""
        if self.threshold_ is None:
            raise RuntimeError(f"{type(self).__name__} has no threshold_: fit with validation data first")
        return (self.score_points(ws) >= self.threshold_).astype(int)

    def _dev(self) -> str:
        """The torch device of a torch window detector: its ``device`` parameter, else CUDA when present."""
        from llmad.models.resolve import pick_device_dtype

        return getattr(self, "device", None) or pick_device_dtype()[0]

    def _write_meta(self, path: Path, extra: dict[str, Any] | None = None) -> None:
        write_detector_json(path, self.kind, {"params": self.get_params(), "threshold": self.threshold_,
                                              **(extra or {})})

    @staticmethod
    def _read_meta(path: Path) -> dict[str, Any]:
        return read_detector_json(path)


class _SklearnWindowDetector(WindowDetector):
    """Window-feature models; the window score is broadcast over its steps."""

    def _features(self, x: np.ndarray) -> np.ndarray:
        return window_features(check_finite(x))

    def score_steps(self, items: Any) -> np.ndarray:
        x = as_windows(items)
        w = self._window_scores(x)
        return np.repeat(w[:, None], x.shape[1], axis=1)

    def _window_scores(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        """A pickle of the sklearn model + detector.json (written last: its presence means complete)."""
        from llmad.io import atomic_path

        path = Path(path)
        with atomic_path(path / "model.pkl") as tmp, open(tmp, "wb") as fh:
            pickle.dump(self.model_, fh)
        self._write_meta(path)

    @classmethod
    def load(cls, path: str | Path) -> "_SklearnWindowDetector":
        """Inverse of ``save`` (a pickle: only load your own files)."""
        meta = cls._read_meta(Path(path))
        det = cls(**meta["params"])
        with open(Path(path) / "model.pkl", "rb") as fh:
            det.model_ = pickle.load(fh)
        det.threshold_ = meta["threshold"]
        return det


class IForestDetector(_SklearnWindowDetector):
    """IsolationForest on window summary features (unsupervised)."""

    name = "iforest"
    kind = "window-iforest"

    def __init__(self, n_estimators: int = 200, seed: int = 0, max_samples: int | str = "auto"):
        self.n_estimators, self.seed, self.max_samples = n_estimators, seed, max_samples

    def _fit(self, train: WindowSet) -> None:
        self.model_ = make_estimator("iforest", n_estimators=self.n_estimators, seed=self.seed,
                                     max_samples=self.max_samples, n_jobs=1)
        self.model_.fit(self._features(as_windows(train)))

    def _window_scores(self, x: np.ndarray) -> np.ndarray:
        return -self.model_.score_samples(self._features(x))


class ForestDetector(_SklearnWindowDetector):
    """Supervised reference: random forest (``rf``) or gradient boosting (``hgb``) on window features."""

    supervised = True
    kind = "window-forest"

    def __init__(self, method: str = "rf", n_estimators: int = 200, seed: int = 0):
        if method not in ("rf", "hgb"):
            raise LlmadError(f"forest method {method!r}: expected rf or hgb")
        self.method, self.n_estimators, self.seed = method, n_estimators, seed
        self.name = method

    def _fit(self, train: WindowSet) -> None:
        if not train.all_labeled():
            raise LlmadError(f"{self.method} is supervised: its training windows need labels")
        y = train.window_labels()
        if len(np.unique(y)) < 2:
            raise LlmadError(f"{self.method} needs both normal and anomalous training windows "
                             f"(got {int(y.sum())} anomalous of {len(y)}); use more --shots")
        X = self._features(as_windows(train))
        # few-shot label pools are small and imbalanced: class-weighted (see make_estimator)
        self.model_ = make_estimator(self.method, n_estimators=self.n_estimators, seed=self.seed, n_jobs=1,
                                     balanced=True)
        fit_tree(self.model_, X, y)

    def _window_scores(self, x: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(self._features(x))[:, 1]


# ------------------------------------------------------------------------------------------ LSTM autoencoder
def torch_threads() -> None:
    """Cap torch's CPU threads at ``LLMAD_TORCH_THREADS`` when set (shared machines); no-op otherwise."""
    import os

    import torch

    n = int(os.environ.get("LLMAD_TORCH_THREADS", "0") or 0)
    if n > 0:
        torch.set_num_threads(n)


class LSTMAEDetector(WindowDetector):
    """LSTM autoencoder (encoder LSTM -> last state repeated -> decoder LSTM -> linear); step score = squared
    reconstruction error averaged over features. Trained on (normal) train windows only."""

    name = "lstm-ae"
    kind = "lstm-ae"
    # OmniTransfer's partial transfer keeps these (the encoder) from a cluster's base model
    generic_prefixes: tuple[str, ...] = ("enc.",)

    def __init__(self, hidden: int = 32, epochs: int = 5, batch_size: int = 64, lr: float = 1e-3,
                 max_steps: int = 400, seed: int = 0, device: str | None = None, warm_start: bool = False):
        self.hidden, self.epochs, self.batch_size, self.lr = hidden, epochs, batch_size, lr
        self.max_steps, self.seed, self.device, self.warm_start = max_steps, seed, device, warm_start

    def _build(self, n_features: int):
        import torch
        from torch import nn

        class _AE(nn.Module):
            def __init__(self, f: int, h: int):
                super().__init__()
                self.enc = nn.LSTM(f, h, batch_first=True)
                self.dec = nn.LSTM(h, h, batch_first=True)
                self.out = nn.Linear(h, f)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                _, (h, _) = self.enc(x)
                z = h[-1].unsqueeze(1).repeat(1, x.shape[1], 1)
                y, _ = self.dec(z)
                return self.out(y)

        return _AE(n_features, self.hidden)

    def fresh_model(self):
        """A newly initialised autoencoder for this detector's features (OmniTransfer's partial transfer)."""
        import torch

        torch.manual_seed(self.seed)
        return self._build(self.n_features_).to(self._dev())

    def _fit(self, train: WindowSet) -> None:
        import torch

        torch_threads()
        torch.manual_seed(self.seed)
        x = check_finite(as_windows(train))
        dev = self._dev()
        if self.warm_start and getattr(self, "model_", None) is not None:
            # warm start (sklearn's name; OmniTransfer sets it): keep model_, train what has requires_grad
            if x.shape[2] != self.n_features_:
                raise LlmadError(f"lstm-ae warm start: the model has {self.n_features_} features, the windows "
                                 f"{x.shape[2]}")
            self.model_.to(dev)
        else:
            self.n_features_ = x.shape[2]
            self.model_ = self._build(self.n_features_).to(dev)
        opt = torch.optim.Adam([p for p in self.model_.parameters() if p.requires_grad], lr=self.lr)
        rng = np.random.default_rng(self.seed)
        steps, self.losses_ = 0, []
        self.model_.train()
        for _ in range(self.epochs):
            for b in np.array_split(rng.permutation(len(x)), max(1, int(np.ceil(len(x) / self.batch_size)))):
                xb = torch.from_numpy(x[b]).to(dev)
                loss = torch.mean((self.model_(xb) - xb) ** 2)
                opt.zero_grad()
                loss.backward()
                opt.step()
                self.losses_.append(float(loss.detach()))
                steps += 1
                if steps >= self.max_steps:
                    break
            if steps >= self.max_steps:
                break
        self.train_steps_ = steps
        self.model_.eval()

    def score_steps(self, items: Any) -> np.ndarray:
        import torch

        x = check_finite(as_windows(items))
        dev = self._dev()
        out = []
        with torch.no_grad():
            for i in range(0, len(x), 256):
                xb = torch.from_numpy(x[i:i + 256]).to(dev)
                out.append(((self.model_(xb) - xb) ** 2).mean(-1).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, x.shape[1]))

    def save(self, path: str | Path) -> None:
        """safetensors weights + detector.json."""
        from safetensors.torch import save_file

        from llmad.io import atomic_path

        path = Path(path)
        with atomic_path(path / "model.safetensors") as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.model_.state_dict().items()}, str(tmp))
        self._write_meta(path, {"n_features": self.n_features_})

    @classmethod
    def load(cls, path: str | Path) -> "LSTMAEDetector":
        """Inverse of ``save``."""
        from safetensors.torch import load_file

        meta = cls._read_meta(Path(path))
        det = cls(**meta["params"])
        det.n_features_ = meta["n_features"]
        det.model_ = det._build(det.n_features_)
        det.model_.load_state_dict(load_file(str(Path(path) / "model.safetensors")))
        det.model_.to(det._dev()).eval()
        det.threshold_ = meta["threshold"]
        return det
