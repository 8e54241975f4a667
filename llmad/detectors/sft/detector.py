"""Supervised fine-tuning of an encoder classifier on rendered job sentences (``llmad sft``).

From the paper: LLM_AD (Jin et al., SC'24, demo/sft.py) fine-tunes BERT-family models with HF ``Trainer`` defaults on
the ``paper`` sentence (``wms_delay is 6.0 queue_delay is ...``: ~92 WordPiece tokens), 3 epochs, lr 5e-5, batch 8,
threshold = argmax. Where llmad differs, and why it is faster at the same accuracy:
- the ``compact`` / ``context`` templates say the same facts in ~30 tokens (numbers rounded, names shortened), and
  attention cost grows with length; ``max_length`` truncates the rare long one;
- batches of 32 grouped by length (little padding), word embeddings frozen (the largest tensor never needs an
  optimizer update), early stopping on validation, a slightly higher learning rate;
- scoring sorts jobs by token length and runs large batches under ``torch.inference_mode``;
- the decision threshold is chosen on validation (F1 by default), never on test.

Everything is seeded, checkpointed during training (``resume=True`` continues after a kill), saved as safetensors
with a JSON config so that ``SFTDetector.load(dir).score(jobs)`` gives exactly the scores of the fitted object.

The pieces: ``config`` (SFTConfig), ``model`` (load, freeze, LoRA, model folders), ``batching`` (token ids, padded
batches, softmax), ``training`` (Trainer arguments, loss, checkpoints), ``debias`` (the paper's bias measure on
content-free inputs and the ``debias_augment`` rows), ``fast`` (faster scoring backends).
"""
from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from llmad.detectors.base import Detector, read_detector_json, write_detector_json
from llmad.detectors.sft.batching import EncodedDataset, encode, encode_auto, mean_pooled, score_ids
from llmad.detectors.sft.config import FREEZE_HELP, SFTConfig, parse_freeze
from llmad.detectors.sft.debias import bias_record, content_free_texts, debias_rows, score_with
from llmad.detectors.sft.model import (LABEL_NAMES, apply_freeze, is_sft_dir, load_model_dir, prepare_model,
                                       save_model_dir, unwrap_trained)
from llmad.detectors.sft.training import (check_config, is_main_process, latest_checkpoint, train_model,
                                          training_rows, validation_rows)
from llmad.errors import LlmadError

FORMAT_VERSION = 1


