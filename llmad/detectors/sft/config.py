"""Settings of one SFT fine-tuning run (``SFTConfig``) and the ``--freeze`` grammar; defaults are llmad's recipe."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from llmad.config import option
from llmad.errors import LlmadError

FREEZE_HELP = "none | embeddings | N-layers (embeddings + the first N layers) | encoder (all but pooler + head)"


@dataclass
class SFTConfig:
    """Settings of one fine-tuning run; defaults are llmad's recipe (see ``llmad.detectors.sft.detector``)."""

    model: str = option("minilm", "offline alias (minilm), HF hub id or local folder")
    template: str = option("compact", "paper | compact | context | PATH.j2")
    causal: bool = option(False, "context template: peers finished no later than the job only", cli=False)
    max_length: int | None = option(None, "token budget per job; None: fits the longest train sentences (99.9th "
                                          "percentile), so no template is cut silently")
    epochs: float = option(3.0, "training epochs")
    lr: float = option(1e-4, "learning rate")
    batch_size: int = option(32, "training batch size")
    eval_batch_size: int = option(128, "scoring / validation batch size", cli=False)
    weight_decay: float = option(0.01, "AdamW weight decay", cli=False)
    warmup_ratio: float = option(0.06, "share of the steps spent warming up the learning rate", cli=False)
    freeze: str = option("embeddings", FREEZE_HELP)
    lora: int = option(0, "LoRA rank; 0 = train the (unfrozen) weights themselves")
    lora_alpha: int | None = option(None, "LoRA alpha; None = 2 * rank", cli=False)
    lora_dropout: float = option(0.1, "LoRA dropout", cli=False)
    init_from: str | None = option(None, "a saved llmad SFT model (or HF folder) to start from")
    prefix_augment: bool = option(False, "also train on partial jobs (later fields NaN, as llmad.data.reveal "
                                         "reveals them to a stream)", flag="--prefix-augment/--no-prefix-augment")
    prefix_copies: int = option(1, "partial copies per training job", cli=False)
    debias_augment: float = option(0.0, "extra content-free training sentences (empty, all-missing job, prefixes "
                                        "of it) as a share of the training rows, half labelled normal, half "
                                        "abnormal: pulls P(abnormal) - P(normal) on no evidence toward 0 "
                                        "(llmad.detectors.sft.debias)", cli=False)
    group_by_length: bool = option(True, "batch jobs of similar token length together", cli=False)
    early_stopping_patience: int = option(2, "evaluations without improvement; 0 disables early stopping",
                                          flag="--patience")
    eval_during_training: bool = option(True, "False: no validation passes while training (the paper's recipe)",
                                        cli=False)
    best_metric: str = option("loss", "validation metric that picks the best checkpoint: loss | roc_auc | f1 | "
                                      "accuracy", cli=False)
    eval_steps: int | None = option(None, "evaluate + checkpoint every N steps; None = once per epoch")
    max_steps: int = option(-1, "> 0 overrides epochs (smoke runs)")
    max_time_s: float | None = option(None, "pause after this many seconds with a checkpoint; continue with resume",
                                      flag="--max-time")
    precision: str = option("auto", "auto (CUDA bf16/fp16, CPU fp32) | fp32 | bf16 (also CPU autocast) | fp16 (CUDA)")
    class_weight: str = option("balanced", "balanced (cross-entropy weighted by inverse class frequency of train; the "
                                           "default since the sweep in bench/results/sft.md) | none")
    train_limit: int | None = option(None, "seeded subsample of train rows (stated in outputs)")
    val_limit: int | None = option(None, "seeded subsample of validation rows for early stopping and the threshold "
                                         "(quick CPU runs; stated in outputs)")
    seed: int = option(0, "seed of training, subsampling and augmentation")
    collapse_retry: bool = option(True, "a collapsed run (validation ROC-AUC < 0.6, or one class flagged at the "
                                        "threshold) retrains once with lower lr + balanced class weight",
                                  flag="--collapse-retry/--no-collapse-retry")
    threshold_objective: str = option("f1", "f1 | accuracy | youden | argmax (0.5, as the paper)",
                                      flag="--threshold")
    trust_remote_code: bool = option(False, "allow model code from the hub", flag="--trust-remote-code")
    save_total_limit: int = option(2, "checkpoints kept while training", cli=False)
    logging_steps: int = option(50, "Trainer log interval in steps", cli=False)
    progress: bool = option(True, "progress bars (the CLI's --quiet turns them off)", flag="--quiet")
    extra: dict[str, Any] = option(help="free-form notes carried into outputs", factory=dict, cli=False)


def parse_freeze(spec: str) -> tuple[str, int]:
    """``none`` | ``embeddings`` | ``encoder`` | ``N`` / ``N-layers`` -> (kind, N)."""
    s = str(spec).strip().lower()
    if s in ("none", "embeddings", "encoder"):
        return s, 0
    m = re.fullmatch(r"(\d+)(?:[-_ ]?layers?)?", s)
    if m:
        return "layers", int(m.group(1))
    raise LlmadError(f"--freeze {spec!r}: expected {FREEZE_HELP}")


__all__ = ["SFTConfig", "FREEZE_HELP", "parse_freeze"]
