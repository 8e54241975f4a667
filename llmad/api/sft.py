"""Python API behind ``llmad sft``: ``run_sft(cfg)`` (``llmad predict`` is ``llmad.api.predict``).

``run_sft`` = load split -> ``SFTDetector.fit`` (checkpoints under ``<out>/checkpoints``) -> threshold on validation
-> test metrics -> ``<out>/model`` + config.json, metrics.json, predictions.csv, provenance.json (metrics.json last).
The CLI, recipes and the harness call this, so a run from any of them is the same run. Both return a
``llmad.api.result.RunResult`` whose ``metrics`` is what ``metrics.json`` holds and whose ``summary`` is the line the
CLI prints.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from llmad.api.hooks import RunHooks
from llmad.api.result import RunResult, finish_trained_run
from llmad.config import DataConfig, option
from llmad.data.specs import spec_name
from llmad.data.splits import Split
from llmad.detectors.fusion.config import FUSION_KINDS, StackConfig
from llmad.detectors.sft.config import SFTConfig
from llmad.detectors.sft.detector import SFTDetector
from llmad.detectors.sft.training import is_main_process, resume_checkpoint, validation_rows
from llmad.errors import LlmadError
from llmad.interrupts import note_run
from llmad.render import reads_context

# Settings that may change between an interrupted run and its --resume without changing what is trained.
_RESUME_FREE = {"max_time_s", "progress", "logging_steps", "extra"}


@dataclass
class SFTRunConfig:
    """One ``llmad sft`` run: data + fine-tuning settings + where outputs go."""

    data: DataConfig = option(help="which data (its own options)", cli=False,
                              factory=lambda: DataConfig(spec="flowbench:1000genome", split="run"))
    sft: SFTConfig = option(help="fine-tuning settings (their own options)", factory=SFTConfig, cli=False)
    out: str | None = option(None, "output folder [runs/sft/<data>-<time>]")
    resume: bool = option(False, "continue an interrupted run in --out", flag="--resume")
    keep_checkpoints: bool = option(False, "keep <out>/checkpoints once the final model is saved",
                                    flag="--keep-checkpoints")
    save_model: bool = option(True, "save the fine-tuned model under <out>/model", cli=False)
    fusion: str = option("none", "none | stack: a tree (rf/hgb) over the job's numeric + peer-context features and the "
                                 "LM score (cross-fitted by run: never from an LM that trained on the row)",
                         flag="--fusion")
    stack: StackConfig = option(help="the stacked tree's settings (--fusion stack)", factory=StackConfig, cli=False)


def load_run_split(data: DataConfig, template: str, causal: bool = False, context: bool = False) -> Split:
    """The split of ``data``, with peer features computed on the whole table (before any ``limit`` sample) when
    the template needs them or ``context``."""
    from llmad.data import load_split

    return load_split(data.spec, split=data.split, seed=data.seed, data_dir=data.data_dir,
                      test_workflow=data.test_workflow, limit=data.limit, columns=data.columns,
                      context=context or reads_context(template), causal=causal)


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


def run_sft(cfg: SFTRunConfig, *, split: Split | None = None, hooks: RunHooks | None = None,
            printer: Callable[[str], None] | None = None, force: bool = False) -> RunResult:
    """Train, threshold on validation, evaluate on test, save model + run outputs.

    ``split``: an already-loaded split of ``cfg.data`` (the harness's cached one); loaded here when None.
    ``printer`` is the older name of ``hooks.log``. A paused run (``max_time_s``) returns empty metrics and
    ``details["paused"] = True``; the fitted detector is ``details["detector"]``. An ``out`` holding an earlier
    run is refused before any work unless ``cfg.resume`` (continue it) or ``force`` (clear it first).
    With ``cfg.sft.progress`` off (``-q``) library warnings go to ``<out>/warnings.log``.
    """
    from llmad.rundir import check_out, default_out, quiet_warnings

    hooks = RunHooks.of(hooks, printer)
    if cfg.fusion not in FUSION_KINDS:
        raise LlmadError(f"--fusion {cfg.fusion!r}: expected {' or '.join(FUSION_KINDS)}")
    if cfg.fusion == "stack":
        cfg.stack.check()
        if cfg.sft.max_time_s or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise LlmadError("--fusion stack: runs in one process without --max-time")
    out = check_out(cfg.out or default_out("sft", spec_name(cfg.data.spec)), force=force,
                    resume=cfg.resume or not is_main_process())  # worker ranks find rank 0's files
    # Worker ranks log nowhere: a file of theirs in out could race rank 0's check of it.
    with quiet_warnings(out if is_main_process() else None, not cfg.sft.progress):
        return _run_sft(cfg, out, split, hooks)


def _run_sft(cfg: SFTRunConfig, out: Path, split: Split | None, hooks: RunHooks) -> RunResult:
    """``run_sft`` once ``out`` is checked."""
    from llmad.io import write_json
    from llmad.metrics.classification import classification_report, timed_scoring
    from llmad.rundir import peak_rss_mb

    t0 = time.perf_counter()
    if cfg.resume:
        _check_resume(out, cfg)
        resume_checkpoint(out / "checkpoints")  # a damaged checkpoint: warn and fall back, or fail before any work
    note_run(out, "add --resume to the same command", kept="checkpoints")
    if is_main_process():
        write_json(out / "sft_run.json", cfg)
    if split is None:
        hooks.stage("loading data")
        split = load_run_split(cfg.data, cfg.sft.template, cfg.sft.causal, context=cfg.fusion == "stack")
    hooks.log(f"data {cfg.data.spec}: {split.description}; sizes {split.sizes()}")
    if cfg.fusion == "stack":
        from llmad.api.fusion import run_stack

        return run_stack(cfg, out, split, hooks)
    if cfg.sft.max_steps > 0:
        hooks.log(f"--max-steps {cfg.sft.max_steps} overrides --epochs {cfg.sft.epochs:g}: training stops after "
                  f"{cfg.sft.max_steps} steps")
    hooks.stage(f"fine-tuning {cfg.sft.model} ({cfg.sft.template} template)")
    det = SFTDetector(cfg.sft)
    det.fit(split.train, split.validation, output_dir=out, resume=cfg.resume, printer=hooks.log)
    if det.paused_:
        return _paused(det, out)
    if not is_main_process():
        return RunResult({}, details={"paused": False, "train_info": dict(det.train_info_), "rank": "worker"},
                         out_dir=out)
    validation = validation_rows(split.validation, cfg.sft)  # the rows fit thresholded on (--val-limit)
    det, val_scores, collapse = _collapse_guard(cfg, split, out, hooks, det, validation)
    if det.paused_:
        return _paused(det, out)
    info = dict(det.train_info_)
    (out / "paused.json").unlink(missing_ok=True)
    thr = float(det.threshold_)
    test = split.test
    hooks.stage(f"scoring {len(test)} test jobs")
    test_scores, ms_per_job = timed_scoring(det.score, test)
    metrics: dict[str, Any] = {
        "method": "sft", "model": cfg.sft.model, "template": cfg.sft.template, "split": split.kind,
        "data": cfg.data.spec, "threshold": thr, "threshold_objective": cfg.sft.threshold_objective,
        "test": classification_report(test["label"], test_scores, threshold=thr,
                                      anomaly_types=test["anomaly_type"]),
        # The paper reports argmax predictions (threshold 0.5): given for comparison with its tables.
        "test_argmax": classification_report(test["label"], test_scores, threshold=0.5),
        "validation": classification_report(validation["label"], val_scores, threshold=thr),
        "sizes": split.sizes(), "split_info": {k: v for k, v in split.info.items() if "examples" not in k},
        "train": {k: v for k, v in info.items() if k != "log_history"},
        "inference_jobs_per_s": 1000.0 / ms_per_job if ms_per_job > 0 else float("nan"),
        "inference_ms_per_job": ms_per_job,
        "peak_rss_mb": peak_rss_mb(),
        "wall_s": time.perf_counter() - t0,
    }
    if collapse is not None:
        metrics["collapse"] = collapse
    # The paper's bias measure: P(abnormal) - P(normal) on content-free inputs, before and after training.
    metrics["bias"] = det.bias_
    hooks.log("P(abnormal) - P(normal) before -> after training: " + "; ".join(
        f"{k} {v['before']:+.3f} -> {v['after']:+.3f}" for k, v in det.bias_.items()))
    t = metrics["test"]
    summary = (f"sft {cfg.sft.model} [{cfg.sft.template}] on {cfg.data.spec} ({split.kind} split): test accuracy "
               f"{t['accuracy']:.4f} F1 {t['f1']:.4f} ROC-AUC {t.get('roc_auc', float('nan')):.4f} "
               f"(threshold {thr:.3f}); train {info['train_s']:.0f} s, {metrics['inference_jobs_per_s']:.0f} jobs/s "
               f"scoring; outputs in {out}")
    if collapse and collapse["detected"]:
        summary += (f" (training collapsed: attempt {collapse['used_attempt']} of {len(collapse['attempts'])} kept; "
                    f"metrics.json: collapse)")
    return finish_trained_run(out, cfg, det, det, split, test, test_scores, val_scores, thr, metrics, summary,
                      train_info=info)


def _paused(det: SFTDetector, out: Path) -> RunResult:
    """The result of a run paused by ``max_time_s`` (``paused.json`` says how to continue)."""
    from llmad.io import write_json

    info = dict(det.train_info_)
    msg = (f"paused after {info['train_s']:.0f} s at step {info['steps']} (max_time_s): "
           f"continue with --resume --out {out}")
    if is_main_process():
        write_json(out / "paused.json", {"step": info["steps"], "epoch": info["epochs_done"], "message": msg})
    return RunResult({}, details={"paused": True, "train_info": info}, out_dir=out, summary=msg)


def _validation_scores(det: SFTDetector, validation) -> Any:
    """The fitted model's validation scores: those fit already computed, else scored now (once)."""
    scores = getattr(det, "validation_scores_", None)
    return det.score(validation) if scores is None else scores


def _collapse_guard(cfg: SFTRunConfig, split: Split, out: Path, hooks: RunHooks, det: SFTDetector,
                    validation) -> tuple[SFTDetector, Any, dict[str, Any] | None]:
    """(detector kept, its validation scores, the ``collapse`` record of metrics.json or None without validation).

    A collapsed run (``collapse.collapse_reason``) is named in one warning line; with ``collapse_retry`` (default)
    it is retrained once with ``collapse.fallback_config`` (checkpoints under ``<out>/retry``). The retry is kept
    unless it collapsed too and ranked validation worse than the first attempt. A ``max_steps`` smoke run is
    recorded and logged only."""
    from llmad.detectors.sft.collapse import attempt_record, collapse_reason, fallback_config
    from llmad.errors import warn

    val_scores = _validation_scores(det, validation)
    if validation is None or not len(validation):
        return det, val_scores, None
    y = validation["label"].to_numpy()
    reason = collapse_reason(y, val_scores, det.threshold_)
    attempts = [attempt_record(1, det.config, y, val_scores, det.threshold_, reason, det.train_info_["train_s"])]
    record: dict[str, Any] = {"detected": reason is not None, "reason": reason, "retried": False, "used_attempt": 1,
                              "attempts": attempts}
    if reason is None:
        return det, val_scores, record
    if cfg.sft.max_steps > 0:  # a --max-steps smoke run is expected to learn little: recorded, not retried
        hooks.log(f"training collapsed: {reason} (a --max-steps run: not retried)")
        return det, val_scores, record
    multi = int(os.environ.get("WORLD_SIZE", "1")) > 1  # worker ranks have returned: no second run to join
    if not cfg.sft.collapse_retry or multi:
        why = "--collapse-retry is off" if not cfg.sft.collapse_retry else "no retry under multi-process training"
        warn("training-collapsed", f"training collapsed: {reason}; the run is kept as is ({why}); try --lr 5e-5 "
                                   f"--class-weight balanced")
        return det, val_scores, record
    fb = fallback_config(det.config)
    warn("training-collapsed", f"training collapsed: {reason}; retrying once with lr {fb.lr:g} and class weight "
                               f"balanced (--no-collapse-retry keeps a collapsed run)")
    hooks.stage(f"fine-tuning again (lr {fb.lr:g}, class weight balanced)")
    retry = SFTDetector(fb)
    retry.fit(split.train, split.validation, output_dir=out / "retry", resume=cfg.resume, printer=hooks.log)
    if retry.paused_:
        return retry, None, record
    retry_scores = _validation_scores(retry, validation)
    reason2 = collapse_reason(y, retry_scores, retry.threshold_)
    attempts.append(attempt_record(2, fb, y, retry_scores, retry.threshold_, reason2, retry.train_info_["train_s"]))
    record["retried"] = True
    first_auc, second_auc = attempts[0]["validation_roc_auc"], attempts[1]["validation_roc_auc"]
    keep_first = reason2 is not None and first_auc == first_auc and not second_auc >= first_auc
    record["used_attempt"] = 1 if keep_first else 2
    line = ("the retry did not collapse" if reason2 is None else f"the retry collapsed too: {reason2}")
    hooks.log(f"{line}; keeping attempt {record['used_attempt']} (metrics.json: collapse)")
    return (det, val_scores, record) if keep_first else (retry, retry_scores, record)


__all__ = ["SFTRunConfig", "run_sft", "load_run_split"]
