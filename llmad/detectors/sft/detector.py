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
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from llmad.detectors.base import Detector
from llmad.errors import LlmadError

FORMAT_VERSION = 1
# A job's paper features grouped by the stage of its life at which each becomes known, in event order
# (ready -> submit: wms; stage-in; submit -> execute_start: queue; execute_end: runtime, cpu; stage-out; post-script).
# A partial job at stage k keeps the fields of stages < k and has every later one set to NaN.
PREFIX_STAGES: list[list[str]] = [
    ["wms_delay"],
    ["stage_in_delay", "stage_in_bytes"],
    ["queue_delay"],
    ["runtime", "kickstart_executables_cpu_time"],
    ["stage_out_delay", "stage_out_bytes"],
    ["post_script_delay"],
]
# Peer features (llmad.data.context) that depend on a stage's fields: unknown while the field is unknown.
_CTX_DEPENDS = {
    "stage_in_delay": ["ctx_stage_in_rel"],
    "queue_delay": ["ctx_queue_rel"],
    "runtime": ["ctx_runtime_rel", "ctx_cpu_util", "ctx_host_slowness"],
    "kickstart_executables_cpu_time": ["ctx_cpu_rel", "ctx_cpu_util", "ctx_host_cpu_slowness"],
}
_STAGE_TIMESTAMPS = [["submit"], ["stage_in_start", "stage_in_end"], ["execute_start"], ["execute_end"],
                     ["stage_out_start", "stage_out_end"], ["post_script_start", "post_script_end"]]
FREEZE_HELP = "none | embeddings | N-layers (embeddings + the first N layers) | encoder (all but pooler + head)"


@dataclass
class SFTConfig:
    """Settings of one fine-tuning run; defaults are llmad's recipe (see the module docstring)."""

    model: str = "minilm"  # offline alias, hub id or local folder
    template: str = "compact"  # paper | compact | context | path to a .j2
    causal: bool = False  # context template: peers finished no later than the job only
    max_length: int | None = None  # None: the longest train job (99.9th percentile), so no template is cut silently
    epochs: float = 3.0
    lr: float = 1e-4
    batch_size: int = 32
    eval_batch_size: int = 128
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    freeze: str = "embeddings"  # see FREEZE_HELP
    lora: int = 0  # LoRA rank; 0 = train the (unfrozen) weights themselves
    lora_alpha: int | None = None  # default 2 * rank
    lora_dropout: float = 0.1
    init_from: str | None = None  # a saved llmad SFT model (or HF folder) to start from
    prefix_augment: bool = False  # also train on partial jobs (later fields NaN, as llmad.stream reveals them)
    prefix_copies: int = 1  # partial copies per training job
    group_by_length: bool = True
    early_stopping_patience: int = 2  # evaluations without improvement; 0 disables early stopping
    eval_during_training: bool = True  # False: no validation passes while training (the paper's recipe)
    best_metric: str = "loss"  # validation metric that picks the best checkpoint: loss | roc_auc | f1 | accuracy
    eval_steps: int | None = None  # evaluate + checkpoint every N steps; None = once per epoch
    max_steps: int = -1  # > 0 overrides epochs (smoke runs)
    max_time_s: float | None = None  # stop after this long with a checkpoint; continue later with resume
    precision: str = "auto"  # auto (CUDA bf16/fp16, CPU fp32) | fp32 | bf16 (also CPU autocast) | fp16 (CUDA)
    class_weight: str = "none"  # none | balanced (cross-entropy weighted by inverse class frequency of train)
    train_limit: int | None = None  # seeded subsample of train rows (stated in outputs)
    seed: int = 0
    threshold_objective: str = "f1"  # f1 | accuracy | youden | argmax (0.5, as the paper)
    trust_remote_code: bool = False
    save_total_limit: int = 2
    logging_steps: int = 50
    progress: bool = True  # progress bars
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes carried into outputs


def parse_freeze(spec: str) -> tuple[str, int]:
    """``none`` | ``embeddings`` | ``encoder`` | ``N`` / ``N-layers`` -> (kind, N)."""
    s = str(spec).strip().lower()
    if s in ("none", "embeddings", "encoder"):
        return s, 0
    m = re.fullmatch(r"(\d+)(?:[-_ ]?layers?)?", s)
    if m:
        return "layers", int(m.group(1))
    raise LlmadError(f"--freeze {spec!r}: expected {FREEZE_HELP}")


