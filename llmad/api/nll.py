"""Python API behind ``llmad nll``: ``run_nll(cfg)`` fine-tunes a causal LM on the train part's rows (labels unused;
``--normal-only``: the semi-supervised mode), chooses a threshold by a label-free rule (or on validation labels),
scores the test part and writes the run folder: config.json, predictions.csv (score, prediction, ``nll_<field>``,
``top_field``), provenance.json, metrics.json (last; ``threshold_rule``, per-field NLL summary) and ``model/``
(opened by ``llmad predict`` / ``replay`` / ``watch``).

Job tables (``flowbench:...``) use ``NLLDetector``; metric-window specs (``nezha:``, ``smd:``, ``asd:``, ``csv:``)
run through ``llmad.api.numeric.run_numeric`` with the ``WindowNLLDetector`` (method ``nll``), so windows get the
numeric track's splits, point thresholds and time-series metrics.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmad.api.hooks import RunHooks
from llmad.api.result import RunResult, predictions_frame
from llmad.config import DataConfig, option
from llmad.data.specs import SERIES_KINDS, parse_spec, spec_name
from llmad.detectors.nll.config import NLLConfig, parse_threshold
from llmad.errors import LlmadError


@dataclass
class NLLRunConfig:
    """One ``llmad nll`` run: data + detector settings + how much is scored + where outputs go."""

    data: DataConfig = option(help="which data (its own options)", cli=False,
                              factory=lambda: DataConfig(spec="flowbench:1000genome", split="run"))
    nll: NLLConfig = option(help="detector settings (their own options)", factory=NLLConfig, cli=False)
    test_limit: int | None = option(None, "test rows scored (seeded sample; None: all)", flag="--limit")
    val_limit: int | None = option(1000, "validation rows scored for the threshold (seeded sample)")
    window: int | None = option(None, "metric windows: window length (default as llmad numeric)")
    out: str | None = option(None, "output folder [runs/nll/<data>-<time>]")
    save_model: bool = option(True, "save the fine-tuned detector under <out>/model", cli=False)


def is_window_spec(spec: str) -> bool:
    """True for metric-window data (nezha, smd, asd, csv)."""
    return parse_spec(spec)[0] in SERIES_KINDS


def field_summary(details: pd.DataFrame, labels: np.ndarray | None, fields: list[str]) -> dict[str, Any]:
    """Per field: mean NLL (all rows; normal vs anomalous rows when labels exist) and how often it is the top field."""
    top = details["top_field"].value_counts()
    out = {}
    for f in fields:
        col = details[f"nll_{f}"]
        d = {"mean_nll": float(col.mean()) if col.notna().any() else None, "top_field_rows": int(top.get(f, 0))}
        if labels is not None and len(labels):
            for name, sel in (("normal", labels == 0), ("anomalous", labels == 1)):
                v = col[sel]
                d[f"mean_nll_{name}"] = float(v.mean()) if v.notna().any() else None
        out[f] = d
    return out


def run_nll(cfg: NLLRunConfig, *, split: Any = None, hooks: RunHooks | None = None, lm: Any = None,
            force: bool = False) -> RunResult:
    """Fit, threshold (rule of ``cfg.nll.threshold``), score test, write the run folder; see the module docstring.

    ``split``: an already-loaded split of ``cfg.data``; ``lm``: a loaded ``LoadedLM`` to fine-tune (tests). An
    ``out`` holding an earlier run is refused before any work unless ``force``."""
    hooks = RunHooks.of(hooks)
    cfg.nll.validate()
    if is_window_spec(cfg.data.spec):
        return run_nll_windows(cfg, hooks=hooks, force=force)
    from llmad.rundir import check_out, default_out, quiet_warnings

    out = check_out(cfg.out or default_out("nll", spec_name(cfg.data.spec)), force=force)
    with quiet_warnings(out, getattr(hooks, "quiet", False)):
        return _run_jobs(cfg, out, split, hooks, lm)


def _run_jobs(cfg: NLLRunConfig, out: Path, split: Any, hooks: RunHooks, lm: Any) -> RunResult:
    """The job-table run of ``run_nll`` into ``out`` (already checked)."""
    from llmad.data.splits import subsample
    from llmad.detectors.nll.detector import NLLDetector, job_fields
    from llmad.metrics.classification import classification_report
    from llmad.rundir import peak_rss_mb, write_run

    c, d = cfg.nll, cfg.data
    t_start = time.perf_counter()
    if split is None:
        from llmad.data import load_split

        hooks.stage(f"loading {d.spec}")
        needs_ctx = any(f.startswith("ctx_") for f in job_fields(c.fields))
        split = load_split(d.spec, split=d.split, seed=d.seed, data_dir=d.data_dir, test_workflow=d.test_workflow,
                           limit=d.limit, context=needs_ctx, causal=c.causal, columns=d.columns)
    val = subsample(split.validation, cfg.val_limit, d.seed)
    test = subsample(split.test, cfg.test_limit, d.seed)
    rule = parse_threshold(c.threshold)[0]
    labels_used = "train labels (normal rows only)" if c.normal_only else "none for training"
    if rule == "validation":
        labels_used += "; validation labels for the threshold"
    hooks.log(f"data {d.spec}: {split.description}; sizes {split.sizes()}; scoring {len(test)} test rows")
    det = NLLDetector(config=c)
    hooks.stage(f"fine-tuning {c.model} on {min(len(split.train), c.train_limit or len(split.train))} train rows "
                f"({'normal-only' if c.normal_only else 'labels unused'})")
    t0 = time.perf_counter()
    det.fit(split.train, val, lm=lm)
    fit_s = time.perf_counter() - t0
    hooks.stage(f"scoring {len(test)} test rows x {c.permutations} field orders")
    t0 = time.perf_counter()
    details = det.score_details(test)
    score_s = time.perf_counter() - t0
    scores = details["score"].to_numpy()
    thr = float(det.threshold_)
    y = test["label"].to_numpy().astype(int) if "label" in test else None
    metrics: dict[str, Any] = {
        "method": det.name, "supervision": det.train_info_.get("supervision"), "labels_used": labels_used,
        "model": c.model, "template": c.template, "fields": det.fields_, "permutations": c.permutations,
        "data": d.spec, "split": split.kind, "threshold": thr, "threshold_rule": det.threshold_rule_,
        "train": {k: v for k, v in det.train_info_.items() if k != "losses"},
        "sizes": split.sizes(), "test_rows": int(len(test)), "validation_rows_scored": int(len(val)),
        "fit_seconds": fit_s, "score_seconds": score_s,
        "jobs_per_s": len(test) / score_s if score_s > 0 else float("nan"),
        "peak_rss_mb": peak_rss_mb(),
    }
    if y is not None:
        metrics["test"] = classification_report(y, scores, threshold=thr,
                                                anomaly_types=test["anomaly_type"] if "anomaly_type" in test else None)
    metrics["fields_nll"] = field_summary(details, y, det.fields_)
    preds = predictions_frame(test, scores, thr)
    for col in details.columns:
        if col != "score":
            preds[col] = details[col].to_numpy()
    artifacts = {"predictions": "predictions.csv", "metrics": "metrics.json"}
    if cfg.save_model:
        det.save(out / "model")
        artifacts["model"] = "model"
    metrics["wall_s"] = time.perf_counter() - t_start
    t = metrics.get("test", {})
    worst = sorted(((v["mean_nll_anomalous"] or 0) - (v["mean_nll_normal"] or 0), f)
                   for f, v in metrics["fields_nll"].items() if v.get("mean_nll_anomalous") is not None)
    summary = (f"{det.name} {c.model} on {d.spec} ({split.kind} split, supervision "
               f"{metrics['supervision']}): test ROC-AUC {t.get('roc_auc', float('nan')):.4f} PR-AUC "
               f"{t.get('pr_auc', float('nan')):.4f} F1 {t.get('f1', float('nan')):.4f} at threshold {thr:.4g} "
               f"[{det.threshold_rule_}]"
               + (f"; field most above normal in anomalies: {worst[-1][1]} (+{worst[-1][0]:.2f} nats)" if worst
                  else "")
               + f"; {metrics['jobs_per_s']:.1f} jobs/s; outputs in {out}")
    write_run(out, config={"run": asdict(replace(cfg)), "split": split.kind, "split_description": split.description},
              metrics=metrics, predictions=preds)
    return RunResult(metrics, preds, details={"detector": det, "threshold": thr, "score_details": details,
                                              "split": split.kind},
                     artifacts=artifacts, out_dir=out, summary=summary)


def run_nll_windows(cfg: NLLRunConfig, *, hooks: RunHooks | None = None, force: bool = False) -> RunResult:
    """Metric windows: ``llmad.api.numeric.run_numeric`` with method ``nll`` (validation points or contamination)."""
    from llmad.api.numeric import NumericConfig, run_numeric
    from llmad.rundir import default_out

    name, q = parse_threshold(cfg.nll.threshold)
    if name == "train-quantile":
        raise LlmadError("metric windows: --threshold train-quantile is not available; use validation or "
                         "contamination:Q (the numeric track's rules)")
    rule = "val" if name == "validation" else f"contamination:{q:g}" if name == "contamination" else None
    if rule is None:
        raise LlmadError("metric windows: --threshold takes validation or contamination:Q")
    split = cfg.data.split if cfg.data.split in ("time", "fault") else "time"
    nll = cfg.nll if cfg.nll.template != "job" else replace(cfg.nll, template="window")
    out = cfg.out or str(default_out("nll", spec_name(cfg.data.spec)))
    num = NumericConfig(method="nll", data=cfg.data.spec, data_dir=cfg.data.data_dir, split=split,
                        seed=cfg.data.seed, threshold=rule, out=out, shots=nll.train_limit, window=cfg.window,
                        extra={"config": asdict(nll)})
    return run_numeric(num, hooks=hooks, force=force)


__all__ = ["NLLRunConfig", "run_nll", "run_nll_windows", "is_window_spec", "field_summary"]
