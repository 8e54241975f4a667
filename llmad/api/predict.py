"""``llmad predict`` as a function: score jobs with any saved job detector (sft, icl, baseline) and write the run.

The detector is opened through the registry (``llmad.detectors.load``), so every kind that scores job rows works
the same way; metric-window detectors are refused with a pointer to ``llmad numeric``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from llmad.api.hooks import RunHooks
from llmad.api.result import RunResult, data_dir_used, predictions_frame
from llmad.config import DataConfig
from llmad.data.specs import spec_name
from llmad.errors import LlmadError


def job_template(detector) -> tuple[str | None, bool]:
    """The job template a detector renders (None for feature-based ones) and whether its peers are causal."""
    cfg = getattr(detector, "config", None)
    template = getattr(detector, "_template_path", None) or getattr(cfg, "template", None)
    return template, bool(getattr(cfg, "causal", getattr(detector, "causal", False)))


def reads_peers(detector) -> bool:
    """True when the detector's score reads peer (``ctx_*``) features: a context template or context features."""
    from llmad.stream.context import detector_inputs, detector_uses_context

    return detector_uses_context(detector, detector_inputs(detector))


def run_predict(model_dir: str | Path, spec: str, *, data_dir: str | None = None, split: str | None = None,
                part: str = "test", seed: int = 0, test_workflow: str | None = None, limit: int | None = None,
                out: str | Path | None = None, quantize: bool = False, hooks: RunHooks | None = None,
                printer: Callable[[str], None] | None = None, force: bool = False) -> RunResult:
    """Score the jobs of ``spec`` (or one ``part`` of split kind ``split``) with a saved detector; write
    predictions + metrics (``metrics["report"]`` when the jobs are labelled). An ``out`` holding an earlier run is
    refused before any work unless ``force``."""
    from llmad.data import load_jobs, load_split
    from llmad.data.context import add_context_features
    from llmad.data.splits import subsample
    from llmad.detectors import load
    from llmad.metrics.classification import classification_report, timed_scoring
    from llmad.rundir import check_out, default_out, peak_rss_mb, quiet_warnings, write_run

    hooks = RunHooks.of(hooks, printer)
    out = check_out(out or default_out("predict", spec_name(spec)), force=force)
    with quiet_warnings(out, hooks.quiet):
        det = load(model_dir, **({"quantize": True} if quantize else {}))
        kind = getattr(det, "kind", type(det).__name__)
        if getattr(det, "data_kind", "jobs") != "jobs":
            raise LlmadError(f"{model_dir}: a {kind} detector scores metric windows, not jobs; use llmad numeric")
        _, causal = job_template(det)
        context = reads_peers(det)  # computed on whole runs below, before any --limit sample
        hooks.stage("loading data")
        if split:
            data = DataConfig(spec=spec, data_dir=data_dir, split=split, seed=seed, test_workflow=test_workflow,
                              limit=limit)
            jobs = load_split(data.spec, split=data.split, seed=data.seed, data_dir=data.data_dir,
                              test_workflow=data.test_workflow, limit=data.limit, context=context,
                              causal=causal).part(part)
        else:
            jobs = load_jobs(spec, data_dir)
            if context:  # peers from every job of each run first: --limit picks rows, never peers
                jobs = add_context_features(jobs, causal=causal)
            if limit and len(jobs) > limit:
                jobs = subsample(jobs, limit, seed)
        hooks.stage(f"scoring {len(jobs)} jobs")
        scores, ms = timed_scoring(det.score, jobs)
    thr = float(det.threshold_)
    metrics = {"method": kind, "model_dir": str(model_dir), "data": spec, "split": split,
               "part": part if split else None,
               "threshold": thr, "jobs": int(len(jobs)), "inference_ms_per_job": ms,
               "inference_jobs_per_s": 1000.0 / ms if ms > 0 else float("nan"), "quantized": quantize,
               "peak_rss_mb": peak_rss_mb()}
    if "label" in jobs.columns and jobs["label"].notna().all():
        metrics["report"] = classification_report(jobs["label"], scores, threshold=thr,
                                                  anomaly_types=jobs.get("anomaly_type"))
    preds = predictions_frame(jobs, scores, thr)
    write_run(out, config={"model_dir": str(model_dir), "data": spec, "split": split, "part": part, "seed": seed,
                           "limit": limit, "quantize": quantize, "test_workflow": test_workflow},
              metrics=metrics, predictions=preds, command="predict", data_dir=data_dir_used(data_dir))
    r = metrics.get("report")
    line = (f"scored {len(jobs)} jobs ({metrics['inference_jobs_per_s']:.0f} jobs/s), "
            f"{int(preds['prediction'].sum())} flagged")
    if r:
        line += f"; accuracy {r['accuracy']:.4f} F1 {r['f1']:.4f}"
    return RunResult(metrics, preds, details={"detector": det, "threshold": thr},
                     artifacts={"predictions": "predictions.csv", "metrics": "metrics.json"}, out_dir=out,
                     summary=f"{line}; outputs in {out}")
