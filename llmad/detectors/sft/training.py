"""The HF ``Trainer`` side of SFT: the training rows, ``TrainingArguments`` from an ``SFTConfig``, the class-weighted
loss, validation metrics and log line, and checkpoints (``latest_checkpoint``; a killed run resumes from the newest
complete one).
"""
from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from llmad.detectors.sft.batching import EncodedDataset, collator, softmax1
from llmad.detectors.sft.config import SFTConfig
from llmad.errors import LlmadError, warn

THRESHOLD_OBJECTIVES = ("f1", "accuracy", "youden", "argmax")


def is_main_process() -> bool:
    """True outside multi-process training and on rank 0 of it (the rank that writes outputs)."""
    return int(os.environ.get("RANK", "0")) == 0


def check_config(cfg: SFTConfig) -> None:
    """Fail on impossible settings before any model is loaded."""
    from llmad.detectors.sft.config import parse_freeze
    from llmad.render import resolve_template

    resolve_template(cfg.template)  # fail before loading a model on a bad template name
    if cfg.lora < 0 or cfg.epochs <= 0 or cfg.batch_size <= 0 or (cfg.max_length is not None
                                                                     and cfg.max_length < 8):
        raise LlmadError("need lora >= 0, epochs > 0, batch size > 0 and max length >= 8")
    if cfg.class_weight not in ("none", "balanced"):
        raise LlmadError(f"class weight {cfg.class_weight!r}: expected none|balanced")
    if cfg.threshold_objective not in THRESHOLD_OBJECTIVES:
        raise LlmadError(f"threshold objective {cfg.threshold_objective!r}: expected f1|accuracy|youden|argmax")
    parse_freeze(cfg.freeze)
    if not 0 <= cfg.debias_augment <= 1:
        raise LlmadError(f"debias_augment {cfg.debias_augment!r}: expected a share of the training rows in [0, 1]")


def training_rows(train: pd.DataFrame, cfg: SFTConfig) -> tuple[pd.DataFrame, str | None]:
    """(rows to train on, how partial copies were cut or None): ``train_limit`` subsample, then prefix copies."""
    from llmad.data.reveal import augment_with_prefixes
    from llmad.data.splits import subsample

    if cfg.train_limit and len(train) > cfg.train_limit:
        train = subsample(train, cfg.train_limit, cfg.seed)
    if not cfg.prefix_augment:
        return train, None
    # Event-time cuts when the rows have timestamps: the same partial rows `llmad replay` scores.
    return augment_with_prefixes(train, copies=cfg.prefix_copies, seed=cfg.seed)


def validation_rows(validation: pd.DataFrame | None, cfg: SFTConfig) -> pd.DataFrame | None:
    """The validation rows a run evaluates and thresholds on: a ``val_limit`` seeded subsample (rows only: peer
    features were computed on whole runs before), else all."""
    from llmad.data.splits import subsample

    if validation is None or not cfg.val_limit or len(validation) <= cfg.val_limit:
        return validation
    return subsample(validation, cfg.val_limit, cfg.seed)


class EvalScores:
    """P(anomalous) of each validation row at each evaluation while training, by global step, so the threshold
    is chosen on the best checkpoint's own evaluation instead of scoring validation a second time.

    The ``Trainer`` evaluates in length-grouped order; rows are matched back by their token ids (identical ids
    score the same)."""

    def __init__(self, pad_id: int):
        self.pad_id, self.last, self.by_step = pad_id, None, {}

    def compute_metrics(self, eval_pred) -> dict[str, float]:
        """``compute_metrics`` for ``Trainer`` that also keeps this evaluation's P(anomalous) per token-id row."""
        logits = eval_pred.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        prob = softmax1(np.asarray(logits, dtype=np.float64))
        inputs = eval_pred.inputs
        if inputs is not None:
            self.last = {}
            for row, p in zip(np.asarray(inputs), prob):
                n = len(row)
                while n and row[n - 1] in (self.pad_id, -100):  # right padding (collator, then cross-batch -100)
                    n -= 1
                self.last[tuple(int(t) for t in row[:n])] = float(p)
        return compute_metrics(eval_pred)

    def callback(self) -> Any:
        """A ``TrainerCallback`` filing the latest evaluation's scores under its global step."""
        from transformers import TrainerCallback

        holder = self

        class FileScores(TrainerCallback):
            def on_evaluate(self, args, state, control, metrics=None, **kw):
                if holder.last is not None:
                    holder.by_step[state.global_step], holder.last = holder.last, None

        return FileScores()

    def scores_at(self, step: int | None, ids: list[list[int]]) -> np.ndarray | None:
        """The scores of rows ``ids`` at the evaluation of ``step``; None when that evaluation is not here (a
        resumed run evaluated it in another process) or does not cover every row."""
        seen = self.by_step.get(step) if step is not None else None
        if not seen:
            return None
        try:
            return np.array([seen[tuple(x)] for x in ids], dtype=np.float64)
        except KeyError:
            return None