class SFTDetector(Detector):
    """An encoder + classification head fine-tuned on rendered jobs; ``score`` = P(anomalous)."""

    name = "sft"
    kind = "sft"

    def __init__(self, config: SFTConfig | None = None, **overrides: Any):
        from llmad.config import merge

        self.config = merge(config or SFTConfig(), overrides) if overrides else (config or SFTConfig())
        self.name = f"sft-{Path(str(self.config.model)).name}-{Path(self.config.template).stem}"

    # ------------------------------------------------------------------ data
    def render(self, jobs: pd.DataFrame) -> list[str]:
        """Job sentences under this detector's template."""
        from llmad.render import render_jobs

        # A jobs: table's own feature columns (learned at fit, saved): frames rebuilt by a replay carry no attrs.
        return render_jobs(jobs, self.template_ref(), causal=self.config.causal,
                           features=getattr(self, "features_", None))

    def input_columns(self) -> list[str] | None:
        """Columns a built-in template reads for a jobs: table's own features (None: the stream's default)."""
        from llmad.data.context import CONTEXT_FEATURES

        feats = getattr(self, "features_", None)
        if not feats or getattr(self, "_template_path", None) is not None:
            return None
        if self.config.template in ("paper", "compact"):
            return list(feats)
        return list(feats) + list(CONTEXT_FEATURES) + ["transformation"] if self.config.template == "context" else None

    def template_ref(self) -> str:
        """The template this detector renders with: the copy saved with the model, else the configured name/path."""
        return getattr(self, "_template_path", None) or self.config.template

    def encode(self, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
        """Token ids per sentence, truncated at ``max_length`` (default: the configured budget)."""
        return encode(self.tokenizer_, texts, max_length or self.config.max_length)

    def encode_auto(self, texts: Sequence[str]) -> tuple[list[list[int]], int]:
        """Token ids and the budget that fits all but the rarest long sentences (``batching.encode_auto``)."""
        return encode_auto(self.tokenizer_, texts)

    # ------------------------------------------------------------------ training
    def fit(self, train: pd.DataFrame, validation: pd.DataFrame | None = None, *, output_dir: str | Path | None = None,
            resume: bool = False, printer: Callable[[str], None] = print) -> "SFTDetector":
        """Fine-tune on ``train`` (checkpoints under ``output_dir``), early-stop and threshold on ``validation``."""
        import tempfile

        from transformers import set_seed

        from llmad.models.resolve import training_precision

        cfg = self.config
        check_config(cfg)
        if not cfg.progress:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()  # no load reports / shard bars in quiet runs
            hf_logging.disable_progress_bar()
        set_seed(cfg.seed)
        device, mp = training_precision(cfg.precision)
        t_start = time.perf_counter()

        model, self.tokenizer_, location, freeze_info = prepare_model(cfg)
        self.features_ = train.attrs.get("features")
        tr, self.prefix_kind_ = training_rows(train, cfg)
        t0 = time.perf_counter()
        free = content_free_texts(self.render, train)
        extra_texts, extra_labels = debias_rows(free, len(tr), cfg.debias_augment, cfg.seed)
        texts = self.render(tr) + extra_texts
        labels = np.concatenate([tr["label"].to_numpy().astype(int), np.asarray(extra_labels, dtype=int)])
        if cfg.max_length is None:
            train_ids, budget = self.encode_auto(texts)
            self.config = cfg = replace(cfg, max_length=budget)
        else:
            train_ids = self.encode(texts)
        # The paper's bias measure before training: the pretrained encoder with its fresh head.
        before = score_with(model, self.tokenizer_, list(free.values()), cfg.max_length, cfg.eval_batch_size)
        self.bias_ = bias_record(free, before, None)
        train_ds = EncodedDataset(train_ids, labels)
        validation = validation_rows(validation, cfg)
        val_ds = None
        if validation is not None and len(validation) and cfg.eval_during_training:
            val_ds = EncodedDataset(self.encode(self.render(validation)), validation["label"].to_numpy())
        render_s = time.perf_counter() - t0

        out = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="llmad-sft-"))
        run = train_model(model, self.tokenizer_, cfg, train_ds, val_ds, out / "checkpoints", device, mp, resume,
                          printer, labels)
        self.paused_ = run.paused
        if output_dir is None and not self.paused_:
            shutil.rmtree(out, ignore_errors=True)  # our own temp checkpoints: nothing to resume from
        state = run.state
        self.trainer_state_ = {"global_step": state.global_step, "epoch": state.epoch,
                               "best_metric": state.best_metric,
                               "best_checkpoint": state.best_model_checkpoint,
                               "log_history": state.log_history}
        self.model_, self.adapter_ = unwrap_trained(run.model, lora=bool(cfg.lora))
        self.device_ = device
        steps = state.global_step
        self.train_info_ = {
            "base_location": location, "train_rows": int(len(tr)), "train_rows_before_augment": int(
                min(len(train), cfg.train_limit or len(train))), "validation_rows": int(len(validation)) if
            validation is not None else 0,
            "mean_train_tokens": float(np.mean([len(x) for x in train_ids])) if train_ids else 0.0,
            "render_tokenize_s": render_s, "train_s": run.train_s, "steps": int(steps), "epochs_done": state.epoch,
            "train_samples_per_s": float(run.metrics.get("train_samples_per_second", float("nan"))),
            # this process's own steps only (a resumed run did the earlier ones in another process)
            "samples_seen_per_s": float((steps - run.start_step) * cfg.batch_size * run.world_size
                                        / max(run.train_s, 1e-9)),
            "device": device, "mixed_precision": mp, "class_weights": run.class_weights,
            "world_size": run.world_size, **freeze_info,
            "resumed_from": run.resumed_from, "paused": self.paused_, "prefix_augment": self.prefix_kind_,
            "debias_rows": len(extra_texts),
        }
        if self.paused_:
            return self
        self.bias_ = bias_record(free, before, self.score_texts(list(free.values())))
        if cfg.threshold_objective == "argmax":
            self.threshold_ = 0.5
        elif validation is not None and len(validation) and is_main_process():
            # Validation is scored once: the best checkpoint's own evaluation when training kept it, else now.
            reused = run.validation_scores is not None
            self.validation_scores_ = run.validation_scores if reused else self.score(validation)
            self.train_info_["validation_scores_from"] = "best evaluation" if reused else "scored after training"
            self.set_threshold(self.validation_scores_, validation["label"].to_numpy(), cfg.threshold_objective)
        else:
            self.threshold_ = 0.5
        self.train_info_["wall_to_model_s"] = time.perf_counter() - t_start
        return self

    # ------------------------------------------------------------------ scoring
    def score(self, items: pd.DataFrame) -> np.ndarray:
        """P(anomalous) per job (rows may be partial: NaN fields render as missing)."""
        if len(items) == 0:
            return np.zeros(0)
        return self.score_texts(self.render(items))

    def score_texts(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """P(anomalous) per sentence: length-sorted batches, dynamic padding, no grad."""
        texts = list(texts)
        if not texts:
            return np.zeros(0)
        ids = self.encode(texts)
        model, dev = self.model_, self.device_
        if next(model.parameters()).device.type != dev and not getattr(self, "quantized_", False):
            model.to(dev)
        return score_ids(model, ids, self.tokenizer_.pad_token_id, batch_size or self.config.eval_batch_size, dev)

    def embed_texts(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Mean-pooled last hidden states (for t-SNE plots of what the model learned)."""
        ids = self.encode(list(texts))
        base = getattr(self.model_, self.model_.base_model_prefix, self.model_)
        return mean_pooled(base, ids, self.tokenizer_.pad_token_id, batch_size or self.config.eval_batch_size,
                           self.device_)

    def quantized(self) -> "SFTDetector":
        """A CPU copy with dynamic int8 Linear layers (faster scoring, slightly different scores)."""
        import copy

        import torch

        det = copy.copy(self)
        cpu_model = copy.deepcopy(self.model_).to("cpu").eval()
        with warnings.catch_warnings():
            # torch.ao dynamic quantization is deprecated in favour of torchao, but still works on this torch
            warnings.simplefilter("ignore")
            det.model_ = torch.ao.quantization.quantize_dynamic(cpu_model, {torch.nn.Linear}, dtype=torch.qint8)
        det.device_, det.quantized_ = "cpu", True
        return det

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """``detector.json`` + ``model/`` (safetensors, tokenizer) [+ ``adapter/`` with LoRA and its head], written
        into a temp folder that replaces ``path`` whole (a reader never sees half a model)."""
        from llmad.io import atomic_dir
        from llmad.render import template_hash

        if getattr(self, "model_", None) is None:
            raise RuntimeError("SFTDetector.save: fit() or load() first")
        if getattr(self, "quantized_", False):
            raise LlmadError("a quantized scoring copy is not saved; save the original detector")
        with atomic_dir(path) as tmp:
            save_model_dir(tmp, self.model_, self.tokenizer_, self.adapter_)
            template = self.config.template
            tpl_path = Path(self.template_ref())
            if tpl_path.suffix in (".j2", ".jinja", ".txt") and tpl_path.is_file():
                # Ship a user template with the model so the sentence a reloaded model sees is the same.
                shutil.copy(tpl_path, tmp / "template.j2")
                template = "template.j2"
            meta = {"format": FORMAT_VERSION, "template": template,
                    "template_hash": template_hash(self.template_ref()), "causal": self.config.causal,
                    "threshold": self.threshold_, "max_length": self.config.max_length,
                    "eval_batch_size": self.config.eval_batch_size, "base_model": self.config.model,
                    "lora": self.config.lora, "label_names": list(LABEL_NAMES),
                    "config": asdict(self.config), "features": getattr(self, "features_", None),
                    "bias": getattr(self, "bias_", None),
                    "train_info": {k: v for k, v in getattr(self, "train_info_", {}).items() if k != "log_history"}}
            write_detector_json(tmp, self.kind, meta)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, quantize: bool = False) -> "SFTDetector":
        """Load a detector written by ``save``; scores equal the saved object's (``quantize``: int8 CPU copy)."""
        from llmad.config import from_dict
        from llmad.models.resolve import pick_device_dtype

        p = Path(path)
        if not is_sft_dir(p):
            raise LlmadError(f"{p}: not a saved llmad SFT model (expected detector.json and model/)")
        meta = read_detector_json(p)
        if meta.get("kind") != "sft":
            raise LlmadError(f"{p}: detector.json is of kind {meta.get('kind')!r}, not sft")
        cfg = from_dict(SFTConfig, meta["config"], where=str(p / "detector.json"))
        det = cls(cfg)
        if meta["template"] == "template.j2":
            det._template_path = str(p / "template.j2")
        det.model_, det.tokenizer_ = load_model_dir(p, trust_remote_code=cfg.trust_remote_code)
        det.device_ = device or pick_device_dtype()[0]
        det.threshold_ = meta["threshold"]
        det.features_ = meta.get("features")
        det.adapter_ = None
        det.train_info_ = meta.get("train_info", {})
        det.bias_ = meta.get("bias")
        det.paused_ = False
        return det.quantized() if quantize else det


__all__ = ["SFTConfig", "SFTDetector", "parse_freeze", "apply_freeze", "latest_checkpoint", "FREEZE_HELP",
           "FORMAT_VERSION"]
