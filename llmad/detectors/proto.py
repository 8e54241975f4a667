"""A meta-learned detector that adapts to an unseen workflow in seconds (``llmad adapt --methods proto``).

From the paper: FLASH (Qiu et al., "On the Promise and Challenges of Foundation Models for Cloud Systems
Management", NeurIPS'23 ML for Systems) adapts to a new application by pairing embeddings instead of retraining.
Here a new environment is a workflow the model has not seen, and adaptation does not train the network again:

- every job becomes ``x = [frozen encoder embedding of its sentence, robust z-scores of its numeric + peer-context
  features]``; the z-scores use the median/IQR of the workflow's own *unlabeled* jobs, so "slow" means slow for
  that workflow (the workflow's fingerprint, part 1);
- a small network ``head(g(x) - c)`` is trained episodically across the source workflows: each episode draws one
  workflow, takes ``c`` = the mean projection of some of its jobs (labels unused: part 2 of the fingerprint, what
  normal looks like there) and is scored on other jobs of that workflow. So the network learns what anomalous
  looks like *relative to a workflow's own jobs*, which is what transfers to a workflow it never saw;
- pairing with a target (``adapt``): scales and ``c`` from its unlabeled jobs give the network's prior score; a
  gradient-boosted tree then reads ``[z-scores, prior]`` of the source jobs (their prior cross-fitted: from a
  network that never saw that workflow) together with the target's labeled support jobs, weighted up by
  ``support_weight``; it is fitted in about a second. With no support (k = 0) it is the source jobs alone: what
  anomalous looks like in standardized terms carries over, and every labeled target job moves it toward the target.
  Pooling matters because a support of k runs shows at most k of the anomaly kinds (one per Flow-Bench run), while
  the sources show all of them (``bench/results/adapt.md``: the F1 gap from k = 2 runs to the full target);
- the threshold needs no validation labels: the top ``rate`` of the unlabeled jobs' scores, ``rate`` being the
  support's anomaly share shrunk toward the source workflows' share (``threshold_rule_ = "rate"``).

Where llmad differs from FLASH: FLASH pairs an application's embedding with stored configurations; here the pairing
is the centring and scaling on the workflow's own jobs, and the support's labels refine it without training the
network again. A saved detector keeps the source jobs' standardized features (not their text) so that it can be
paired with another workflow; its tree is a pickle: load only files you wrote yourself.
"""
from __future__ import annotations

import json
import pickle
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from llmad.data.context import CONTEXT_FEATURES
from llmad.data.flowbench import PAPER_FEATURES
from llmad.detectors.base import Detector, read_detector_json, write_detector_json
from llmad.errors import LlmadError

CLIP = 8.0  # robust z-scores beyond this carry no more information and would dominate the projection


def signed_log(x: np.ndarray) -> np.ndarray:
    """sign(x) * log1p(|x|): delays and byte counts span orders of magnitude."""
    return np.sign(x) * np.log1p(np.abs(x))