def training_arguments(cfg: SFTConfig, ckpt_dir: Path, validate: bool, device: str, mp: dict[str, bool]) -> Any:
    """``TrainingArguments`` for ``cfg``: evaluate/checkpoint per epoch (or every ``eval_steps``), keep the best."""
    from transformers import TrainingArguments

    per_epoch = validate and cfg.eval_steps is None
    strategy = "epoch" if per_epoch else ("steps" if validate else "no")
    save_strategy = strategy if validate else ("steps" if cfg.eval_steps else "epoch")
    best = cfg.best_metric
    return TrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.eval_batch_size,
        learning_rate=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_ratio,
        eval_strategy=strategy, save_strategy=save_strategy,
        eval_steps=cfg.eval_steps, save_steps=cfg.eval_steps or 500,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=validate,
        metric_for_best_model=best if validate else None,
        greater_is_better=(best != "loss") if validate else None,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        logging_steps=cfg.logging_steps, logging_strategy="steps",
        seed=cfg.seed, data_seed=cfg.seed,
        report_to="none", disable_tqdm=not cfg.progress,
        use_cpu=device == "cpu", bf16=mp["bf16"], fp16=mp["fp16"],
        dataloader_num_workers=0, save_only_model=False,
        include_for_metrics=["inputs"] if validate else [],
        ddp_find_unused_parameters=False,
    )


def validation_line(printer: Callable[[str], None]) -> Any:
    """A ``TrainerCallback`` printing one line per evaluation (loss, accuracy, F1, ROC-AUC)."""
    from transformers import TrainerCallback  # here, so that importing this module never imports transformers

    class ValidationLine(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kw):
            if metrics and state.is_world_process_zero:
                keys = [("loss", "eval_loss"), ("acc", "eval_accuracy"), ("f1", "eval_f1"), ("auc", "eval_roc_auc")]
                parts = [f"{k} {metrics[m]:.4f}" for k, m in keys if m in metrics]
                printer(f"epoch {state.epoch:.2f} step {state.global_step}: validation " + " ".join(parts))

    return ValidationLine()


def class_weighted_loss(labels: np.ndarray):
    """(loss function for ``Trainer(compute_loss_func=...)``, the weights): cross-entropy with class weights
    n / (2 n_c), so both classes weigh the same and the mean weight over train is 1 (the loss keeps its scale).
    Why: with few positives (montage: 20%) an encoder settles on the prior early; weighting keeps the minority's
    gradient as large as the majority's."""
    import torch

    y = np.asarray(labels).astype(int)
    counts = np.bincount(y, minlength=2)
    if (counts == 0).any():
        # Balanced is the default, so a one-label train part (e.g. normal jobs only) must still train as before.
        warn("single-class-train", f"the training rows hold only label {int(np.argmax(counts))}: class_weight "
                                   f"balanced needs both, so the loss is unweighted")
        return None, None
    w = (len(y) / (2.0 * counts)).tolist()
    weight = torch.tensor(w, dtype=torch.float32)

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        total = torch.nn.functional.cross_entropy(logits.float(), labels, weight=weight.to(logits.device),
                                                  reduction="sum")
        # Trainer passes the batch's label count when it normalizes for gradient accumulation itself.
        return total / (num_items_in_batch if num_items_in_batch else labels.numel())

    return loss, [round(v, 4) for v in w]