def partial_jobs(jobs: pd.DataFrame, stage: int) -> pd.DataFrame:
    """Copy of ``jobs`` as seen before stage ``stage`` (0-based into PREFIX_STAGES): later fields set to NaN."""
    if not 0 <= stage <= len(PREFIX_STAGES):
        raise ValueError(f"stage must be in 0..{len(PREFIX_STAGES)}")
    out = jobs.copy()
    for k in range(stage, len(PREFIX_STAGES)):
        cols = list(PREFIX_STAGES[k]) + _STAGE_TIMESTAMPS[k]
        for c in PREFIX_STAGES[k]:
            cols += _CTX_DEPENDS.get(c, [])
        cols = [c for c in cols if c in out.columns]
        out[cols] = np.nan
    return out


def prefix_augmented(jobs: pd.DataFrame, copies: int = 1, seed: int = 0) -> pd.DataFrame:
    """``jobs`` plus ``copies`` partial versions of each job (random cut stage 1..5), same labels."""
    rng = np.random.default_rng(seed)
    parts = [jobs]
    for _ in range(copies):
        cut = rng.integers(1, len(PREFIX_STAGES), size=len(jobs))
        for k in np.unique(cut):
            parts.append(partial_jobs(jobs[cut == k], int(k)))
    return pd.concat(parts, ignore_index=True)


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


class _Encoded:
    """Token ids + labels as a map-style dataset for ``Trainer`` (padding happens per batch in the collator)."""

    def __init__(self, input_ids: list[list[int]], labels: Sequence[int]):
        self.input_ids, self.labels = input_ids, [int(y) for y in labels]

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ids = self.input_ids[i]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": self.labels[i]}


