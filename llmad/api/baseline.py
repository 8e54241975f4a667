"""Python API behind `llmad baseline`: data config + baseline config -> a run folder and a ``RunResult``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from llmad.api.hooks import RunHooks
from llmad.api.result import RunResult, data_dir_used, predictions_frame
from llmad.config import DataConfig
from llmad.data.specs import spec_name
from llmad.detectors.baselines import METHODS, BaselineConfig, BaselineDetector, feature_columns
from llmad.errors import LlmadError

PARTS = ("train", "validation", "test")


def run_baseline(data: DataConfig, cfg: BaselineConfig, *, out: str | Path | None = None, split: Any = None,
                 limits: dict[str, int | None] | None = None, hooks: RunHooks | None = None,
                 force: bool = False) -> RunResult:
    """Fit on train, threshold on validation, score test; write the run folder (``out``, else runs/baseline/...).

    ``split``: an already-loaded ``llmad.data.splits.Split`` (else loaded from ``data``); ``limits``: at most
    ``{part: n}`` rows per part, a seeded subsample (seed = ``data.seed``); ``force``: replace an earlier run in
    ``out`` (else such an ``out`` is refused before any work).
    """
    from llmad.data import load_split
    from llmad.data.splits import subsample
    from llmad.metrics.classification import classification_report, timed_scoring
    from llmad.rundir import Timer, check_out, default_out, quiet_warnings, write_run

    hooks = RunHooks.of(hooks)
    name = spec_name(data.spec)
    out_dir = check_out(out or default_out("baseline", f"{name}-{cfg.method}-{cfg.features}-{data.split}"),
                        force=force)
    if cfg.method not in METHODS:
        raise LlmadError(f"unknown baseline method {cfg.method!r}; expected one of {', '.join(METHODS)}")
    feature_columns(cfg.features)
    with quiet_warnings(out_dir, hooks.quiet):
        if split is None:
            split = load_split(data.spec, split=data.split, seed=data.seed, data_dir=data.data_dir,
                               test_workflow=data.test_workflow, limit=data.limit, columns=data.columns,
                               context=cfg.features == "context", causal=cfg.causal)
        train, validation, test = (subsample(split.part(p), (limits or {}).get(p) or None, data.seed) for p in PARTS)
        det = BaselineDetector.from_config(cfg)
        hooks.stage(f"fitting {cfg.method} on {len(train)} jobs")
        with Timer() as t:
            det.fit(train, validation)
        hooks.stage(f"scoring {len(test)} test jobs")
        scores, ms = timed_scoring(det.score, test)
    metrics = classification_report(test["label"], scores, threshold=det.threshold_,
                                     anomaly_types=test["anomaly_type"])
    metrics.update(method=det.name, split=split.kind, split_description=split.description,
                   split_info=split.info, fit_seconds=t.seconds, latency_ms_per_job=ms)
    preds = predictions_frame(test, scores, det.threshold_)
    summary = (f"{cfg.method}/{cfg.features} on {data.spec} [{split.kind} split]: acc {metrics['accuracy']:.4f} "
               f"f1 {metrics['f1']:.4f} roc_auc {metrics['roc_auc']:.4f} -> {out_dir}")
    det.save(out_dir / "model")  # loadable by llmad.detectors.load (replay, predict)
    write_run(out_dir, config={"data": data, "baseline": cfg}, metrics=metrics, predictions=preds,
              command="baseline", data_dir=data_dir_used(data.data_dir))
    details = {"split": split.kind, "split_description": split.description, "split_sizes": split.sizes(),
               "threshold": det.threshold_, "n_train": int(len(train)), "n_validation": int(len(validation))}
    return RunResult(metrics, preds, details=details,
                     artifacts={"model": "model", "predictions": "predictions.csv", "metrics": "metrics.json"},
                     out_dir=out_dir, summary=summary)
