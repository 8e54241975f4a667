"""Python API behind `llmad baseline`: data config + baseline config -> a run folder with metrics."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from llmad.config import DataConfig
from llmad.detectors.baselines import METHODS, BaselineConfig, BaselineDetector, feature_columns
from llmad.errors import LlmadError


def run_baseline(data: DataConfig, cfg: BaselineConfig, out: str | Path | None = None) -> dict[str, Any]:
    """Fit on train, threshold on validation, score test; write the run folder; return metrics."""
    from llmad.data import load_split
    from llmad.metrics.classification import classification_report, timed_scoring
    from llmad.rundir import Timer, default_out, write_run

    if cfg.method not in METHODS:
        raise LlmadError(f"unknown baseline method {cfg.method!r}; expected one of {', '.join(METHODS)}")
    feature_columns(cfg.features)
    split = load_split(data.spec, split=data.split, seed=data.seed, data_dir=data.data_dir,
                       test_workflow=data.test_workflow, limit=data.limit, context=cfg.features == "context",
                       causal=cfg.causal)
    det = BaselineDetector.from_config(cfg)
    with Timer() as t:
        det.fit(split.train, split.validation)
    scores, ms = timed_scoring(det.score, split.test)
    test = split.test
    metrics = classification_report(test["label"], scores, threshold=det.threshold_,
                                     anomaly_types=test["anomaly_type"])
    metrics.update(method=det.name, split=split.kind, split_description=split.description,
                   split_info=split.info, fit_seconds=t.seconds, latency_ms_per_job=ms)
    preds = pd.DataFrame({"run_id": test["run_id"], "job_id": test["job_id"], "label": test["label"],
                          "anomaly_type": test["anomaly_type"], "score": scores,
                          "prediction": (scores >= det.threshold_).astype(int)})
    name = data.spec.split(":", 1)[-1].replace("/", "_")
    out_dir = Path(out) if out else default_out("baseline", f"{name}-{cfg.method}-{cfg.features}-{data.split}")
    summary = (f"{cfg.method}/{cfg.features} on {data.spec} [{split.kind} split]: acc {metrics['accuracy']:.4f} "
               f"f1 {metrics['f1']:.4f} roc_auc {metrics['roc_auc']:.4f} -> {out_dir}")
    det.save(out_dir / "model")  # loadable by llmad.detectors.load_detector (replay, predict)
    write_run(out_dir, config={"data": data, "baseline": cfg}, metrics=metrics, predictions=preds, summary=summary)
    metrics["out_dir"] = str(out_dir)
    return metrics
