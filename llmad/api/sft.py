"""Python API behind ``llmad sft`` and ``llmad predict``: ``run_sft(cfg)`` and ``run_predict(...)``.

``run_sft`` = load split -> ``SFTDetector.fit`` (checkpoints under ``<out>/checkpoints``) -> threshold on validation
-> test metrics -> ``<out>/model`` + config.json, metrics.json, predictions.csv, provenance.json (metrics.json last).
The CLI, recipes and the harness call this, so a run from any of them is the same run.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from llmad.config import DataConfig
from llmad.detectors.sft.detector import SFTConfig, SFTDetector, _is_main_process
from llmad.errors import LlmadError

# Settings that may change between an interrupted run and its --resume without changing what is trained.
_RESUME_FREE = {"max_time_s", "progress", "logging_steps", "extra"}


@dataclass
class SFTRunConfig:
    """One ``llmad sft`` run: data + fine-tuning settings + where outputs go."""

    data: DataConfig = field(default_factory=lambda: DataConfig(spec="flowbench:1000genome", split="run"))
    sft: SFTConfig = field(default_factory=SFTConfig)
    out: str | None = None  # default runs/sft/<workflow>-<timestamp>
    resume: bool = False
    keep_checkpoints: bool = False  # delete <out>/checkpoints once the final model is saved
    save_model: bool = True


def needs_context(template: str) -> bool:
    """Whether a job template reads the ``ctx_*`` peer features."""
    from llmad.render import reads_context

    return reads_context(template)


def load_run_split(data: DataConfig, template: str, causal: bool = False):
    """The split of ``data``, with peer features computed on the whole table when the template needs them."""
    from llmad.data import load_split

    return load_split(data.spec, split=data.split, seed=data.seed, data_dir=data.data_dir,
                      test_workflow=data.test_workflow, limit=data.limit, context=needs_context(template),
                      causal=causal)


def predictions_frame(jobs: pd.DataFrame, scores: np.ndarray, threshold: float) -> pd.DataFrame:
    """Per-job output rows: ids, label, anomaly type, score, 0/1 prediction."""
    cols = [c for c in ("workflow", "run_id", "job_id", "label", "anomaly_type") if c in jobs.columns]
    out = jobs[cols].copy().reset_index(drop=True)
    out["score"] = scores
    out["prediction"] = (np.asarray(scores) >= threshold).astype(int)
    return out


def _check_resume(out: Path, cfg: SFTRunConfig) -> None:
    """A resumed run must train the same thing as the interrupted one."""
    prev_file = out / "sft_run.json"
    if not prev_file.is_file():
        return
    prev = json.loads(prev_file.read_text())
    now = json.loads(json.dumps(asdict(cfg), default=str))
    diffs = []
    for part in ("data", "sft"):
        for k, v in now[part].items():
            if k in _RESUME_FREE:
                continue
            if prev.get(part, {}).get(k) != v:
                diffs.append(f"{part}.{k}: {prev.get(part, {}).get(k)!r} -> {v!r}")
    if diffs:
        raise LlmadError(f"--resume {out}: settings differ from the interrupted run ({'; '.join(diffs[:5])}); "
                         f"resume with the same options or use another --out")


def run_sft(cfg: SFTRunConfig, printer: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, threshold on validation, evaluate on test, save model + run outputs; returns a summary dict."""
    from llmad.io import write_json
    from llmad.metrics.classification import classification_report, timed_scoring
    from llmad.rundir import default_out, peak_rss_mb, write_run

    t0 = time.perf_counter()
    wf = cfg.data.spec.split(":", 1)[-1].replace(",", "+").replace("/", "_")
    out = Path(cfg.out) if cfg.out else default_out("sft", wf)
    if not cfg.resume and (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()):
        raise LlmadError(f"{out} holds checkpoints of an earlier run: pass --resume to continue it, "
                         f"or choose another --out")
    if cfg.resume:
        _check_resume(out, cfg)
    if _is_main_process():
        write_json(out / "sft_run.json", cfg)
    split = load_run_split(cfg.data, cfg.sft.template, cfg.sft.causal)
    printer(f"data {cfg.data.spec}: {split.description}; sizes {split.sizes()}")
    det = SFTDetector(cfg.sft)
    det.fit(split.train, split.validation, output_dir=out, resume=cfg.resume, printer=printer)
    info = dict(det.train_info_)
    if det.paused_:
        msg = (f"paused after {info['train_s']:.0f} s at step {info['steps']} (max_time_s): "
               f"continue with --resume --out {out}")
        if _is_main_process():
            write_json(out / "paused.json", {"step": info["steps"], "epoch": info["epochs_done"], "message": msg})
        printer(msg)
        return {"out": str(out), "paused": True, "train_info": info}
    if not _is_main_process():
        return {"out": str(out), "paused": False, "rank": "worker"}
    (out / "paused.json").unlink(missing_ok=True)
    thr = float(det.threshold_)
    test = split.test
    test_scores, ms_per_job = timed_scoring(det.score, test)
    val_scores = getattr(det, "validation_scores_", None)
    if val_scores is None:
        val_scores = det.score(split.validation)
    metrics: dict[str, Any] = {
        "method": "sft", "model": cfg.sft.model, "template": cfg.sft.template, "split": split.kind,
        "data": cfg.data.spec, "threshold": thr, "threshold_objective": cfg.sft.threshold_objective,
        "test": classification_report(test["label"], test_scores, threshold=thr,
                                      anomaly_types=test["anomaly_type"]),
        # The paper reports argmax predictions (threshold 0.5): given for comparison with its tables.
        "test_argmax": classification_report(test["label"], test_scores, threshold=0.5),
        "validation": classification_report(split.validation["label"], val_scores, threshold=thr),
        "sizes": split.sizes(), "split_info": {k: v for k, v in split.info.items() if "examples" not in k},
        "train": {k: v for k, v in info.items() if k != "log_history"},
        "inference_jobs_per_s": 1000.0 / ms_per_job if ms_per_job > 0 else float("nan"),
        "inference_ms_per_job": ms_per_job,
        "peak_rss_mb": peak_rss_mb(),
        "wall_s": time.perf_counter() - t0,
    }
    if cfg.save_model:
        det.save(out / "model")
    write_json(out / "train_log.json", det.trainer_state_["log_history"])
    if not cfg.keep_checkpoints:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    t = metrics["test"]
    summary = (f"sft {cfg.sft.model} [{cfg.sft.template}] on {cfg.data.spec} ({split.kind} split): test accuracy "
               f"{t['accuracy']:.4f} F1 {t['f1']:.4f} ROC-AUC {t.get('roc_auc', float('nan')):.4f} "
               f"(threshold {thr:.3f}); train {info['train_s']:.0f} s, {metrics['inference_jobs_per_s']:.0f} jobs/s "
               f"scoring; outputs in {out}")
    write_run(out, config={"run": cfg, "split": split.kind, "split_description": split.description},
              metrics=metrics, predictions=predictions_frame(test, test_scores, thr), summary=None)
    printer(summary)
    return {"out": str(out), "paused": False, "metrics": metrics, "detector": det}