def compute_metrics(eval_pred) -> dict[str, float]:
    """Validation accuracy, F1 (at 0.5) and ROC-AUC from the ``Trainer``'s logits."""
    from sklearn import metrics as skm

    logits, labels = eval_pred.predictions, eval_pred.label_ids
    logits = logits[0] if isinstance(logits, tuple) else logits
    prob = softmax1(np.asarray(logits, dtype=np.float64))
    pred = (prob >= 0.5).astype(int)
    out = {"accuracy": float(skm.accuracy_score(labels, pred)),
           "f1": float(skm.f1_score(labels, pred, zero_division=0))}
    out["roc_auc"] = float(skm.roc_auc_score(labels, prob)) if 0 < np.sum(labels) < len(labels) else float("nan")
    return out


def latest_checkpoint(ckpt_dir: str | Path, remove_incomplete: bool = False) -> str | None:
    """Newest complete ``checkpoint-N`` (trainer_state.json is written last).

    ``remove_incomplete`` (what resuming uses): also delete incomplete ones and set damaged ones aside, returning
    the newest undamaged one (see :func:`resume_checkpoint`).
    """
    d = Path(ckpt_dir)
    if not d.is_dir():
        return None
    cands = []
    for c in d.iterdir():
        m = re.fullmatch(r"checkpoint-(\d+)", c.name)
        if m and c.is_dir():
            if (c / "trainer_state.json").is_file():
                cands.append((int(m.group(1)), c))
            elif remove_incomplete and is_main_process():
                shutil.rmtree(c, ignore_errors=True)  # killed while writing it
    if remove_incomplete:
        return _undamaged(sorted(cands, reverse=True))
    return str(max(cands)[1]) if cands else None


def checkpoint_damage(ckpt: str | Path) -> str | None:
    """Why a complete-looking ``checkpoint-N`` cannot be resumed from (a truncated or corrupt file), or None.

    Cheap structural checks only: trainer_state.json parses; each safetensors file is as long as its header says;
    each torch ``.pt``/``.pth`` file (optimizer, scheduler, RNG state) is a zip with its central directory intact.
    """
    import json
    import struct
    import zipfile

    c = Path(ckpt)
    try:
        json.loads((c / "trainer_state.json").read_text())
    except (OSError, ValueError) as e:
        return f"trainer_state.json is not valid JSON ({str(e)[:80]})"
    for f in sorted(c.glob("*.safetensors")):
        size = f.stat().st_size
        try:
            with open(f, "rb") as fh:  # the header only: weights may be gigabytes
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n)) if n < size else None
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (struct.error, ValueError, KeyError, TypeError, IndexError, AttributeError):
            return f"{f.name} has no readable safetensors header (truncated or damaged)"
        if size != 8 + n + end:
            return f"{f.name} is {size:,} bytes, its header says {8 + n + end:,} (truncated or damaged)"
    for f in sorted([*c.glob("*.pt"), *c.glob("*.pth")]):
        try:
            zipfile.ZipFile(f).close()
        except (zipfile.BadZipFile, OSError) as e:
            return f"{f.name} is damaged ({e})"
    return None


def resume_checkpoint(ckpt_dir: str | Path) -> str | None:
    """The newest complete, undamaged checkpoint to resume from; damaged newer ones are set aside with a warning.

    A damaged checkpoint is renamed ``damaged-checkpoint-N`` (kept for inspection, out of the Trainer's way). When
    every complete checkpoint is damaged, a one-line error names the newest.
    """
    return latest_checkpoint(ckpt_dir, remove_incomplete=True)


