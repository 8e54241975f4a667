"""DualLMAD (Sun et al., "Multivariate Time Series Anomaly Detection based on Pre-trained Models with Dual-Attention
Mechanism"): two pretrained language-model backbones side by side, one attending over time (patches of a window),
one over metrics (one token per channel), fused into a reconstruction of the window; step score = squared
reconstruction error averaged over channels. Two-stage fine-tuning: stage 1 on windows pooled over every entity of
a dataset (one shared model), stage 2 adapts only small output heads per entity group with everything else frozen.

Where llmad differs from the paper:
- backbone: the first ``n_layers`` decoder blocks (+ final norm) of any HF causal LM (``gpt2`` where the hub is
  reachable; offline the ``smollm2-135m`` alias, a Llama-architecture model), not GPT-2 only. Attention is
  *bidirectional*: the blocks get an all-zero additive mask, which the HF attention functions treat as "no causal
  mask". ``pretrained=False`` builds the same architecture randomly initialised (seeded) for the ablation.
- stage 1 trains the input projections, positional/channel embeddings, the backbones' norm weights and the output
  heads; attention and MLP weights stay frozen (the paper's recipe keeps most of GPT-2 frozen too; no LoRA here).
- stage 2 trains only the output heads (temporal, metric, fusion gate) of each group on backbone features computed
  once without gradients, so it costs seconds. Group = the entity id (series name before ``/``) with a trailing
  ``-<number>`` removed: SMD ``machine-1-*`` / ``machine-2-*`` / ``machine-3-*``, ASD one group (``omi``),
  Nezha one group per service. Windows of an unseen group (or plain arrays) use the stage-1 head.
- thresholds come from validation points (the paper reports best-threshold point-adjusted F1).
- ``score_reduce="max-z"`` (not in the paper): each channel's squared error is standardised by its median / IQR
  on training windows and the step score is the max over channels; the default ``mean`` averages raw errors over
  channels. On ASD the mean is dominated by channels that are noisy in normal operation, while most anomalous
  channels are reconstructed *better* during anomalies (bench/asd_auc_probe.py).

Transfer protocol (used by OmniTransfer): the torch module is ``model_``; ``generic_prefixes`` name the backbone
parameters; with ``warm_start=True`` ``_fit`` keeps a ``model_`` set by the caller (its ``requires_grad`` flags
respected); every fit optimises only parameters with ``requires_grad=True``.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import numpy as np

from llmad.data.windows import WindowSet
from llmad.detectors.windows import WindowDetector, as_windows, check_finite, torch_threads
from llmad.errors import LlmadError

DEFAULT_BACKBONE = "smollm2-135m"
BRANCHES = ("both", "temporal", "metric")
GROUP_BY = ("prefix", "entity", "none")
SCORE_REDUCE = ("mean", "max-z")


def entity_of(series_name: str) -> str:
    """The entity of a series: its name before the first ``/`` (``smd:machine-1-2/test`` -> ``smd:machine-1-2``)."""
    return str(series_name).split("/")[0]


def group_of(entity: str, group_by: str = "prefix") -> str:
    """The stage-2 group of an entity: ``prefix`` drops a trailing ``-<number>``; ``entity`` keeps it; ``none``: one."""
    if group_by == "none":
        return "all"
    if group_by == "entity":
        return entity
    return re.sub(r"-\d+$", "", entity)


def load_backbone_lm(backbone: str, n_layers: int, pretrained: bool = True, seed: int = 0):
    """A causal LM cut to its first ``n_layers`` blocks: pretrained weights (``from_pretrained``) or the same
    architecture randomly initialised (``from_config``, seeded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from llmad.models.resolve import resolve_model

    loc = resolve_model(backbone).location
    try:
        cfg = AutoConfig.from_pretrained(loc)
        total = int(cfg.num_hidden_layers)
        if not 1 <= n_layers <= total:
            raise LlmadError(f"duallmad n_layers {n_layers}: backbone {backbone!r} has {total} layers")
        cfg.num_hidden_layers = n_layers  # only the blocks used are built / loaded
        if pretrained:
            import transformers

            level = transformers.logging.get_verbosity()
            transformers.logging.set_verbosity_error()  # the dropped upper blocks are reported as unused keys
            transformers.logging.disable_progress_bar()
            try:
                return AutoModelForCausalLM.from_pretrained(loc, config=cfg, dtype=torch.float32)
            finally:
                transformers.logging.set_verbosity(level)
                transformers.logging.enable_progress_bar()
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    except LlmadError:
        raise
    except Exception as e:  # wrong folder contents, an architecture transformers does not know
        raise LlmadError(f"duallmad backbone {backbone!r} could not be loaded: {type(e).__name__}: {e}") from None


def _modules():
    """The torch modules (built lazily so importing this file does not import torch)."""
    import torch
    from torch import nn

    class Backbone(nn.Module):
        """Decoder blocks + final norm of a causal LM, run bidirectionally on given token embeddings."""

        def __init__(self, lm):
            super().__init__()
            base = lm.base_model
            self.rotary = getattr(base, "rotary_emb", None)  # Llama family: rotary positions
            self.wpe = getattr(base, "wpe", None)  # GPT-2: learned absolute positions
            blocks = getattr(base, "layers", None) or getattr(base, "h", None)
            norm = getattr(base, "norm", None) or getattr(base, "ln_f", None)
            if blocks is None or norm is None:
                raise LlmadError(f"duallmad: unsupported backbone architecture {type(base).__name__} "
                                 f"(expected Llama-like .layers/.norm or GPT-2 .h/.ln_f)")
            self.blocks = copy.deepcopy(blocks)
            self.norm = copy.deepcopy(norm)
            self.rotary = copy.deepcopy(self.rotary)
            self.wpe = copy.deepcopy(self.wpe)

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            B, T, _ = h.shape
            mask = torch.zeros(B, 1, T, T, dtype=h.dtype, device=h.device)  # additive, all visible
            pos = torch.arange(T, device=h.device)[None].expand(B, T)
            kw: dict[str, Any] = {}
            if self.rotary is not None:
                kw["position_embeddings"] = self.rotary(h, pos)
            if self.wpe is not None:
                h = h + self.wpe(pos)
            for blk in self.blocks:
                out = blk(h, attention_mask=mask, **kw)
                h = out[0] if isinstance(out, tuple) else out
            return self.norm(h)

    class Head(nn.Module):
        """Output heads of both branches and the per-channel fusion gate (the part stage 2 adapts per group)."""

        def __init__(self, d: int, L: int, F: int, P: int):
            super().__init__()
            self.t_out = nn.Linear(d, P * F)
            self.m_out = nn.Linear(d, L)
            self.gate = nn.Parameter(torch.zeros(F))

    class DualNet(nn.Module):
        """Temporal branch (patch tokens) + metric branch (channel tokens) -> fused window reconstruction."""

        def __init__(self, lm, d: int, L: int, F: int, P: int, branches: str):
            super().__init__()
            self.L, self.F, self.P, self.branches = L, F, P, branches
            if branches in ("both", "temporal"):
                self.t_in = nn.Linear(P * F, d)
                self.t_pos = nn.Parameter(torch.zeros(L // P, d))
                self.backbone_t = Backbone(lm)
            if branches in ("both", "metric"):
                self.m_in = nn.Linear(L, d)
                self.m_chan = nn.Parameter(torch.zeros(F, d))
                self.backbone_m = Backbone(lm)
            self.heads = nn.ModuleList([Head(d, L, F, P)])

        def features(self, x: torch.Tensor):
            """Instance-normalised window -> (temporal tokens, metric tokens, mean, std)."""
            mu = x.mean(dim=1, keepdim=True)
            sd = x.std(dim=1, keepdim=True, unbiased=False) + 1e-3
            xn = (x - mu) / sd
            B, L, F = xn.shape
            ht = hm = None
            if self.branches in ("both", "temporal"):
                patches = xn.reshape(B, L // self.P, self.P * F)
                ht = self.backbone_t(self.t_in(patches) + self.t_pos)
            if self.branches in ("both", "metric"):
                hm = self.backbone_m(self.m_in(xn.transpose(1, 2)) + self.m_chan)
            return ht, hm, mu, sd

        def reconstruct(self, feats, k: int = 0, normalised: bool = False) -> torch.Tensor:
            """(B, L, F) reconstruction with head ``k`` (in input scale unless ``normalised``)."""
            ht, hm, mu, sd = feats
            head = self.heads[k]
            parts = []
            if ht is not None:
                parts.append(head.t_out(ht).reshape(ht.shape[0], self.L, self.F))
            if hm is not None:
                parts.append(head.m_out(hm).transpose(1, 2))
            if len(parts) == 2:
                g = torch.sigmoid(head.gate)
                rec = g * parts[0] + (1 - g) * parts[1]
            else:
                rec = parts[0]
            return rec if normalised else rec * sd + mu

        def forward(self, x: torch.Tensor, k: int = 0) -> torch.Tensor:
            return self.reconstruct(self.features(x), k)

    return Backbone, Head, DualNet


class DualLMADDetector(WindowDetector):
    """Dual-attention LM reconstruction detector; one model shared by every entity, per-group heads (stage 2)."""

    name = "duallmad"
    kind = "duallmad"
    generic_prefixes: tuple[str, ...] = ("backbone_t.", "backbone_m.")

    def __init__(self, backbone: str = DEFAULT_BACKBONE, n_layers: int = 2, branches: str = "both",
                 pretrained: bool = True, stage2: bool = True, patch: int = 8, steps: int = 200,
                 stage2_steps: int = 60, batch_size: int = 32, lr: float = 1e-3, stage2_lr: float = 3e-3,
                 group_by: str = "prefix", stage2_windows: int = 512, score_reduce: str = "mean", seed: int = 0,
                 device: str | None = None, warm_start: bool = False):
        if branches not in BRANCHES:
            raise LlmadError(f"duallmad branches {branches!r}: expected one of {', '.join(BRANCHES)}")
        if group_by not in GROUP_BY:
            raise LlmadError(f"duallmad group_by {group_by!r}: expected one of {', '.join(GROUP_BY)}")
        if score_reduce not in SCORE_REDUCE:
            raise LlmadError(f"duallmad score_reduce {score_reduce!r}: expected one of {', '.join(SCORE_REDUCE)}")
        self.backbone, self.n_layers, self.branches, self.pretrained = backbone, n_layers, branches, pretrained
        self.stage2, self.patch, self.steps, self.stage2_steps = stage2, patch, steps, stage2_steps
        self.batch_size, self.lr, self.stage2_lr, self.group_by = batch_size, lr, stage2_lr, group_by
        self.stage2_windows, self.score_reduce, self.seed, self.device = stage2_windows, score_reduce, seed, device
        self.warm_start = warm_start
        self.name = "duallmad" + ("" if branches == "both" else f"-{branches}") + \
            ("" if stage2 else "-nostage2") + ("" if pretrained else "-randominit") + \
            ("" if score_reduce == "mean" else f"-{score_reduce}")

    # -- model ---------------------------------------------------------------------------------------------
    def _build(self, L: int, F: int, pretrained: bool):
        """A fresh DualNet for windows of ``L`` steps and ``F`` channels."""
        import torch

        if L % self.patch:
            raise LlmadError(f"duallmad: window length {L} is not a multiple of patch {self.patch}; "
                             f"use --window {L - L % self.patch or self.patch} or another patch")
        lm = load_backbone_lm(self.backbone, self.n_layers, pretrained=pretrained, seed=self.seed)
        d = int(getattr(lm.config, "hidden_size", None) or lm.config.n_embd)
        torch.manual_seed(self.seed)
        net = _modules()[2](lm, d, L, F, self.patch, self.branches)
        self.hidden_size_ = d
        return net

    def _freeze_backbones(self) -> None:
        """Stage 1 (the paper's recipe): backbone attention/MLP frozen, norms and everything outside trainable."""
        for n, p in self.model_.named_parameters():
            in_backbone = n.startswith(self.generic_prefixes)
            p.requires_grad = (not in_backbone) or ("norm" in n or ".ln_" in n)

    def _window_groups(self, items: Any, n: int) -> np.ndarray:
        """Head index per window: its entity group's stage-2 head, else 0 (the stage-1 head)."""
        out = np.zeros(n, dtype=np.int64)
        groups = getattr(self, "groups_", {}) or {}
        if isinstance(items, WindowSet) and groups:
            heads = np.array([groups.get(group_of(entity_of(nm), self.group_by), 0) for nm in items.names])
            out = heads[items.index[:, 0]] if len(items) else out
        return out

    # -- fit ------------------------------------------------------------------------------------------------
    def _fit(self, train: WindowSet) -> None:
        import torch

        torch_threads()
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        if isinstance(train, WindowSet):
            L, F, n = train.length, train.n_features, len(train)
            batch = train.windows
        else:
            arr = check_finite(as_windows(train))
            (n, L, F), batch = arr.shape, (lambda rows: arr[rows])
        dev = self._dev()
        if not self.warm_start or getattr(self, "model_", None) is None:
            self.model_ = self._build(L, F, self.pretrained).to(dev)
            self._freeze_backbones()
        elif (self.model_.L, self.model_.F) != (L, F):
            raise LlmadError(f"duallmad warm start: the given model takes windows of {self.model_.L}x{self.model_.F}, "
                             f"the training windows are {L}x{F}")
        else:
            self.model_.to(dev)
            self.hidden_size_ = int(self.model_.heads[0].m_out.in_features)
            del self.model_.heads[1:]  # group heads of an earlier fit belong to its groups
        self.n_features_, self.length_ = F, L
        self.groups_: dict[str, int] = {}
        params = [p for p in self.model_.parameters() if p.requires_grad]
        self.trainable_parameters_ = int(sum(p.numel() for p in params))
        self.losses_ = self._train(params, lambda: batch(np.sort(rng.choice(n, min(self.batch_size, n),
                                                                           replace=False))),
                                   self.steps, self.lr, dev) if params and n else []
        self.stage2_losses_: dict[str, list[float]] = {}
        if self.stage2 and isinstance(train, WindowSet) and n:
            self._stage2(train, rng, dev)
        # every optimizer step of this fit, stage 2 included (what a transfer's cost counts)
        self.train_steps_ = len(self.losses_) + sum(len(v) for v in self.stage2_losses_.values())
        self.model_.eval()
        self.channel_stats_ = None
        if self.score_reduce == "max-z" and n:
            rows = np.sort(rng.choice(n, min(n, self.stage2_windows), replace=False))
            sub = train.subset(rows) if isinstance(train, WindowSet) else batch(rows)
            err = self._channel_errors(sub).reshape(-1, F)
            med = np.median(err, axis=0)
            iqr = np.percentile(err, 75, axis=0) - np.percentile(err, 25, axis=0)
            self.channel_stats_ = [med.tolist(), np.maximum(iqr, 1e-6).tolist()]

    def _train(self, params, next_batch, steps: int, lr: float, dev: str, k: int = 0) -> list[float]:
        """Adam on the normalised reconstruction MSE of head ``k`` for ``steps`` batches."""
        import torch

        opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
        self.model_.train()
        losses = []
        for _ in range(steps):
            xb = torch.from_numpy(check_finite(np.asarray(next_batch(), np.float32))).to(dev)
            feats = self.model_.features(xb)
            xn = (xb - feats[2]) / feats[3]
            loss = torch.mean((self.model_.reconstruct(feats, k, normalised=True) - xn) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        self.model_.eval()
        return losses

    def _stage2(self, train: WindowSet, rng: np.random.Generator, dev: str) -> None:
        """Per group: a copy of the stage-1 head trained on frozen backbone features of that group's windows."""
        import torch

        groups = np.array([group_of(entity_of(nm), self.group_by) for nm in train.names])[train.index[:, 0]]
        for g in sorted(set(groups)):
            rows = np.flatnonzero(groups == g)
            rows = np.sort(rng.choice(rows, min(len(rows), self.stage2_windows), replace=False))
            with torch.no_grad():
                xs = torch.from_numpy(train.windows(rows)).to(dev)
                feats = [self.model_.features(xs[i:i + 256]) for i in range(0, len(xs), 256)]
                feats = tuple(None if f[0] is None else torch.cat(f) for f in zip(*feats))
                xn = (xs - feats[2]) / feats[3]
            head = copy.deepcopy(self.model_.heads[0])
            for p in head.parameters():
                p.requires_grad = True
            self.model_.heads.append(head)
            k = len(self.model_.heads) - 1
            opt = torch.optim.AdamW(head.parameters(), lr=self.stage2_lr, weight_decay=1e-4)
            losses = []
            for _ in range(self.stage2_steps):
                b = torch.from_numpy(rng.choice(len(rows), min(self.batch_size, len(rows)), replace=False)).to(dev)
                fb = tuple(None if f is None else f[b] for f in feats)
                loss = torch.mean((self.model_.reconstruct(fb, k, normalised=True) - xn[b]) ** 2)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
            self.groups_[str(g)] = k
            self.stage2_losses_[str(g)] = losses

    # -- score ----------------------------------------------------------------------------------------------
    def _channel_errors(self, items: Any) -> np.ndarray:
        """(N, L, F) squared reconstruction errors, each window through its group's head."""
        import torch

        x = check_finite(as_windows(items))
        heads = self._window_groups(items, len(x))
        dev = self._dev()
        out = np.zeros(x.shape, dtype=np.float32)
        self.model_.eval()
        with torch.no_grad():
            for k in np.unique(heads):
                rows = np.flatnonzero(heads == k)
                for i in range(0, len(rows), 128):
                    r = rows[i:i + 128]
                    xb = torch.from_numpy(x[r]).to(dev)
                    out[r] = ((self.model_(xb, int(k)) - xb) ** 2).float().cpu().numpy()
        return out

    def score_steps(self, items: Any) -> np.ndarray:
        err = self._channel_errors(items)
        stats = getattr(self, "channel_stats_", None)
        if self.score_reduce == "max-z" and stats is not None:
            return ((err - np.asarray(stats[0], np.float32)) / np.asarray(stats[1], np.float32)).max(-1)
        return err.mean(-1)

    # -- persistence ----------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """safetensors of the whole module (backbone copies included) + detector.json (groups, shapes)."""
        from safetensors.torch import save_file

        from llmad.io import atomic_path

        path = Path(path)
        sd = {k: v.detach().cpu().contiguous() for k, v in self.model_.state_dict().items()}
        with atomic_path(path / "model.safetensors") as tmp:
            save_file(sd, str(tmp))
        self._write_meta(path, {"n_features": self.n_features_, "length": self.length_, "groups": self.groups_,
                                "heads": len(self.model_.heads),
                                "channel_stats": getattr(self, "channel_stats_", None)})

    @classmethod
    def load(cls, path: str | Path) -> "DualLMADDetector":
        """Inverse of ``save``: the architecture from the backbone's config, every tensor from the file."""
        from safetensors.torch import load_file

        meta = cls._read_meta(Path(path))
        det = cls(**meta["params"])
        det.n_features_, det.length_ = meta["n_features"], meta["length"]
        det.model_ = det._build(det.length_, det.n_features_, pretrained=False)
        for _ in range(int(meta["heads"]) - 1):
            det.model_.heads.append(copy.deepcopy(det.model_.heads[0]))
        det.model_.load_state_dict(load_file(str(Path(path) / "model.safetensors")))
        det.model_.to(det._dev()).eval()
        det.groups_ = {str(k): int(v) for k, v in meta["groups"].items()}
        det.channel_stats_ = meta.get("channel_stats")
        det.threshold_ = meta["threshold"]
        return det
