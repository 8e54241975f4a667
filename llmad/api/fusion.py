"""``llmad sft --fusion stack``: the stacked LM + numbers detector (``llmad.detectors.fusion.StackDetector``) fitted
on a split whose peer features come from whole runs, test metrics, and the run folder (same layout as ``llmad sft``:
config.json, metrics.json last, predictions.csv, provenance.json, ``model/``)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from llmad.api.hooks import RunHooks
from llmad.api.result import RunResult, finish_trained_run
from llmad.data.splits import Split


def run_stack(cfg: Any, out: Path, split: Split, hooks: RunHooks) -> RunResult:
    """Fit the stack on ``split`` (cross-fitted LM folds by run), threshold on validation, score test, write ``out``.

    ``cfg`` is the ``llmad.api.sft.SFTRunConfig`` of the run."""
    from llmad.detectors.fusion.stack import StackDetector
    from llmad.metrics.classification import classification_report, timed_scoring
    from llmad.rundir import peak_rss_mb

    t0 = time.perf_counter()
    det = StackDetector.from_config(cfg.stack, cfg.sft, seed=cfg.sft.seed)
    scoring = "one full LM" if cfg.stack.test_lm == "full" else "their mean scores validation and test"
    hooks.stage(f"fusion stack: {cfg.stack.folds} cross-fitted LM folds + {scoring} ({cfg.sft.model})")
    det.fit(split.train, split.validation, output_dir=out / "checkpoints", resume=cfg.resume, printer=hooks.log)
    thr = float(det.threshold_)
    test = split.test
    hooks.stage(f"scoring {len(test)} test jobs")
    parts: dict[str, Any] = {}

    def score(items: Any) -> Any:
        parts["lm"], final = det.score_parts(items)
        return final

    test_scores, ms = timed_scoring(score, test)
    validation = split.validation  # the stack chose its tree and threshold on every validation row
    val_scores = getattr(det, "validation_scores_", None)
    if val_scores is None:
        val_scores = det.score(validation)
    metrics: dict[str, Any] = {
        "method": "fusion-stack", "model": cfg.sft.model, "template": cfg.sft.template, "split": split.kind,
        "data": cfg.data.spec, "threshold": thr, "threshold_objective": cfg.sft.threshold_objective,
        "test": classification_report(test["label"], test_scores, threshold=thr, anomaly_types=test["anomaly_type"]),
        "validation": classification_report(validation["label"], val_scores, threshold=thr),
        "sizes": split.sizes(), "split_info": {k: v for k, v in split.info.items() if "examples" not in k},
        "fusion": {"kind": "stack", "test_lm": det.test_lm, "folds": det.folds_,
                   "cross_fit_lm_train_roc_auc": det.train_info_["cross_fit_auc"],
                   "tree": det.tree_name_, "tree_validation": det.train_info_["tree_validation"],
                   "features": det.input_columns(),
                   # The text-only score alone at its own validation threshold: what the stack adds to the text
                   # model (the full-train LM, or the fold LMs' mean with test_lm folds).
                   "lm_only_test": classification_report(test["label"], parts["lm"],
                                                         threshold=float(det.lm_threshold_))},
        "train": {k: v for k, v in det.lm_.train_info_.items() if k != "log_history"},
        # The paper's bias measure of the fine-tuned LM inside the stack (the first scoring one), as llmad sft
        # reports.
        "bias": getattr(det.lm_, "bias_", None),
        "inference_jobs_per_s": 1000.0 / ms if ms > 0 else float("nan"), "inference_ms_per_job": ms,
        "peak_rss_mb": peak_rss_mb(), "wall_s": time.perf_counter() - t0,
    }
    write_lm_scores(out / "lm_scores.csv", split, det.train_lm_scores_, det.validation_lm_scores_, parts["lm"])
    t = metrics["test"]
    summary = (f"fusion stack [{cfg.sft.model}, {cfg.sft.template}, {det.tree_name_}] on {cfg.data.spec} "
               f"({split.kind} split): test "
               f"accuracy {t['accuracy']:.4f} F1 {t['f1']:.4f} ROC-AUC {t.get('roc_auc', float('nan')):.4f} "
               f"(threshold {thr:.3f}); {metrics['inference_jobs_per_s']:.0f} jobs/s scoring; outputs in {out}")
    return finish_trained_run(out, cfg, det, det.lm_, split, test, test_scores, val_scores, thr, metrics, summary)


def write_lm_scores(path: Path, split: Split, train: Any, validation: Any, test: Any) -> None:
    """Every LM score the stack's tree read (train: cross-fitted), keyed by part and job: the tree layer can be
    re-fitted or ablated on a CPU from a GPU run's folder, without its LM weights."""
    import numpy as np
    import pandas as pd

    from llmad.api.result import ID_COLUMNS
    from llmad.io import write_frame_csv

    frames = []
    for name, items, scores in (("train", split.train, train), ("validation", split.validation, validation),
                                ("test", split.test, test)):
        if items is None or not len(items):
            continue
        frame = pd.DataFrame({c: items[c].to_numpy() for c in ID_COLUMNS if c in items.columns})
        frames.append(frame.assign(part=name, lm_score=np.nan if scores is None else np.asarray(scores, float)))
    write_frame_csv(path, pd.concat(frames, ignore_index=True))


__all__ = ["run_stack", "write_lm_scores"]