def _undamaged(cands: list[tuple[int, Path]]) -> str | None:
    """The first undamaged checkpoint of ``cands`` (newest first), setting aside the damaged ones before it."""
    from llmad.errors import warn

    damaged: list[tuple[Path, str]] = []
    for _, c in cands:
        why = checkpoint_damage(c)
        if why is None:
            for bad, reason in damaged:
                warn("damaged-checkpoint", f"{bad}: {reason}; resuming from the earlier {c.name} instead (the "
                                           f"damaged one is kept as {bad.parent / ('damaged-' + bad.name)})")
                if is_main_process():
                    bad.rename(bad.parent / f"damaged-{bad.name}")
            return str(c)
        damaged.append((c, why))
    if damaged:
        bad, why = damaged[0]
        raise LlmadError(f"--resume: checkpoint {bad} is damaged ({why}) and no earlier complete checkpoint is left; "
                         f"delete {bad.parent} to train from the start, or use another --out")
    return None


@dataclass
class TrainOutcome:
    """What one ``Trainer.train`` call left: the trained model, its state, timing and where it resumed from."""

    model: Any
    state: Any
    metrics: dict[str, float]
    world_size: int
    train_s: float
    paused: bool
    resumed_from: str | None
    start_step: int
    class_weights: list[float] | None
    validation_scores: np.ndarray | None = None  # the final (best) model's own evaluation, in val_ds order


def train_model(model: Any, tokenizer: Any, cfg: SFTConfig, train_ds: EncodedDataset,
                val_ds: EncodedDataset | None, ckpt_dir: Path, device: str, mp: dict[str, bool], resume: bool,
                printer: Callable[[str], None], labels: np.ndarray) -> TrainOutcome:
    """Run ``Trainer`` (early stopping on ``val_ds``, time budget, checkpoints under ``ckpt_dir``, resume)."""
    from transformers import EarlyStoppingCallback, Trainer

    from llmad.models.callbacks import time_budget_callback

    args = training_arguments(cfg, ckpt_dir, val_ds is not None, device, mp)
    budget = time_budget_callback(cfg.max_time_s, save=True)
    evals = EvalScores(tokenizer.pad_token_id)
    callbacks = [validation_line(printer), budget, evals.callback()]
    if val_ds is not None and cfg.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    loss_fn, weights = class_weighted_loss(labels) if cfg.class_weight == "balanced" else (None, None)
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                      data_collator=collator(tokenizer), processing_class=tokenizer, compute_loss_func=loss_fn,
                      compute_metrics=evals.compute_metrics if val_ds is not None else None, callbacks=callbacks)
    if not cfg.progress:
        from transformers import PrinterCallback

        # Without tqdm the Trainer prints every log dict; quiet means quiet (train_log.json keeps them).
        trainer.remove_callback(PrinterCallback)
    resume_from = latest_checkpoint(ckpt_dir, remove_incomplete=True) if resume else None
    if resume and resume_from is None:
        printer(f"no complete checkpoint under {ckpt_dir}: training from the start")
    elif resume_from:
        printer(f"resuming from {resume_from}")
    start_step = int(Path(resume_from).name.split("-")[-1]) if resume_from else 0
    t1 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    train_s = time.perf_counter() - t1
    val_scores = None
    best = trainer.state.best_model_checkpoint
    if val_ds is not None and best and not budget.paused:
        # load_best_model_at_end: the model now is the best checkpoint's, and that evaluation scored every row
        val_scores = evals.scores_at(int(Path(best).name.split("-")[-1]), val_ds.input_ids)
    return TrainOutcome(model=trainer.model, state=trainer.state, metrics=dict(result.metrics),
                        world_size=int(args.world_size), train_s=train_s, paused=bool(budget.paused),
                        resumed_from=resume_from, start_step=start_step, class_weights=weights,
                        validation_scores=val_scores)


__all__ = ["is_main_process", "check_config", "training_rows", "validation_rows", "EvalScores", "training_arguments",
           "validation_line", "class_weighted_loss", "compute_metrics", "latest_checkpoint", "checkpoint_damage",
           "resume_checkpoint", "train_model", "TrainOutcome", "THRESHOLD_OBJECTIVES"]