def _pad_batch(seqs: list[list[int]], pad_id: int):
    import torch

    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for j, s in enumerate(seqs):
        ids[j, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[j, :len(s)] = 1
    return ids, mask


def _find_layers(model) -> Any:
    """The transformer block list of an encoder (BERT: encoder.layer, DistilBERT: transformer.layer, ...)."""
    import torch.nn as nn

    n = getattr(model.config, "num_hidden_layers", None)
    base = getattr(model, model.base_model_prefix, model)
    for _, mod in base.named_modules():
        if isinstance(mod, nn.ModuleList) and (n is None or len(mod) == n):
            return mod
    raise LlmadError(f"cannot find the transformer layers of {type(model).__name__} to freeze")


def apply_freeze(model, spec: str) -> dict[str, int]:
    """Freeze parts of the encoder per ``spec``; returns trainable/total parameter counts."""
    kind, n = parse_freeze(spec)
    base = getattr(model, model.base_model_prefix, model)
    frozen = []
    if kind in ("embeddings", "layers", "encoder"):
        emb = getattr(base, "embeddings", None)
        if emb is None:
            raise LlmadError(f"{type(model).__name__} has no embeddings module to freeze")
        frozen.append(emb)
    if kind in ("layers", "encoder"):
        layers = _find_layers(model)
        if kind == "layers" and n > len(layers):
            raise LlmadError(f"--freeze {spec}: the model has only {len(layers)} layers")
        frozen.extend(list(layers)[: (len(layers) if kind == "encoder" else n)])
    for mod in frozen:
        for p in mod.parameters():
            p.requires_grad = False
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": int(trainable), "total_params": int(total)}


def _head_modules(model) -> list[str]:
    """Names of the task head (and pooler) modules that LoRA must train and save in full (``modules_to_save``)."""
    names = set()
    for name, _ in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        if last in ("classifier", "score", "pre_classifier", "pooler") and name.count(".") <= 1:
            names.add(last)
    return sorted(names)


def _is_sft_dir(path: str | Path) -> bool:
    return (Path(path) / "detector.json").is_file() and (Path(path) / "model").is_dir()


class _ValidationLine:
    """A ``TrainerCallback``-compatible object printing one line per evaluation."""

    def __new__(cls, *a, **k):  # built lazily so that importing this module never imports transformers
        from transformers import TrainerCallback

        class ValidationLine(TrainerCallback):
            def __init__(self, printer: Callable[[str], None]):
                self.printer = printer

            def on_evaluate(self, args, state, control, metrics=None, **kw):
                if metrics and state.is_world_process_zero:
                    keys = [("loss", "eval_loss"), ("acc", "eval_accuracy"), ("f1", "eval_f1"), ("auc", "eval_roc_auc")]
                    parts = [f"{k} {metrics[m]:.4f}" for k, m in keys if m in metrics]
                    self.printer(f"epoch {state.epoch:.2f} step {state.global_step}: validation " + " ".join(parts))

        return ValidationLine(*a, **k)


def _class_weighted_loss(labels: np.ndarray):
    """(loss function for ``Trainer(compute_loss_func=...)``, the weights): cross-entropy with class weights
    n / (2 n_c), so both classes weigh the same and the mean weight over train is 1 (the loss keeps its scale).
    Why: with few positives (montage: 20%) an encoder settles on the prior early; weighting keeps the minority's
    gradient as large as the majority's."""
    import torch

    y = np.asarray(labels).astype(int)
    counts = np.bincount(y, minlength=2)
    if (counts == 0).any():
        raise LlmadError("class_weight balanced needs both labels in the training rows")
    w = (len(y) / (2.0 * counts)).tolist()
    weight = torch.tensor(w, dtype=torch.float32)

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        total = torch.nn.functional.cross_entropy(logits.float(), labels, weight=weight.to(logits.device),
                                                  reduction="sum")
        # Trainer passes the batch's label count when it normalizes for gradient accumulation itself.
        return total / (num_items_in_batch if num_items_in_batch else labels.numel())

    return loss, [round(v, 4) for v in w]


def _compute_metrics(eval_pred) -> dict[str, float]:
    from sklearn import metrics as skm

    logits, labels = eval_pred.predictions, eval_pred.label_ids
    logits = logits[0] if isinstance(logits, tuple) else logits
    prob = _softmax1(np.asarray(logits, dtype=np.float64))
    pred = (prob >= 0.5).astype(int)
    out = {"accuracy": float(skm.accuracy_score(labels, pred)),
           "f1": float(skm.f1_score(labels, pred, zero_division=0))}
    out["roc_auc"] = float(skm.roc_auc_score(labels, prob)) if 0 < np.sum(labels) < len(labels) else float("nan")
    return out


def _softmax1(logits: np.ndarray) -> np.ndarray:
    """P(class 1) from 2-class logits, numerically stable."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e[:, 1] / e.sum(axis=1)


class SFTDetector(Detector):
    """An encoder + classification head fine-tuned on rendered jobs; ``score`` = P(anomalous)."""

    name = "sft"

    def __init__(self, config: SFTConfig | None = None, **overrides: Any):
        from llmad.config import merge

        self.config = merge(config or SFTConfig(), overrides) if overrides else (config or SFTConfig())
        self.name = f"sft-{Path(str(self.config.model)).name}-{Path(self.config.template).stem}"

    # ------------------------------------------------------------------ model building
    def _load_base(self):
        """(model, tokenizer, where from) for training: ``init_from`` (a previous model) or ``model``."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from llmad.models.resolve import resolve_model

        cfg = self.config
        if cfg.init_from:
            src = Path(cfg.init_from)
            if _is_sft_dir(src):
                location = str(src / "model")
            elif (src / "config.json").is_file():
                location = str(src)
            else:
                raise LlmadError(f"--init-from {src}: not a saved llmad SFT model (no detector.json + model/)")
        else:
            location = resolve_model(cfg.model).location
        try:
            tok = AutoTokenizer.from_pretrained(location, trust_remote_code=cfg.trust_remote_code)
            model = AutoModelForSequenceClassification.from_pretrained(
                location, num_labels=2, trust_remote_code=cfg.trust_remote_code, use_safetensors=True)
        except OSError as e:
            raise LlmadError(f"model {cfg.init_from or cfg.model!r} ({location}): cannot load safetensors weights "
                             f"and tokenizer ({str(e).splitlines()[0][:200]})") from None
        except ValueError as e:
            msg = str(e).splitlines()[0][:200]
            hint = " (pass --trust-remote-code if you trust its code)" if "trust_remote_code" in str(e) else ""
            raise LlmadError(f"model {cfg.init_from or cfg.model!r}: {msg}{hint}") from None
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token or tok.unk_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tok.pad_token_id
        model.config.id2label, model.config.label2id = {0: "normal", 1: "anomalous"}, {"normal": 0, "anomalous": 1}
        return model, tok, location

    def _wrap_lora(self, model):
        from peft import LoraConfig, TaskType, get_peft_model

        cfg = self.config
        heads = _head_modules(model)
        kw = dict(task_type=TaskType.SEQ_CLS, r=cfg.lora, lora_alpha=cfg.lora_alpha or 2 * cfg.lora,
                  lora_dropout=cfg.lora_dropout, modules_to_save=heads)
        try:
            return get_peft_model(model, LoraConfig(**kw))
        except ValueError:  # architecture without peft's default target modules
            return get_peft_model(model, LoraConfig(target_modules="all-linear", **kw))

    # ------------------------------------------------------------------ data
    def render(self, jobs: pd.DataFrame) -> list[str]:
        """Job sentences under this detector's template."""
        from llmad.render import render_jobs

        return render_jobs(jobs, self._template_ref(), causal=self.config.causal)

    def _template_ref(self) -> str:
        return getattr(self, "_template_path", None) or self.config.template

    def _encode(self, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
        tok = self.tokenizer_
        return tok(list(texts), truncation=True, max_length=max_length or self.config.max_length,
                   add_special_tokens=True, return_attention_mask=False, return_token_type_ids=False)["input_ids"]

    def _encode_auto(self, texts: Sequence[str]) -> tuple[list[list[int]], int]:
        """Token ids and a budget that fits all but the rarest outliers (a fixed 64 cut the context template's host
        part); one tokenization, only the few longer sentences are encoded again at the budget."""
        cap = min(int(getattr(self.tokenizer_, "model_max_length", 512) or 512), 512)
        ids = self._encode(texts, cap)
        if not ids:
            return ids, cap
        budget = int(min(cap, max(8, np.ceil(np.percentile([len(x) for x in ids], 99.9)))))
        long = [i for i, x in enumerate(ids) if len(x) > budget]
        for i, x in zip(long, self._encode([texts[i] for i in long], budget) if long else []):
            ids[i] = x
        return ids, budget

    def _train_frame(self, train: pd.DataFrame) -> pd.DataFrame:
        cfg = self.config
        if cfg.train_limit and len(train) > cfg.train_limit:
            train = train.sample(n=cfg.train_limit, random_state=cfg.seed).reset_index(drop=True)
        self.prefix_kind_ = None
        if cfg.prefix_augment:
            if {"submit", "execute_start", "execute_end"} <= set(train.columns):
                # Event-time cuts from the streaming module: the same partial rows `llmad replay` scores.
                from llmad.stream import prefix_augment as event_prefix_augment

                train = event_prefix_augment(train, copies=cfg.prefix_copies, seed=cfg.seed)
                self.prefix_kind_ = "events"
            else:  # no timestamps: cut at the stages of PREFIX_STAGES
                train = prefix_augmented(train, copies=cfg.prefix_copies, seed=cfg.seed)
                self.prefix_kind_ = "stages"
        return train

    # ------------------------------------------------------------------ training
    def fit(self, train: pd.DataFrame, validation: pd.DataFrame | None = None, *, output_dir: str | Path | None = None,
            resume: bool = False, printer: Callable[[str], None] = print) -> "SFTDetector":
        """Fine-tune on ``train`` (checkpoints under ``output_dir``), early-stop and threshold on ``validation``."""
        import tempfile

        from transformers import (DataCollatorWithPadding, EarlyStoppingCallback, Trainer, TrainingArguments,
                                  set_seed)

        from llmad.models.resolve import time_budget_callback, training_precision
        from llmad.render import resolve_template

        cfg = self.config
        resolve_template(cfg.template)  # fail before loading a model on a bad template name
        if cfg.lora < 0 or cfg.epochs <= 0 or cfg.batch_size <= 0 or (cfg.max_length is not None
                                                                         and cfg.max_length < 8):
            raise LlmadError("need lora >= 0, epochs > 0, batch size > 0 and max length >= 8")
        if cfg.class_weight not in ("none", "balanced"):
            raise LlmadError(f"class weight {cfg.class_weight!r}: expected none|balanced")
        if cfg.threshold_objective not in ("f1", "accuracy", "youden", "argmax"):
            raise LlmadError(f"threshold objective {cfg.threshold_objective!r}: expected f1|accuracy|youden|argmax")
        parse_freeze(cfg.freeze)
        if not cfg.progress:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()  # no load reports / shard bars in quiet runs
            hf_logging.disable_progress_bar()
        set_seed(cfg.seed)
        device, mp = training_precision(cfg.precision)
        t_start = time.perf_counter()

        model, self.tokenizer_, location = self._load_base()
        freeze_info = apply_freeze(model, cfg.freeze if not cfg.lora else "none")
        if cfg.lora:
            model = self._wrap_lora(model)
            freeze_info = {"trainable_params": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
                           "total_params": int(sum(p.numel() for p in model.parameters()))}

        tr = self._train_frame(train)
        t0 = time.perf_counter()
        if cfg.max_length is None:
            train_ids, budget = self._encode_auto(self.render(tr))
            self.config = cfg = replace(cfg, max_length=budget)
        else:
            train_ids = self._encode(self.render(tr))
        train_ds = _Encoded(train_ids, tr["label"].to_numpy())
        val_ds = None
        if validation is not None and len(validation) and cfg.eval_during_training:
            val_ds = _Encoded(self._encode(self.render(validation)), validation["label"].to_numpy())
        render_s = time.perf_counter() - t0

        out = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="llmad-sft-"))
        ckpt_dir = out / "checkpoints"
        per_epoch = val_ds is not None and cfg.eval_steps is None
        strategy = "epoch" if per_epoch else ("steps" if val_ds is not None else "no")
        save_strategy = strategy if val_ds is not None else ("steps" if cfg.eval_steps else "epoch")
        best = cfg.best_metric
        args = TrainingArguments(
            output_dir=str(ckpt_dir),
            num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
            per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.eval_batch_size,
            learning_rate=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_ratio,
            eval_strategy=strategy, save_strategy=save_strategy,
            eval_steps=cfg.eval_steps, save_steps=cfg.eval_steps or 500,
            save_total_limit=cfg.save_total_limit,
            load_best_model_at_end=val_ds is not None,
            metric_for_best_model=best if val_ds is not None else None,
            greater_is_better=(best != "loss") if val_ds is not None else None,
            train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
            logging_steps=cfg.logging_steps, logging_strategy="steps",
            seed=cfg.seed, data_seed=cfg.seed,
            report_to="none", disable_tqdm=not cfg.progress,
            use_cpu=device == "cpu", bf16=mp["bf16"], fp16=mp["fp16"],
            dataloader_num_workers=0, save_only_model=False,
            ddp_find_unused_parameters=False,
        )
        budget = time_budget_callback(cfg.max_time_s, save=True)
        callbacks = [_ValidationLine(printer), budget]
        if val_ds is not None and cfg.early_stopping_patience > 0:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
        loss_fn, weights = _class_weighted_loss(tr["label"].to_numpy()) if cfg.class_weight == "balanced" else (
            None, None)
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                          data_collator=DataCollatorWithPadding(self.tokenizer_),
                          processing_class=self.tokenizer_, compute_loss_func=loss_fn,
                          compute_metrics=_compute_metrics if val_ds is not None else None, callbacks=callbacks)
        resume_from = latest_checkpoint(ckpt_dir, remove_incomplete=True) if resume else None
        if resume and resume_from is None:
            printer(f"no complete checkpoint under {ckpt_dir}: training from the start")
        elif resume_from:
            printer(f"resuming from {resume_from}")
        start_step = int(Path(resume_from).name.split("-")[-1]) if resume_from else 0
        t1 = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=resume_from)
        train_s = time.perf_counter() - t1
        self.paused_ = bool(budget.paused)
        if output_dir is None and not self.paused_:
            shutil.rmtree(out, ignore_errors=True)  # our own temp checkpoints: nothing to resume from
        self.trainer_state_ = {"global_step": trainer.state.global_step, "epoch": trainer.state.epoch,
                               "best_metric": trainer.state.best_metric,
                               "best_checkpoint": trainer.state.best_model_checkpoint,
                               "log_history": trainer.state.log_history}
        model = trainer.model
        if hasattr(model, "module") and not hasattr(model, "config"):
            model = model.module
        self.adapter_ = None
        if cfg.lora:
            from peft import get_peft_model_state_dict

            # Keep the adapter (LoRA weights + full head in modules_to_save) for save(); score with merged weights.
            self.adapter_ = ({k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()},
                             model.peft_config["default"])
            model = model.merge_and_unload()
        model.eval()
        self.model_ = model
        self.device_ = device
        steps = trainer.state.global_step
        self.train_info_ = {
            "base_location": location, "train_rows": int(len(tr)), "train_rows_before_augment": int(
                min(len(train), cfg.train_limit or len(train))), "validation_rows": int(len(validation)) if
            validation is not None else 0,
            "mean_train_tokens": float(np.mean([len(x) for x in train_ids])) if train_ids else 0.0,
            "render_tokenize_s": render_s, "train_s": train_s, "steps": int(steps), "epochs_done": trainer.state.epoch,
            "train_samples_per_s": float(result.metrics.get("train_samples_per_second", float("nan"))),
            # this process's own steps only (a resumed run did the earlier ones in another process)
            "samples_seen_per_s": float((steps - start_step) * cfg.batch_size * int(args.world_size)
                                        / max(train_s, 1e-9)),
            "device": device, "mixed_precision": mp, "class_weights": weights, "world_size": int(args.world_size),
            **freeze_info,
            "resumed_from": resume_from, "paused": self.paused_, "prefix_augment": self.prefix_kind_,
        }
        if self.paused_:
            return self
        if cfg.threshold_objective == "argmax":
            self.threshold_ = 0.5
        elif validation is not None and len(validation) and _is_main_process():
            self.validation_scores_ = self.score(validation)
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
        import torch

        texts = list(texts)
        if not texts:
            return np.zeros(0)
        ids = self._encode(texts)
        order = np.argsort([len(x) for x in ids], kind="stable")
        bs = batch_size or self.config.eval_batch_size
        out = np.empty(len(ids), dtype=np.float64)
        model, dev = self.model_, self.device_
        pad = self.tokenizer_.pad_token_id
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
                    if dev == "cuda" else _null())
        if next(model.parameters()).device.type != dev and not getattr(self, "quantized_", False):
            model.to(dev)
        with torch.inference_mode(), autocast:
            for i in range(0, len(order), bs):
                idx = order[i:i + bs]
                x, m = _pad_batch([ids[j] for j in idx], pad)
                logits = model(input_ids=x.to(dev), attention_mask=m.to(dev)).logits.float().cpu().numpy()
                out[idx] = _softmax1(logits.astype(np.float64))
        return out

    def embed_texts(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Mean-pooled last hidden states (for t-SNE plots of what the model learned)."""
        import torch

        ids = self._encode(list(texts))
        bs = batch_size or self.config.eval_batch_size
        base = getattr(self.model_, self.model_.base_model_prefix, self.model_)
        rows = []
        with torch.inference_mode():
            for i in range(0, len(ids), bs):
                x, m = _pad_batch(ids[i:i + bs], self.tokenizer_.pad_token_id)
                h = base(input_ids=x.to(self.device_), attention_mask=m.to(self.device_)).last_hidden_state.float()
                mf = m.to(h.device).unsqueeze(-1).float()
                rows.append(((h * mf).sum(1) / mf.sum(1)).cpu().numpy())
        return np.concatenate(rows) if rows else np.zeros((0, 0))

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
        """``detector.json`` + ``model/`` (safetensors, tokenizer) [+ ``adapter/`` with LoRA and its head]."""
        from safetensors.torch import save_file

        from llmad.render import template_hash

        if getattr(self, "model_", None) is None:
            raise RuntimeError("SFTDetector.save: fit() or load() first")
        if getattr(self, "quantized_", False):
            raise LlmadError("a quantized scoring copy is not saved; save the original detector")
        p = Path(path)
        tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.model_.save_pretrained(tmp / "model", safe_serialization=True)
        self.tokenizer_.save_pretrained(tmp / "model")
        template = self.config.template
        tpl_path = Path(self._template_ref())
        if tpl_path.suffix in (".j2", ".jinja", ".txt") and tpl_path.is_file():
            # Ship a user template with the model so the sentence a reloaded model sees is the same.
            shutil.copy(tpl_path, tmp / "template.j2")
            template = "template.j2"
        if self.adapter_ is not None:
            state, peft_cfg = self.adapter_
            (tmp / "adapter").mkdir()
            peft_cfg.save_pretrained(str(tmp / "adapter"))
            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "adapter" / "adapter_model.safetensors"))
        meta = {"kind": "sft", "format": FORMAT_VERSION, "template": template,
                "template_hash": template_hash(self._template_ref()), "causal": self.config.causal,
                "threshold": self.threshold_, "max_length": self.config.max_length,
                "eval_batch_size": self.config.eval_batch_size, "base_model": self.config.model,
                "lora": self.config.lora, "label_names": ["normal", "anomalous"],
                "config": asdict(self.config), "train_info": {k: v for k, v in getattr(self, "train_info_", {}).items()
                                                               if k != "log_history"}}
        from llmad.io import to_jsonable

        (tmp / "detector.json").write_text(json.dumps(to_jsonable(meta), indent=2) + "\n")
        if p.exists():
            old = p.with_name(f".{p.name}.old{os.getpid()}")
            os.replace(p, old)
            os.replace(tmp, p)
            shutil.rmtree(old, ignore_errors=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, p)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, quantize: bool = False) -> "SFTDetector":
        """Load a detector written by ``save``; scores equal the saved object's (``quantize``: int8 CPU copy)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from llmad.config import from_dict
        from llmad.models.resolve import pick_device_dtype

        p = Path(path)
        if not _is_sft_dir(p):
            raise LlmadError(f"{p}: not a saved llmad SFT model (expected detector.json and model/)")
        meta = json.loads((p / "detector.json").read_text())
        if meta.get("kind") != "sft":
            raise LlmadError(f"{p}: detector.json is of kind {meta.get('kind')!r}, not sft")
        cfg = from_dict(SFTConfig, meta["config"], where=str(p / "detector.json"))
        det = cls(cfg)
        if meta["template"] == "template.j2":
            det._template_path = str(p / "template.j2")
        trust = cfg.trust_remote_code
        det.tokenizer_ = AutoTokenizer.from_pretrained(p / "model", trust_remote_code=trust)
        det.model_ = AutoModelForSequenceClassification.from_pretrained(p / "model", use_safetensors=True,
                                                                         trust_remote_code=trust).eval()
        det.device_ = device or pick_device_dtype()[0]
        det.threshold_ = meta["threshold"]
        det.adapter_ = None
        det.train_info_ = meta.get("train_info", {})
        det.paused_ = False
        return det.quantized() if quantize else det


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def latest_checkpoint(ckpt_dir: str | Path, remove_incomplete: bool = False) -> str | None:
    """Newest complete ``checkpoint-N`` (trainer_state.json is written last); optionally delete incomplete ones."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return None
    cands = []
    for c in d.iterdir():
        m = re.fullmatch(r"checkpoint-(\d+)", c.name)
        if m and c.is_dir():
            if (c / "trainer_state.json").is_file():
                cands.append((int(m.group(1)), c))
            elif remove_incomplete and _is_main_process():
                shutil.rmtree(c, ignore_errors=True)  # killed while writing it
    return str(max(cands)[1]) if cands else None


__all__ = ["SFTConfig", "SFTDetector", "PREFIX_STAGES", "partial_jobs", "prefix_augmented", "parse_freeze",
           "apply_freeze", "latest_checkpoint", "FREEZE_HELP"]