def robust_stats(x: np.ndarray) -> dict[str, list[float]]:
    """Per-column median and IQR (NaN-aware; a constant or empty column gets scale 1)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column (no transfers at all) is expected
        if len(x):
            med = np.nanmedian(x, axis=0)
            iqr = np.nanpercentile(x, 75, axis=0) - np.nanpercentile(x, 25, axis=0)
        else:
            med, iqr = np.zeros(x.shape[1]), np.ones(x.shape[1])
    med = np.where(np.isfinite(med), med, 0.0)
    iqr = np.where(np.isfinite(iqr) & (iqr > 1e-6), iqr, 1.0)
    return {"median": med.tolist(), "iqr": iqr.tolist()}


def standardize(x: np.ndarray, stats: dict[str, list[float]]) -> np.ndarray:
    """Robust z-scores, clipped; missing values (a stage that did not happen) become 0 = typical."""
    z = (x - np.asarray(stats["median"])) / np.asarray(stats["iqr"])
    return np.clip(np.nan_to_num(z, nan=0.0, posinf=CLIP, neginf=-CLIP), -CLIP, CLIP).astype(np.float32)


def shrunk_rate(labeled: pd.DataFrame | None, prior: float, weight: float = 20.0) -> float:
    """The labeled jobs' anomaly share, averaged over their runs and shrunk toward ``prior`` as if ``weight`` runs
    at ``prior`` had been seen too (jobs without ``run_id``: one run)."""
    if labeled is None or len(labeled) == 0:
        return float(prior)
    # Counted in runs, not jobs: the share varies by run far more than by job (a third of Flow-Bench runs have no
    # anomaly, the others one anomalous node), so 200 jobs of 2 runs are 2 observations of it. Counted in jobs
    # (200 prior jobs), the k = 1-2 thresholds followed the support's runs and lost 0.01-0.04 F1 on the
    # development draws (seeds 1 and 2 of bench/adapt.py; the bench reports seed 0).
    runs = labeled["run_id"].astype(str).to_numpy() if "run_id" in labeled.columns else np.zeros(len(labeled))
    shares = labeled["label"].astype(float).groupby(runs).mean()
    return float((shares.sum() + prior * weight) / (len(shares) + weight))


def rate_threshold(scores: np.ndarray, rate: float) -> float:
    """The score above which the top ``rate`` share of ``scores`` lies (label-free)."""
    if len(scores) == 0:
        return 0.0
    return float(np.quantile(np.asarray(scores, dtype=float), 1.0 - min(max(rate, 1e-3), 0.999)))


class WeightedBins(TransformerMixin, BaseEstimator):
    """Codes each column by the bin a HistGradientBoosting estimator draws for it under ``sample_weight``.

    HGB's rule (sklearn 1.9, ``_find_binning_thresholds``): up to ``max_bins`` distinct values split at their
    midpoints, else at the weighted averaged-inverted-CDF quantiles of ``max_bins - 1`` levels; x <= t goes to the
    lower bin. HGB computes those quantiles one sort per level; here one sort serves them all. Fed the codes and the
    same weights, HGB fits the same trees (``tests/detectors/test_proto.py``)."""

    def __init__(self, max_bins: int = 255):
        self.max_bins = max_bins

    def fit(self, X, y=None, sample_weight=None) -> "WeightedBins":
        """Per column, the thresholds between bins."""
        X = np.asarray(X, dtype=np.float64)
        w = np.ones(len(X)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        levels = np.linspace(0, 1, self.max_bins + 1)[1:-1]
        self.thresholds_ = []
        for col in X.T:
            order = np.argsort(col, kind="stable")
            a = col[order]
            distinct = np.unique(a)
            if len(distinct) <= self.max_bins:
                t = (distinct[:-1] + distinct[1:]) / 2
            else:
                cdf = np.cumsum(w[order])
                r = levels * cdf[-1]
                i = np.clip(np.searchsorted(cdf, r), 0, len(a) - 1)
                on_point = cdf[i] - r <= np.finfo(np.float64).eps  # a level on a value: averaged with the next
                t = np.unique(np.where(on_point, (a[i] + a[np.minimum(i + 1, len(a) - 1)]) / 2, a[i]))
            self.thresholds_.append(t)
        return self

    def transform(self, X) -> np.ndarray:
        """Bin codes 0..max_bins-1 per column."""
        X = np.asarray(X, dtype=np.float64)
        return np.column_stack([np.searchsorted(t, X[:, j], side="left")
                                for j, t in enumerate(self.thresholds_)]).astype(np.float64)


class ProtoDetector(Detector):
    """Meta-trained on source workflows (``fit``), adapted to a target workflow without gradients (``adapt``)."""

    kind = "proto"

    def __init__(self, encoder: str = "minilm", template: str = "compact", hidden: int = 128, dim: int = 64,
                 episodes: int = 300, episode_jobs: int = 256, lr: float = 3e-3, support_weight: float = 3.0,
                 n_estimators: int = 200, seed: int = 0, batch_size: int = 128):
        self.encoder, self.template, self.hidden, self.dim = encoder, template, hidden, dim
        self.episodes, self.episode_jobs, self.lr = episodes, episode_jobs, lr
        self.support_weight, self.n_estimators = support_weight, n_estimators
        self.seed, self.batch_size = seed, batch_size
        self.name = f"proto-{Path(str(encoder)).name}"

    # ------------------------------------------------------------------ features
    def _encoder(self):
        if getattr(self, "_enc", None) is None:
            from transformers import AutoModel, AutoTokenizer

            from llmad.models.resolve import pick_device_dtype, resolve_model

            loc = resolve_model(self.encoder).location
            self._dev = pick_device_dtype()[0]
            self._enc = (AutoTokenizer.from_pretrained(loc), AutoModel.from_pretrained(loc).to(self._dev).eval())
        return self._enc

    def embed(self, jobs: pd.DataFrame) -> np.ndarray:
        """Mean-pooled frozen-encoder embeddings of the jobs' sentences."""
        from llmad.detectors.sft.batching import encode, mean_pooled
        from llmad.render import render_jobs

        tok, model = self._encoder()
        if len(jobs) == 0:
            return np.zeros((0, model.config.hidden_size), dtype=np.float32)
        # a sentence is embedded once: the compact template rounds, so a workflow's jobs repeat (339-591 distinct
        # sentences in 600 jobs of the ten shipped workflows)
        texts, inverse = np.unique(np.asarray(render_jobs(jobs, self.template), dtype=object), return_inverse=True)
        ids = encode(tok, [str(t) for t in texts], 128)
        order = np.argsort([len(i) for i in ids])  # length-sorted batches pad little
        emb = mean_pooled(model, [ids[i] for i in order], tok.pad_token_id, self.batch_size, self._dev)
        out = np.empty_like(emb)
        out[order] = emb
        return out[inverse.ravel()].astype(np.float32)

    def numeric(self, jobs: pd.DataFrame) -> np.ndarray:
        """Signed-log numeric + peer-context features (context computed per run when missing)."""
        from llmad.detectors.baselines import feature_matrix

        return signed_log(feature_matrix(jobs, "context"))

    def features(self, jobs: pd.DataFrame, stats: dict[str, list[float]], emb: np.ndarray | None = None) -> np.ndarray:
        """The network's input: embeddings (``emb`` when already computed) beside the numeric features standardized
        by ``stats``."""
        emb = self.embed(jobs) if emb is None else emb
        return np.concatenate([emb, standardize(self.numeric(jobs), stats)], axis=1)

    # ------------------------------------------------------------------ network
    def _build(self, n_in: int):
        import torch
        from torch import nn

        torch.manual_seed(self.seed)

        class Net(nn.Module):
            def __init__(self, n: int, h: int, d: int):
                super().__init__()
                # dropout: 9 source workflows of a few hundred jobs each are memorised otherwise
                self.g = nn.Sequential(nn.Dropout(0.1), nn.Linear(n, h), nn.GELU(), nn.Dropout(0.1), nn.Linear(h, d))
                self.head = nn.Linear(d, 1)

            def logits(self, x, centre):
                return self.head(self.g(x) - centre).squeeze(-1)

        return Net(n_in, self.hidden, self.dim)

    def _episode_loss(self, net, x, y, rng):
        """One episode on one workflow: centre on some of its jobs (labels unused), loss on other jobs."""
        import torch

        n, m = len(x), self.episode_jobs
        perm = torch.from_numpy(rng.permutation(n))
        centre = net.g(x[perm[:m]]).mean(0)
        q = perm[m:2 * m] if n > m else perm
        yq = y[q]
        pos = float(yq.mean().clamp(1e-3, 1 - 1e-3))
        w = torch.where(yq > 0, 0.5 / pos, 0.5 / (1 - pos))  # balanced: workflows differ in anomaly share
        return torch.nn.functional.binary_cross_entropy_with_logits(net.logits(x[q], centre), yq, weight=w)

    def _train_net(self, data: list) -> Any:
        """Episodic training on ``data`` = [(features, labels)] per workflow."""
        import torch

        net = self._build(data[0][0].shape[1])
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=1e-3)
        rng = np.random.default_rng(self.seed)
        for _ in range(self.episodes):
            x, y = data[int(rng.integers(len(data)))]
            loss = self._episode_loss(net, x, y, rng)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return net.eval()

    @staticmethod
    def _logits(net: Any, x: np.ndarray, centre: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return net.logits(torch.from_numpy(x), torch.as_tensor(centre, dtype=torch.float32)).numpy()

    @staticmethod
    def _centre(net: Any, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return net.g(torch.from_numpy(x)).mean(0).numpy()

    # ------------------------------------------------------------------ contract
    def fit(self, train: pd.DataFrame, validation: pd.DataFrame | None = None) -> "ProtoDetector":
        """Meta-train on labeled jobs of >= 2 source workflows (``workflow``, ``run_id``, ``label`` columns)."""
        import torch

        for col in ("workflow", "run_id", "label"):
            if col not in train.columns:
                raise LlmadError(f"proto fit: the source table has no {col!r} column")
        groups = [(w, g) for w, g in train.groupby("workflow", sort=True)]
        if len(groups) < 2:
            raise LlmadError(f"proto fit: meta-training needs >= 2 source workflows, got {len(groups)}")
        t0 = time.perf_counter()
        data = []
        for _, g in groups:
            stats = robust_stats(self.numeric(g))
            x = self.features(g, stats)
            data.append((torch.from_numpy(x), torch.from_numpy(g["label"].to_numpy(np.float32))))
        self.embed_s_ = time.perf_counter() - t0
        self.net_ = self._train_net(data)
        self.n_in_ = int(data[0][0].shape[1])
        # Cross-fitted prior of every source job (a network that never saw its workflow, centred on that
        # workflow's jobs), so the tree learns how far to trust the prior on a workflow the network did not see.
        priors = []
        for i, (x, _) in enumerate(data):
            net = self._train_net([d for j, d in enumerate(data) if j != i])
            priors.append(self._logits(net, x.numpy(), self._centre(net, x.numpy())))
        n_num = len(stats["median"])  # the standardized numbers end every row of x
        self.source_ = {"x": np.concatenate([x.numpy()[:, -n_num:] for x, _ in data]),
                        "prior": np.concatenate(priors).astype(np.float32),
                        "y": np.concatenate([y.numpy() for _, y in data]).astype(np.int64)}
        self.source_rate_ = float(np.mean([float(d[1].mean()) for d in data]))
        self.source_workflows_ = [str(w) for w, _ in groups]
        self.fit_seconds_ = time.perf_counter() - t0
        if validation is not None and len(validation):
            # The contract's threshold: pair with the validation jobs (label-free), then the validation-F1 one.
            self.adapt(validation)
            if "label" in validation.columns and validation["label"].notna().all():
                self.set_threshold(self.score(validation), validation["label"].to_numpy())
                self.threshold_rule_ = "validation"
        return self

    def adapt(self, unlabeled: pd.DataFrame, support: pd.DataFrame | None = None) -> "ProtoDetector":
        """Pair with a target workflow: its unlabeled jobs (scales, centre, threshold) and labeled ``support``."""
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.utils.class_weight import compute_sample_weight

        from llmad.detectors.baselines import fit_tree

        if getattr(self, "net_", None) is None:
            raise RuntimeError("ProtoDetector.adapt: fit() or load() first")
        if len(unlabeled) == 0:
            raise LlmadError("proto adapt: no unlabeled target jobs to pair with")
        t0 = time.perf_counter()
        support = support if support is not None else unlabeled.iloc[:0]
        self.stats_ = robust_stats(self.numeric(unlabeled))
        # one embedding pass: a job both unlabeled and in the support (its labeled copy) is embedded once
        emb = self.embed(pd.concat([unlabeled, support], ignore_index=True))
        xu = self.features(unlabeled, self.stats_, emb[:len(unlabeled)])
        self.centre_ = self._centre(self.net_, xu).tolist()
        src = self.source_
        x, y = np.c_[src["x"], src["prior"]], src["y"]
        w = np.ones(len(y))
        n_sup = 0
        if len(support):
            ys = support["label"].to_numpy().astype(np.int64)
            n_sup = len(ys)
            x = np.r_[x, self._tree_x(self.features(support, self.stats_, emb[len(unlabeled):]))]
            y, w = np.r_[y, ys], np.r_[w, np.full(n_sup, float(self.support_weight))]
        # WeightedBins codes x into the very bins HGB would draw under these weights (the same trees), in one sort
        # per feature: HGB's own weighted binning takes 254 sorts per feature (2-3 s of a 3.5 s fit here).
        self.tree_ = make_pipeline(
            WeightedBins(), HistGradientBoostingClassifier(max_iter=self.n_estimators, learning_rate=0.05,
                                                           class_weight="balanced", random_state=self.seed))
        fit_tree(self.tree_, x, y, weightedbins__sample_weight=w * compute_sample_weight("balanced", y),
                 histgradientboostingclassifier__sample_weight=w)
        self.rate_ = shrunk_rate(support, self.source_rate_)
        self.threshold_ = rate_threshold(self._score_x(xu), self.rate_)
        self.threshold_rule_ = "rate"
        self.support_jobs_ = n_sup
        self.adapt_seconds_ = time.perf_counter() - t0
        return self

    def _tree_x(self, x: np.ndarray) -> np.ndarray:
        # the numeric z-scores and the network's prior: the embedding's 384 dims would drown them in the tree
        return np.c_[x[:, -len(self.stats_["median"]):], self._logits(self.net_, x, np.asarray(self.centre_))]

    def _score_x(self, x: np.ndarray) -> np.ndarray:
        return self.tree_.predict_proba(self._tree_x(x))[:, 1]

    def score(self, items: pd.DataFrame) -> np.ndarray:
        """Anomaly score per job (higher = more anomalous), relative to the adapted workflow."""
        if getattr(self, "centre_", None) is None:
            raise RuntimeError("ProtoDetector.score: adapt() to a workflow first (fit with validation does it)")
        if len(items) == 0:
            return np.zeros(0)
        return self._score_x(self.features(items, self.stats_))

    def input_columns(self) -> list[str]:
        """The columns the score depends on (a replay reveals exactly these)."""
        return list(PAPER_FEATURES) + list(CONTEXT_FEATURES)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """The network as safetensors, the source features as npz, the tree as a pickle, the pairing as JSON."""
        from safetensors.torch import save_file

        from llmad.io import atomic_dir

        if getattr(self, "net_", None) is None:
            raise RuntimeError("ProtoDetector.save: fit() or load() first")
        with atomic_dir(path) as tmp:
            save_file({k: v.contiguous() for k, v in self.net_.state_dict().items()}, str(tmp / "model.safetensors"))
            np.savez(tmp / "source.npz", **self.source_)
            if getattr(self, "tree_", None) is not None:
                with open(tmp / "tree.pkl", "wb") as fh:
                    pickle.dump(self.tree_, fh)
            state = {k: getattr(self, k, None) for k in ("n_in_", "source_rate_", "source_workflows_", "stats_",
                                                          "centre_", "rate_", "threshold_", "threshold_rule_",
                                                          "support_jobs_")}
            write_detector_json(tmp, self.kind, {"params": self.get_params(), "state": state})

    @classmethod
    def load(cls, path: str | Path) -> "ProtoDetector":
        """Load a detector written by ``save``: scores equal the saved object's."""
        from safetensors.torch import load_file

        p = Path(path)
        meta = read_detector_json(p)
        try:
            det = cls(**meta["params"])
            for k, v in meta["state"].items():
                setattr(det, k, v)
            net = det._build(int(det.n_in_))
            net.load_state_dict(load_file(str(p / "model.safetensors")))
            with np.load(p / "source.npz") as z:
                det.source_ = {k: z[k] for k in ("x", "prior", "y")}
        except (KeyError, TypeError, RuntimeError, OSError, json.JSONDecodeError) as e:
            raise LlmadError(f"{p}: not a loadable proto detector ({type(e).__name__}: {e})") from None
        det.net_ = net.eval()
        det.tree_ = None
        if (p / "tree.pkl").is_file():
            with open(p / "tree.pkl", "rb") as fh:
                det.tree_ = pickle.load(fh)
        return det


__all__ = ["ProtoDetector", "WeightedBins", "robust_stats", "standardize", "shrunk_rate", "rate_threshold",
           "signed_log"]