def run_predict(model_dir: str | Path, spec: str, *, data_dir: str | None = None, split: str | None = None,
                part: str = "test", seed: int = 0, test_workflow: str | None = None, limit: int | None = None,
                out: str | Path | None = None, quantize: bool = False,
                printer: Callable[[str], None] = print) -> dict[str, Any]:
    """Score the jobs of ``spec`` (or one part of a split) with a saved SFT model; write predictions + metrics."""
    from llmad.data.context import add_context_features
    from llmad.data.flowbench import load_jobs
    from llmad.metrics.classification import classification_report, timed_scoring
    from llmad.rundir import default_out, peak_rss_mb, write_run

    det = SFTDetector.load(model_dir, quantize=quantize)
    template = det._template_ref()
    if split:
        data = DataConfig(spec=spec, data_dir=data_dir, split=split, seed=seed, test_workflow=test_workflow,
                          limit=limit)
        jobs = load_run_split(data, template, det.config.causal).part(part)
    else:
        jobs = load_jobs(spec, data_dir)
        if limit and len(jobs) > limit:
            jobs = jobs.sample(n=limit, random_state=seed).reset_index(drop=True)
        if needs_context(template):
            jobs = add_context_features(jobs, causal=det.config.causal)
    scores, ms = timed_scoring(det.score, jobs)
    thr = float(det.threshold_)
    metrics = {"method": "sft", "model_dir": str(model_dir), "data": spec, "split": split,
               "part": part if split else None,
               "threshold": thr, "jobs": int(len(jobs)), "inference_ms_per_job": ms,
               "inference_jobs_per_s": 1000.0 / ms if ms > 0 else float("nan"), "quantized": quantize,
               "peak_rss_mb": peak_rss_mb()}
    if "label" in jobs.columns and jobs["label"].notna().all():
        metrics["report"] = classification_report(jobs["label"], scores, threshold=thr,
                                                  anomaly_types=jobs.get("anomaly_type"))
    wf = spec.split(":", 1)[-1].replace(",", "+").replace("/", "_")
    out = Path(out) if out else default_out("predict", wf)
    preds = predictions_frame(jobs, scores, thr)
    write_run(out, config={"model_dir": str(model_dir), "data": spec, "split": split, "part": part, "seed": seed,
                           "limit": limit, "quantize": quantize}, metrics=metrics, predictions=preds)
    r = metrics.get("report")
    line = (f"scored {len(jobs)} jobs ({metrics['inference_jobs_per_s']:.0f} jobs/s), "
            f"{int(preds['prediction'].sum())} flagged")
    if r:
        line += f"; accuracy {r['accuracy']:.4f} F1 {r['f1']:.4f}"
    printer(f"{line}; outputs in {out}")
    return {"out": str(out), "metrics": metrics, "predictions": preds}


__all__ = ["SFTRunConfig", "run_sft", "run_predict", "load_run_split", "needs_context", "predictions_frame"]
