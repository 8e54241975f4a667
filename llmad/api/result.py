"""What every run function returns, and the one per-item predictions frame they all write."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ID_COLUMNS = ("workflow", "run_id", "job_id", "label", "anomaly_type")


@dataclass
class RunResult:
    """One run's outcome: flat test metrics, per-item predictions, method details, artifacts, output folder."""

    metrics: dict[str, Any]  # flat: accuracy, precision, recall, f1, roc_auc, pr_auc, ... on test
    predictions: pd.DataFrame | None = None  # ids, label, anomaly_type, score, prediction
    details: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> path relative to out_dir
    out_dir: Path | None = None
    summary: str = ""  # the one line a CLI prints


def data_dir_used(data_dir: str | Path | None) -> Path | None:
    """The data folder a run read (the explicit one, else the first found), for config.json; None when none."""
    from llmad.data.specs import find_data_dir
    from llmad.errors import LlmadError

    try:
        return find_data_dir(data_dir)
    except LlmadError:
        return Path(data_dir) if data_dir is not None else None


def predictions_frame(items: pd.DataFrame, scores: Any, threshold: float | None = None, *,
                      predictions: Any = None, keys: Any = None,
                      id_columns: tuple[str, ...] = ID_COLUMNS) -> pd.DataFrame:
    """Per-item rows: ``key`` (when given), every one of ``id_columns`` (empty where ``items`` lacks it, so each
    command's predictions.csv starts with the same columns), ``score`` and the 0/1 ``prediction``.

    ``prediction`` is ``score >= threshold`` unless ``predictions`` gives it (alert-based replays, k-of-n rules).
    """
    out = pd.DataFrame({c: items[c].to_numpy() if c in items.columns else np.full(len(items), "", dtype=object)
                        for c in id_columns}, index=range(len(items)))
    if keys is not None:
        out.insert(0, "key", np.asarray(keys))
    out["score"] = np.asarray(scores, dtype=float)
    if predictions is not None:
        out["prediction"] = np.asarray(predictions).astype(int)
    elif threshold is not None:
        out["prediction"] = (out["score"] >= threshold).astype(int)
    else:
        raise ValueError("predictions_frame needs a threshold or explicit predictions")
    return out


def finish_trained_run(out: Path, cfg: Any, det: Any, lm: Any, split: Any, test: Any, test_scores: Any,
                       val_scores: Any, thr: float, metrics: dict, summary: str, **details: Any) -> RunResult:
    """The end of a fine-tuning run (sft text-only or fusion): model, Trainer log, checkpoints dropped unless kept,
    the run folder (``cfg``: an ``llmad.api.sft.SFTRunConfig``).

    ``det`` is what is saved and returned; ``lm`` the fine-tuned encoder whose Trainer log is kept (the same object
    for a text-only run)."""
    from llmad.io import write_json
    from llmad.rundir import write_run

    artifacts = {}
    if cfg.save_model:
        det.save(out / "model")
        artifacts["model"] = "model"
    write_json(out / "train_log.json", lm.trainer_state_["log_history"])
    if not cfg.keep_checkpoints:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        shutil.rmtree(out / "retry", ignore_errors=True)
    preds = predictions_frame(test, test_scores, thr)
    write_run(out, config={"run": cfg, "split": split.kind, "split_description": split.description},
              metrics=metrics, predictions=preds, summary=None, command="sft",
              data_dir=data_dir_used(cfg.data.data_dir))
    artifacts.update(train_log="train_log.json", predictions="predictions.csv", metrics="metrics.json")
    details = {"paused": False, **details, "detector": det, "threshold": thr, "split": split.kind,
               "validation_scores": val_scores}
    return RunResult(metrics, preds, details=details, artifacts=artifacts, out_dir=out, summary=summary)
