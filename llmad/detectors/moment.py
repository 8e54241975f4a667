"""MOMENT (Goswami et al., ICML'24, "MOMENT: A Family of Open Time-series Foundation Models") in reconstruction
mode as an anomaly detector: zero-shot (score = reconstruction error), a linear probe (only the reconstruction
head is trained on train windows) and LoRA (peft) on the last transformer blocks plus the head.

Where llmad differs from the paper: thresholds come from a validation part (the paper reports best-threshold
adjusted F1); windows shorter than the model's ``seq_len`` are left-padded and masked out (``input_mask``) rather
than rejected; multivariate windows are scored channel by channel (MOMENT is channel-independent) and the
squared errors averaged over channels.

Loading is always ``MOMENTPipeline.from_pretrained(<hub id or local folder>)``: ``AutonLab/MOMENT-1-large`` where
the hub is reachable, otherwise a folder written by ``save_pretrained`` (``llmad pretrain moment`` or the tests'
tiny model). momentfm 0.1.4 is installed ``--no-deps``; its model code runs on transformers 5 as is (checked).
"""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from llmad.data.windows import WindowSet
from llmad.detectors.windows import WindowDetector, as_windows, check_finite, torch_threads
from llmad.errors import LlmadError

DEFAULT_MODEL = "AutonLab/MOMENT-1-large"
FINETUNE = ("none", "probe", "lora")


