"""One adapter per method kind: declare to the leakage guard what the run learns from, make one ``llmad.api`` call
on the harness's cached split (so the guard checks the very rows the run uses), and map its ``RunResult`` onto the
flat test metrics the report reads."""
from __future__ import annotations

import json
import time
from typing import Any, Callable

import numpy as np
import pandas as pd

from llmad.api.hooks import RunHooks
from llmad.api.result import ID_COLUMNS, RunResult, predictions_frame
from llmad.config import DataConfig, from_dict
from llmad.data.splits import subsample
from llmad.errors import LlmadError, warn
from llmad.harness.context import RunContext
from llmad.harness.guard import LeakageError, job_keys, series_spans
from llmad.harness.recipe import config_for_class
from llmad.harness.sft_extras import write_sft_extras

PARTS = ("train", "validation", "test")
# What ``llmad.metrics.classification.classification_report`` returns: the test metrics a harness run keeps.
REPORT_KEYS = ("n", "positives", "accuracy", "precision", "recall", "f1", "confusion_matrix", "threshold", "roc_auc",
               "pr_auc", "fpr_at_95_recall", "recall_per_anomaly_type")


def _report(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in REPORT_KEYS if k in metrics}


def _keyed(preds: pd.DataFrame, test: pd.DataFrame, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """The api's per-job predictions with the harness's row ``key`` in front (the standard columns, plus ``extra``
    ones the report shows)."""
    if len(preds) != len(test) or not (preds["job_id"].astype(str).to_numpy() ==
                                       test["job_id"].astype(str).to_numpy()).all():
        raise LlmadError("the run's predictions do not line up with the harness's test part (split changed?)")
    out = preds[[c for c in (*ID_COLUMNS, "score", "prediction", *extra) if c in preds.columns]].copy()
    out.insert(0, "key", job_keys(test, "test"))
    return out


def adapter_baseline(ctx: RunContext) -> RunResult:
    """Classical detector on job features: ``llmad.api.baseline.run_baseline`` on the cached split."""
    from llmad.api.baseline import run_baseline
    from llmad.detectors.baselines import BaselineConfig

    cfg = from_dict(BaselineConfig, ctx.spec.config)
    # Peer features always: one cached table then serves plain and context baselines alike.
    split = ctx.job_split(context=True, causal=cfg.causal and cfg.features == "context")
    train, val, test = (ctx.limited(split.part(p), p) for p in PARTS)  # the rows run_baseline subsamples
    ctx.guard.set_test(job_keys(test, "test"))
    ctx.guard.use("fit (train rows, incl. scaler statistics)", job_keys(train, "train"))
    ctx.guard.use("threshold (validation rows)", job_keys(val, "validation"))
    # force=True in every adapter: the harness owns <out>/runs/<hash>/ (it clears or resumes it itself).
    res = run_baseline(DataConfig(**ctx.spec.data), cfg, out=ctx.run_dir / "baseline", split=split,
                       limits=ctx.spec.limits, hooks=ctx.hooks, force=True)
    m = _report(res.metrics)
    m.update(fit_seconds=res.metrics["fit_seconds"], score_ms_per_item=res.metrics["latency_ms_per_job"],
             n_train=int(len(train)), n_validation=int(len(val)))
    return RunResult(m, _keyed(res.predictions, test),
                     details={k: res.details[k] for k in ("split", "split_description", "split_sizes", "threshold")})


def adapter_sft(ctx: RunContext) -> RunResult:
    """``llmad.api.sft.run_sft`` in the run folder (checkpoints there, so ``--resume`` continues a killed run)."""
    from llmad.api.sft import SFTRunConfig, run_sft
    from llmad.detectors.sft.config import SFTConfig
    from llmad.render import reads_context

    cfg = from_dict(SFTConfig, {**ctx.spec.config, "progress": False})
    split = ctx.job_split(context=True, causal=cfg.causal and reads_context(cfg.template))
    ctx.guard.set_test(job_keys(split.test, "test"))
    ctx.guard.use("fit (train rows)", job_keys(split.train, "train"))
    ctx.guard.use("early stopping + threshold (validation rows)", job_keys(split.validation, "validation"))
    out = ctx.run_dir / "sft"
    resume = ctx.resume and (out / "checkpoints").is_dir()
    res = run_sft(SFTRunConfig(data=DataConfig(**ctx.spec.data), sft=cfg, out=str(out), resume=resume,
                               keep_checkpoints=False, save_model=True), split=split, hooks=ctx.hooks,
                  force=True)
    if res.details.get("paused"):
        raise LlmadError(f"sft paused at step {res.details['train_info']['steps']} (max_time_s): rerun with --resume")
    met, test = res.metrics, split.test
    preds = _keyed(res.predictions, test)
    m = dict(met["test"])
    m.update(fit_seconds=met["train"].get("train_s"), score_ms_per_item=met["inference_ms_per_job"],
             n_train=met["train"].get("train_rows"), n_validation=int(len(split.validation)),
             argmax_accuracy=met["test_argmax"]["accuracy"], argmax_f1=met["test_argmax"]["f1"])
    for k, v in (met.get("bias") or {}).items():  # P(abnormal) - P(normal) on no evidence, after training
        m[f"bias_{k}"] = v["after"]
    artifacts = {"model": "sft/model"}
    det = res.details.get("detector")
    if det is not None:
        ctx.stage("embeddings (t-SNE) and one attention map")
        write_sft_extras(ctx.run_dir, ctx.spec.seed, det, test, preds, n=ctx.report.tsne_points)
        artifacts.update(tsne="tsne.csv", attention="attention.json")
    return RunResult(m, preds, details={"sft": {k: met[k] for k in ("train", "sizes", "threshold", "split")}},
                     artifacts=artifacts)


def adapter_fusion(ctx: RunContext) -> RunResult:
    """``llmad.api.sft.run_sft`` with ``fusion: stack``: LMs cross-fitted on the train runs, a tree over features +
    LM score, both chosen/thresholded on validation. The text-only LM score's own test metrics ride along
    (``lm_only``)."""
    import dataclasses

    from llmad.api.sft import SFTRunConfig, run_sft
    from llmad.detectors.fusion.config import FusionConfig

    fc = from_dict(FusionConfig, ctx.spec.config)
    lm = dataclasses.replace(fc.sft, seed=fc.seed, progress=False)
    split = ctx.job_split(context=True, causal=lm.causal)
    ctx.guard.set_test(job_keys(split.test, "test"))
    ctx.guard.use("fit (train rows: cross-fitted LMs, a full LM if test_lm full, the tree)",
                  job_keys(split.train, "train"))
    ctx.guard.use("early stopping, tree choice + threshold (validation rows)",
                  job_keys(split.validation, "validation"))
    out = ctx.run_dir / "fusion"
    resume = ctx.resume and (out / "checkpoints").is_dir()
    res = run_sft(SFTRunConfig(data=DataConfig(**ctx.spec.data), sft=lm, out=str(out), resume=resume,
                               keep_checkpoints=False, save_model=True, fusion=fc.kind, stack=fc.stack),
                  split=split, hooks=ctx.hooks, force=True)
    met, test = res.metrics, split.test
    m = dict(met["test"])
    m.update(fit_seconds=met["wall_s"], score_ms_per_item=met["inference_ms_per_job"],
             n_train=int(len(split.train)), n_validation=int(len(split.validation)),
             lm_only_f1=met["fusion"]["lm_only_test"]["f1"], lm_only_roc_auc=met["fusion"]["lm_only_test"]["roc_auc"],
             tree=met["fusion"]["tree"])
    return RunResult(m, _keyed(res.predictions, test),
                     details={"fusion": {k: v for k, v in met["fusion"].items() if k != "features"},
                              "lm_train": met["train"], "threshold": met["threshold"], "split": met["split"]},
                     artifacts={"model": "fusion/model"})


def adapter_icl(ctx: RunContext) -> RunResult:
    """``llmad.api.icl.run_icl`` on the cached, limited split: demonstrations/statistics from train, threshold on
    validation; the loaded language model is shared by the invocation's ICL runs (unless LoRA changes it)."""
    import dataclasses

    from llmad.api.icl import ICLRun, run_icl
    from llmad.detectors.icl.config import ICLConfig
    from llmad.detectors.icl.demos import select_demonstrations

    cfg = from_dict(ICLConfig, config_for_class("icl", ctx.spec.config)).validate()
    split = ctx.job_split(context=True)
    train, val, test = (ctx.limited(split.part(p), p) for p in PARTS)
    ctx.guard.set_test(job_keys(test, "test"))
    tk = job_keys(train, "train")
    if cfg.shots and cfg.select != "nearest":
        demos = select_demonstrations(train, cfg.shots, cfg.select, cfg.seed)
        demo_keys = job_keys(demos, "train")
        ctx.guard.use("demonstrations", demo_keys)
    elif cfg.shots:
        demos, demo_keys = train, tk
        ctx.guard.use("demonstrations (nearest-neighbour pool)", tk)
        ctx.guard.use("normalisation statistics (nearest-neighbour features)", tk)
    else:
        demos, demo_keys = train.iloc[:0], []
    if cfg.stats:
        ctx.guard.use("per-class feature statistics", tk)
    if cfg.lora_r:
        ctx.guard.use("LoRA tuning examples", tk)
    if cfg.mode == "score" and cfg.threshold == "validation":
        ctx.guard.use("threshold (validation rows)", job_keys(val, "validation"))
    d = ctx.spec.data
    run = ICLRun(data=d["spec"], data_dir=d["data_dir"], split=d["split"], test_workflow=d["test_workflow"],
                 seed=ctx.spec.seed, limit=None, val_limit=None, out=str(ctx.run_dir / "icl"))
    res = run_icl(cfg, run, split=dataclasses.replace(split, train=train, validation=val, test=test),
                  hooks=ctx.hooks, lm=None if cfg.lora_r else ctx.shared_lm(cfg), force=True)
    det = res.details["detector"]
    if cfg.shots and cfg.select != "nearest":
        used = det.demos_["job_id"].astype(str).tolist()
        if sorted(used) != sorted(demos["job_id"].astype(str).tolist()):
            raise LeakageError("leakage guard: the detector's demonstrations differ from the train rows the guard "
                               "checked; run refused")
    met = res.metrics
    m = _report(met)
    m.update(fit_seconds=met["fit_seconds"], score_ms_per_item=1000 * met["score_seconds"] / max(len(test), 1),
             n_train=int(len(train)), n_validation=int(len(val)))
    if cfg.mode == "score":
        m["argmax_accuracy"] = met["argmax"]["accuracy"]
    for k in ("parse_rate", "explicit_answer_rate", "forced_answer_rate", "answer_roc_auc"):
        if k in met:
            m[k] = met[k]
    info = dict(res.details["icl"])
    info.pop("label_variants", None)
    # CoT: the rationale and answer of each row, for the report's rationale examples.
    extra = ("answer", "answer_source", "p_abnormal", "rationale") if cfg.mode == "cot" else ()
    return RunResult(m, _keyed(res.predictions, test, extra),
                     details={"icl": info, "demonstration_keys": list(map(str, demo_keys))[:64]})


def adapter_nll(ctx: RunContext) -> RunResult:
    """``llmad.api.nll.run_nll`` on the cached, limited split: fine-tuning on train rows (labels unused, or the
    normal-labelled ones with ``normal_only``), the threshold from validation rows (their labels only with
    ``threshold: validation``)."""
    import dataclasses

    from llmad.api.nll import NLLRunConfig, run_nll
    from llmad.detectors.nll.config import NLLConfig, parse_threshold

    cfg = from_dict(NLLConfig, {**ctx.spec.config, "seed": ctx.spec.seed, "progress": False}).validate()
    split = ctx.job_split(context=True, causal=cfg.causal)
    train, val, test = (ctx.limited(split.part(p), p) for p in PARTS)
    ctx.guard.set_test(job_keys(test, "test"))
    fit_rows = train[train["label"] == 0] if cfg.normal_only else train
    ctx.guard.use("fine-tuning (train rows" + (", labelled normal)" if cfg.normal_only else ", labels unused)"),
                  job_keys(fit_rows, "train"))
    labels = "with labels" if parse_threshold(cfg.threshold)[0] == "validation" else "labels unused"
    ctx.guard.use(f"threshold (validation rows, {labels})", job_keys(val, "validation"))
    res = run_nll(NLLRunConfig(data=DataConfig(**ctx.spec.data), nll=cfg, test_limit=None, val_limit=None,
                               out=str(ctx.run_dir / "nll")),
                  split=dataclasses.replace(split, train=train, validation=val, test=test), hooks=ctx.hooks,
                  force=True)
    met = res.metrics
    m = _report(met["test"])
    m.update(fit_seconds=met["fit_seconds"], score_ms_per_item=1000 * met["score_seconds"] / max(len(test), 1),
             n_train=int(met["train"].get("rows", len(fit_rows))), n_validation=int(len(val)),
             threshold_rule=met["threshold_rule"], supervision=met["supervision"])
    return RunResult(m, _keyed(res.predictions, test),
                     details={"nll": {k: met[k] for k in ("threshold_rule", "supervision", "fields", "permutations",
                                                          "fields_nll")}}, artifacts={"model": "nll/model"})


def adapter_numeric(ctx: RunContext) -> RunResult:
    """``llmad.api.numeric.run_numeric``: z-score and windows from train, threshold on validation points."""
    from sklearn.metrics import confusion_matrix

    from llmad.api.numeric import NumericConfig, load_split, run_numeric

    cfg = from_dict(NumericConfig, {**ctx.spec.config, "out": str(ctx.run_dir / "numeric")})
    ctx.stage(f"loading {cfg.data}")
    split = load_split(cfg)
    ctx.guard.set_test_spans(series_spans(split.test))
    ctx.guard.use_spans("z-score normalisation + training windows (train)", series_spans(split.train))
    ctx.guard.use_spans("label pool + threshold (validation)", series_spans(split.validation))
    res = run_numeric(cfg, split=split, hooks=ctx.hooks, force=True)
    met, preds = res.metrics, res.predictions
    t = met["test"]
    m = {k: t.get(k) for k in ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc") if k in t}
    if "accuracy" not in m:
        m["accuracy"] = float(np.mean(preds["prediction"] == preds["label"]))
    m["confusion_matrix"] = confusion_matrix(preds["label"], preds["prediction"], labels=[0, 1]).tolist()
    m["n"], m["positives"] = int(len(preds)), int(preds["label"].sum())
    ev = t.get("event", {})
    if "event_recall" in ev:
        m["event_recall"] = ev["event_recall"]
    m.update(fit_seconds=met["timing"]["fit_seconds"],
             score_ms_per_item=1000 * met["timing"]["score_seconds"] / max(len(preds), 1))
    return RunResult(m, preds, details={"numeric": res.details})


def _replay_predictions(jobs: pd.DataFrame, reveal: str) -> pd.DataFrame:
    """Per test job: one score and one 0/1 prediction out of a replay's per-job rows."""
    if reveal == "features":
        last = sorted((c for c in jobs.columns if c.startswith("pred_T")), key=lambda c: int(c[6:]))[-1]
        pred = jobs[last].to_numpy().astype(int)
        score = pred.astype(float)
    else:
        pred = jobs["alerted"].astype(bool).to_numpy().astype(int)
        score = jobs["max_score"].to_numpy(dtype=float)
        score = np.where(np.isfinite(score), score, np.nanmin(score) if np.isfinite(score).any() else 0.0)
    preds = predictions_frame(jobs.assign(label=jobs["label"].astype(int)), score, predictions=pred,
                              keys=job_keys(jobs, "test"))
    if reveal == "events":
        for c in ("alert_before_execute_end", "lead_job_s", "alert_life_frac"):
            preds[c] = jobs[c]
    return preds


def adapter_replay(ctx: RunContext) -> RunResult:
    """``llmad.api.replay.run_replay`` over whole test runs with a detector from ``source`` (a baseline fitted on
    the split's train runs, this recipe's SFT run on the same dataset and seed, or a saved detector folder)."""
    from llmad.api.replay import open_detector, run_replay
    from llmad.io import write_frame_csv
    from llmad.metrics.classification import classification_report
    from llmad.stream import StreamConfig, split_run_ids

    cfg = from_dict(StreamConfig, ctx.spec.config).check()
    d, lim = ctx.spec.data, ctx.spec.limits
    if d["split"] == "paper":
        raise LlmadError("replay needs whole DAG runs; the paper split is job-level (use split: run)")
    source = ctx.spec.extras.get("source")
    if not source:
        raise LlmadError("a replay method needs source: baseline:rf | baseline:hgb-context | <an sft method of this "
                         "recipe> | <a saved detector folder>")
    ctx.stage(f"run ids of {d['spec']} ({d['split']} split)")
    ids = split_run_ids(d["spec"], d["split"], d["seed"], d["data_dir"], d["test_workflow"])
    test_runs = subsample(ids["test"], lim.get("test"), d["seed"])
    ctx.guard.set_test(test_runs)
    detector = None
    upstream = ctx.spec.extras.get("source_hash")
    if source.startswith("baseline:"):
        ctx.guard.use("fit (train runs of the baseline)", subsample(ids["train"], lim.get("train"), d["seed"]))
        ctx.guard.use("threshold (validation runs)", subsample(ids["validation"], lim.get("train"), d["seed"]))
    elif upstream:
        up_dir = ctx.run_dir.parent / upstream
        if not (up_dir / "metrics.json").is_file():
            raise LlmadError(f"replay source {source!r} did not finish (runs/{upstream}): nothing to replay")
        ud = json.loads((up_dir / "run.json").read_text())["data"]
        same = (ud["spec"], ud["split"], ud["seed"], ud["test_workflow"]) == \
            (d["spec"], d["split"], d["seed"], d["test_workflow"])
        up_ids = ids if same else split_run_ids(ud["spec"], ud["split"], ud["seed"], ud["data_dir"],
                                                ud["test_workflow"])
        ctx.guard.use(f"fit of {source} (its train runs)", up_ids["train"])
        ctx.guard.use(f"threshold of {source} (its validation runs)", up_ids["validation"])
        ctx.stage(f"loading {source}")
        model = json.loads((up_dir / "details.json").read_text()).get("artifacts", {}).get("model", "sft/model")
        detector = open_detector(str(up_dir / model), quantize=cfg.quantize)
    else:
        warn("unguarded-source", f"replay source {source}: a saved detector from outside the recipe; its training "
                                 f"rows are not known to the leakage guard (it may have seen these test runs)")
    if cfg.threshold == "validation":
        ctx.guard.use("alert threshold (validation runs)", subsample(ids["validation"], lim.get("validation"),
                                                                      d["seed"]))
    t0 = time.perf_counter()
    res = run_replay(source, d["spec"], cfg, split=d["split"], part="test", seed=d["seed"], runs=lim.get("test"),
                     val_runs=lim.get("validation"), train_runs=lim.get("train"), test_workflow=d["test_workflow"],
                     data_dir=d["data_dir"], out=ctx.run_dir / "replay", detector=detector,
                     hooks=RunHooks(log=None, stage=ctx.stage, advance=ctx.advance),  # a bar, not a line per run
                     force=True)
    wall = time.perf_counter() - t0
    rr = res.details["replay_result"]
    preds = _replay_predictions(res.predictions, cfg.reveal)
    m = classification_report(preds["label"], predictions=preds["prediction"], scores=preds["score"].to_numpy(),
                              anomaly_types=preds["anomaly_type"])
    em = rr.metrics
    for k in ("caught_before_execute_end_share", "median_lead_job_s", "median_lead_run_s",
              "false_alerts_per_normal_run", "anomalous_ever_correct_share", "median_first_correct_step_anomalous"):
        if k in em:
            m[k] = em[k]
    m.update(fit_seconds=0.0, score_ms_per_item=1000 * wall / max(len(preds), 1),
             events_per_s=rr.throughput.get("events_per_s"))
    artifacts = {}
    if rr.curve is not None:
        write_frame_csv(ctx.run_dir / "early_detection.csv", rr.curve)
        artifacts["early_detection"] = "early_detection.csv"
    if rr.features_table is not None:
        write_frame_csv(ctx.run_dir / "features_steps.csv", rr.features_table)
        artifacts["features_steps"] = "features_steps.csv"
    return RunResult(m, preds, details={"replay": {k: v for k, v in em.items() if k != "steps"},
                                        "throughput": rr.throughput, "threshold": rr.threshold,
                                        "source": source, "test_runs": len(test_runs)}, artifacts=artifacts)


ADAPTERS: dict[str, Callable[[RunContext], RunResult]] = {
    "baseline": adapter_baseline, "sft": adapter_sft, "fusion": adapter_fusion, "icl": adapter_icl,
    "numeric": adapter_numeric,
    "replay": adapter_replay, "nll": adapter_nll,
}