def small_moment_config(seq_len: int = 512, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                        d_ff: int = 128, patch_len: int = 8) -> dict[str, Any]:
    """A MOMENT config dict (the shape of MOMENT-1-large's config.json) for a small T5 encoder built here."""
    if seq_len % patch_len:
        raise LlmadError(f"seq_len {seq_len} must be a multiple of patch_len {patch_len}")
    return {
        "task_name": "reconstruction", "model_name": "MOMENT", "transformer_type": "encoder_only",
        "d_model": d_model, "seq_len": seq_len, "patch_len": patch_len, "patch_stride_len": patch_len,
        "device": "cpu", "transformer_backbone": "google/flan-t5-small", "model_kwargs": {},
        "t5_config": {"d_model": d_model, "d_ff": d_ff, "num_layers": n_layers, "num_heads": n_heads,
                      "d_kv": max(8, d_model // n_heads), "vocab_size": 32, "feed_forward_proj": "gated-gelu",
                      "is_encoder_decoder": False, "relative_attention_num_buckets": 32,
                      "relative_attention_max_distance": 128, "dropout_rate": 0.1, "layer_norm_epsilon": 1e-6,
                      "initializer_factor": 1.0, "use_cache": False, "model_type": "t5"},
    }


def _model_kwargs(train_encoder: bool = False, train_embedder: bool = False) -> dict[str, Any]:
    # gradient checkpointing off: small batches on CPU gain nothing, and it warns in eval mode
    return {"task_name": "reconstruction", "freeze_encoder": not train_encoder,
            "freeze_embedder": not train_embedder, "freeze_head": False,
            "enable_gradient_checkpointing": False}


def build_moment(config: dict[str, Any], train_all: bool = False):
    """A freshly initialised MOMENTPipeline from a config dict (for pretraining and tests)."""
    from momentfm import MOMENTPipeline

    m = MOMENTPipeline(config=dict(config), model_kwargs=_model_kwargs(train_all, train_all))
    m.init()
    return m


def moment_location(name: str) -> str:
    """``name``, or the model folder inside it when ``name`` is an ``llmad pretrain moment`` run folder."""
    inner = Path(name).expanduser() / "model"
    return str(inner) if (inner / "config.json").is_file() and (inner.parent / "pretrain.json").is_file() else name


def load_moment(name: str, train_all: bool = False):
    """``MOMENTPipeline.from_pretrained`` on a hub id or a local folder, with a clear error when unreachable."""
    from momentfm import MOMENTPipeline

    from llmad.errors import ModelNotFoundError
    from llmad.models.resolve import resolve_model

    try:
        loc = resolve_model(moment_location(name)).location
    except ModelNotFoundError as e:
        raise ModelNotFoundError(f"{e}. For MOMENT offline, pretrain a small one with `llmad pretrain moment "
                                 f"--data ... --out DIR` and pass --model DIR") from None
    try:
        # huggingface_hub prints "Loading weights from local directory" to stdout: make it a log record, which
        # -q sends to <out>/warnings.log (llmad.rundir.quiet_warnings) and keeps stdout for results.
        with contextlib.redirect_stdout(io.StringIO()) as said:
            m = MOMENTPipeline.from_pretrained(loc, model_kwargs=_model_kwargs(train_all, train_all))
        if said.getvalue().strip():
            logging.getLogger("momentfm").warning(said.getvalue().strip())
    except Exception as e:  # wrong folder contents, incompatible config
        raise LlmadError(f"MOMENT model {name!r} could not be loaded: {type(e).__name__}: {e}") from None
    m.init()
    return m


def _masked_batches(x: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, C, L) windows -> left-padded (B, C, seq_len) and the input mask (B, seq_len)."""
    B, C, L = x.shape
    if L > seq_len:
        raise LlmadError(f"window length {L} exceeds the MOMENT model's seq_len {seq_len}; use --window {seq_len}")
    xp = np.zeros((B, C, seq_len), np.float32)
    xp[:, :, seq_len - L:] = x
    m = np.zeros((B, seq_len), np.float32)
    m[:, seq_len - L:] = 1
    return xp, m


class MomentDetector(WindowDetector):
    """MOMENT reconstruction error per step; ``finetune`` = none (zero-shot) | probe (head) | lora."""

    name = "moment"
    kind = "moment"
    zero_shot_ok = True
    # OmniTransfer's partial transfer keeps these (patch embedding + transformer encoder) from a base model
    generic_prefixes: tuple[str, ...] = ("patch_embedding.", "encoder.")

    def __init__(self, model: str = DEFAULT_MODEL, finetune: str = "none", epochs: int = 1, max_steps: int = 200,
                 batch_size: int = 64, lr: float = 1e-3, mask_ratio: float = 0.0, lora_r: int = 8,
                 lora_blocks: int = 2, seed: int = 0, device: str | None = None, score_batch: int = 512,
                 warm_start: bool = False):
        if finetune not in FINETUNE:
            raise LlmadError(f"--finetune {finetune!r}: expected one of {', '.join(FINETUNE)}")
        self.model, self.finetune, self.epochs, self.max_steps = model, finetune, epochs, max_steps
        self.batch_size, self.lr, self.mask_ratio, self.lora_r = batch_size, lr, mask_ratio, lora_r
        self.lora_blocks, self.seed, self.device, self.score_batch = lora_blocks, seed, device, score_batch
        self.warm_start = warm_start
        self.name = "moment" if finetune == "none" else f"moment-{finetune}"

    # -- model ---------------------------------------------------------------------------------------------
    def _load(self):
        import torch

        from llmad.models.resolve import pick_device_dtype

        torch_threads()
        torch.manual_seed(self.seed)
        m = load_moment(self.model)
        if self.finetune == "lora":
            self._add_lora(m)
        dev, dtype, _ = pick_device_dtype()
        self.device_ = self.device or dev
        self.amp_dtype_ = dtype if self.device_.startswith("cuda") else None
        self.model_ = m.to(self.device_)
        self.seq_len_ = int(m.config.seq_len)
        self.patch_len_ = int(m.config.patch_len)
        return m

    def _add_lora(self, m) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        n = int(m.config.t5_config["num_layers"])
        blocks = list(range(max(0, n - self.lora_blocks), n))
        cfg = LoraConfig(r=self.lora_r, lora_alpha=2 * self.lora_r, lora_dropout=0.05, target_modules=["q", "v"],
                         layers_to_transform=blocks, layers_pattern="block")
        inject_adapter_in_model(cfg, m.encoder)
        self.lora_block_ids_ = blocks

    def _trainable(self):
        """Head only (probe) or head + LoRA matrices (lora); everything else frozen."""
        for n, p in self.model_.named_parameters():
            p.requires_grad = n.startswith("head.") or (self.finetune == "lora" and "lora_" in n)
        return [p for p in self.model_.parameters() if p.requires_grad]

    def fresh_model(self):
        """The base MOMENT as loaded before any fine-tuning (OmniTransfer's partial transfer starts here)."""
        other = type(self)(**self.get_params())
        other._load()
        other._trainable()
        return other.model_

    def _autocast(self):
        import contextlib

        import torch

        if self.amp_dtype_ is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.amp_dtype_)

    # -- fit / score -----------------------------------------------------------------------------------------
    def _fit(self, train: WindowSet) -> None:
        # warm start (sklearn's name; OmniTransfer sets it): model_ is kept, only its requires_grad tensors train
        warm = self.warm_start and getattr(self, "model_", None) is not None
        if not warm:
            self._load()
        self.train_steps_ = 0
        if self.finetune == "none" or len(train) == 0:
            self.model_.eval()
            return
        x = check_finite(as_windows(train))
        params = [p for p in self.model_.parameters() if p.requires_grad] if warm else self._trainable()
        self.losses_ = train_reconstruction(self.model_, x, params=params, steps=self.max_steps,
                                            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                                            mask_ratio=self.mask_ratio, masked_loss_only=False, seed=self.seed,
                                            device=self.device_, autocast=self._autocast)
        self.train_steps_ = len(self.losses_)
        self.model_.eval()

    def score_steps(self, items: Any) -> np.ndarray:
        import torch

        x = check_finite(as_windows(items))  # (N, L, F)
        N, L, F = x.shape
        per = max(1, self.score_batch // max(F, 1))
        out = []
        self.model_.eval()
        with torch.no_grad(), self._autocast():
            for i in range(0, N, per):
                xb = np.transpose(x[i:i + per], (0, 2, 1))  # (B, F, L)
                xp, m = _masked_batches(xb, self.seq_len_)
                xt = torch.from_numpy(xp).to(self.device_)
                mt = torch.from_numpy(m).to(self.device_)
                rec = self.model_.reconstruct(x_enc=xt, input_mask=mt).reconstruction.float()
                err = ((rec - xt) ** 2)[:, :, self.seq_len_ - L:].mean(dim=1)  # (B, L)
                out.append(err.cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, L))

    def embed(self, items: Any) -> np.ndarray:
        """Mean-pooled MOMENT embeddings per window (for probes / plots)."""
        import torch

        x = check_finite(as_windows(items))
        xp, m = _masked_batches(np.transpose(x, (0, 2, 1)), self.seq_len_)
        with torch.no_grad():
            e = self.model_.embed(x_enc=torch.from_numpy(xp).to(self.device_),
                                  input_mask=torch.from_numpy(m).to(self.device_)).embeddings
        return e.float().cpu().numpy()

    # -- persistence -----------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """detector.json + the trained tensors only (head, LoRA): the base model stays where ``model`` points."""
        from safetensors.torch import save_file

        from llmad.io import atomic_path

        path = Path(path)
        if self.finetune != "none":
            sd = {n: p.detach().cpu().contiguous() for n, p in self.model_.named_parameters()
                  if n.startswith("head.") or "lora_" in n}
            with atomic_path(path / "adapter.safetensors") as tmp:
                save_file(sd, str(tmp))
        self._write_meta(path, {"seq_len": self.seq_len_, "train_steps": self.train_steps_})

    @classmethod
    def load(cls, path: str | Path) -> "MomentDetector":
        """Rebuild from the base model + saved head/LoRA tensors."""
        from safetensors.torch import load_file

        meta = cls._read_meta(Path(path))
        det = cls(**meta["params"])
        det._load()
        if det.finetune != "none":
            sd = load_file(str(Path(path) / "adapter.safetensors"))
            missing = set(sd) - {n for n, _ in det.model_.named_parameters()}
            if missing:
                raise LlmadError(f"{path}: saved tensors {sorted(missing)[:3]} do not match the model")
            det.model_.load_state_dict(sd, strict=False)
        det.model_.eval()
        det.threshold_ = meta["threshold"]
        return det


def train_reconstruction(model, x: np.ndarray, params: Sequence, steps: int = 200, epochs: int = 1,
                         batch_size: int = 64, lr: float = 1e-3, mask_ratio: float = 0.3,
                         masked_loss_only: bool = True, seed: int = 0, device: str = "cpu",
                         autocast=None, log_every: int = 0) -> list[float]:
    """Train ``params`` of a MOMENT on (window, channel) sequences drawn from ``x`` (N, L, F) by (masked)
    reconstruction MSE. ``steps`` caps the optimizer steps; ``epochs`` caps passes over the sequences."""
    import contextlib

    import torch
    from momentfm.utils.masking import Masking

    seq_len = int(model.config.seq_len)
    N, L, F = x.shape
    pairs = np.array([(i, c) for i in range(N) for c in range(F)], dtype=np.int64)
    rng = np.random.default_rng(seed)
    masker = Masking(mask_ratio=mask_ratio, patch_len=int(model.config.patch_len))
    opt = torch.optim.AdamW(list(params), lr=lr, weight_decay=1e-4)
    model.train()
    losses: list[float] = []
    ctx = autocast or contextlib.nullcontext
    for _ in range(max(1, epochs)):
        order = rng.permutation(len(pairs))
        for j in range(0, len(order), batch_size):
            b = pairs[order[j:j + batch_size]]
            seqs = x[b[:, 0], :, b[:, 1]][:, None, :]  # (B, 1, L)
            xp, m = _masked_batches(seqs, seq_len)
            xt = torch.from_numpy(xp).to(device)
            im = torch.from_numpy(m).to(device)
            mask = (masker.generate_mask(x=xt, input_mask=im).to(device).float()
                    if mask_ratio > 0 else torch.ones_like(im))
            with ctx():
                rec = model(x_enc=xt, input_mask=im, mask=mask).reconstruction.float()
            err = (rec - xt) ** 2  # (B, 1, seq_len)
            w = im * ((1 - mask) if masked_loss_only and mask_ratio > 0 else 1.0)
            loss = (err[:, 0] * w).sum() / w.sum().clamp_min(1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if log_every and len(losses) % log_every == 0:
                print(f"step {len(losses)} loss {np.mean(losses[-log_every:]):.4f}", flush=True)
            if len(losses) >= steps:
                model.eval()
                return losses
    model.eval()
    return losses


def pretrain_small_moment(windows: np.ndarray, out_dir: str | Path, config: dict[str, Any] | None = None,
                          steps: int = 300, batch_size: int = 64, lr: float = 1e-3, mask_ratio: float = 0.3,
                          seed: int = 0, log_every: int = 0) -> dict[str, Any]:
    """Self-supervised masked-reconstruction pretraining of a fresh small MOMENT; ``save_pretrained(out_dir)``."""
    import torch

    from llmad.models.resolve import pick_device_dtype

    torch_threads()
    torch.manual_seed(seed)
    config = config or small_moment_config(seq_len=windows.shape[1])
    model = build_moment(config, train_all=True)
    dev = pick_device_dtype()[0]
    model.to(dev)
    losses = train_reconstruction(model, check_finite(windows), params=list(model.parameters()), steps=steps,
                                  batch_size=batch_size, lr=lr, mask_ratio=mask_ratio, masked_loss_only=True,
                                  seed=seed, device=dev, log_every=log_every)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.to("cpu").save_pretrained(str(out))
    return {"steps": len(losses), "first_loss": losses[0] if losses else None,
            "last_loss": float(np.mean(losses[-20:])) if losses else None,
            "parameters": int(sum(p.numel() for p in model.parameters())), "config": config}
