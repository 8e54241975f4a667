"""Python API behind `llmad replay`: choose runs, open (or fit) a detector, set the alert threshold, replay the runs
in event time (``llmad.stream``) and write a self-describing run folder; ``open_detector`` also serves `llmad watch`.

The run folder holds config.json, metrics.json (early-detection metrics + throughput), predictions.csv (one row
per job), alerts.jsonl (events mode), runs.csv and early_curve.csv/.png (events mode) or features_steps.csv
(features mode).
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from llmad.api.hooks import QUIET, RunHooks
from llmad.api.result import RunResult, data_dir_used
from llmad.data.splits import subsample
from llmad.errors import LlmadError
from llmad.interrupts import note_run
from llmad.stream import (ReplayResult, StreamConfig, choose_stream_threshold, iter_runs, list_run_members, replay,
                          split_run_ids)

NAN = float("nan")
NO_MODEL = "no such folder (a saved detector, or baseline:rf / baseline:hgb-context)"


def fit_baseline(spec: str, data: str, ids: dict[str, list[str]], data_dir: str | Path | None = None,
                 train_runs: int | None = None, seed: int = 0):
    """``baseline:rf`` / ``baseline:hgb-context`` -> a BaselineDetector fit on train runs, threshold on validation."""
    from llmad.data.context import add_context_features
    from llmad.detectors.baselines import METHODS, BaselineDetector

    name = spec.split(":", 1)[1]
    method, _, feats = name.partition("-")
    feats = feats or "plain"
    if method not in METHODS or feats not in ("plain", "context"):
        raise LlmadError(f"--model {spec!r}: expected baseline:<{'|'.join(METHODS)}>[-context]")
    if not ids["validation"]:
        raise LlmadError("a baseline needs validation runs for its threshold; use a split with validation runs")

    def load(part: list[str]) -> pd.DataFrame:
        frames = []
        for r in iter_runs(data, data_dir, part):
            frames.append(add_context_features(r, causal=True) if feats == "context" else r)
        return pd.concat(frames, ignore_index=True)

    train = load(subsample(ids["train"], train_runs, seed))
    val = load(subsample(ids["validation"], train_runs, seed))
    det = BaselineDetector(method, feats, causal=True, seed=seed).fit(train, val)
    det.train_info_ = {"train_runs": int(train["run_id"].nunique()), "train_jobs": int(len(train)),
                       "validation_runs": int(val["run_id"].nunique())}
    return det


def open_detector(model: str, *, data: str | None = None, ids: dict[str, list[str]] | None = None,
                  data_dir: str | Path | None = None, train_runs: int | None = None, seed: int = 0,
                  quantize: bool = False, backend: str | None = "auto", workers: int = 1):
    """A saved detector folder of any registered kind (``llmad.detectors.load_detector``), or
    ``baseline:<method>[-context]`` fitted on the split's train runs.

    A detector that scores through a language-model classifier (SFT) is wrapped in a scoring backend
    (``llmad.detectors.sft.fast``; ``auto``: bf16 on CPUs with native bf16, else ONNX Runtime int8 when installed,
    else torch fp32); ``quantize`` uses its int8 copy (``quantized()``) instead. Other detectors are unchanged."""
    if model.startswith("baseline:"):
        if data is None or ids is None:
            raise LlmadError("--model baseline:... needs data with a split (train + validation runs)")
        return fit_baseline(model, data, ids, data_dir, train_runs, seed)
    from llmad.detectors import load_detector

    if not Path(model).exists():
        raise LlmadError(f"--model {model}: {NO_MODEL}")
    det = load_detector(model)
    if getattr(det, "data_kind", "jobs") != "jobs":
        raise LlmadError(f"--model {model}: a {getattr(det, 'kind', '')} detector scores metric windows, not job "
                         f"events; use llmad numeric")
    # Capabilities, not kinds: only detectors that offer an int8 copy / a text-classifier backend change.
    if quantize:
        if callable(getattr(det, "quantized", None)):
            det = det.quantized()
    elif backend is not None:
        from llmad.detectors.sft.fast import with_backend

        det = with_backend(det, backend, workers=workers)
    return det


def config_dict(cfg: StreamConfig) -> dict[str, Any]:
    """The config as a plain dict (for outputs)."""
    return asdict(cfg)


def plot_curve(curve: pd.DataFrame, path: str | Path, title: str = "early detection") -> None:
    """Write the early-detection curve as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from llmad.io import atomic_path

    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(curve["life_fraction"], curve["caught_share"], label="anomalous jobs alerted")
    ax.plot(curve["life_fraction"], curve["false_alert_share"], "--", label="normal jobs alerted (false)")
    ax.set_xlabel("fraction of the job's lifetime elapsed (ready -> last event)")
    ax.set_ylabel("share of jobs")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _threshold(det: Any, cfg: StreamConfig, ids: dict[str, list[str]] | None, data: str,
               data_dir: str | Path | None, val_runs: int | None, seed: int) -> float:
    """The alert threshold: the model's (validation, at fit time), a validation replay's, or a number."""
    if cfg.threshold == "model":
        if getattr(det, "threshold_", None) is None:
            raise LlmadError("the model has no validation threshold; pass --threshold validation or a number")
        return float(det.threshold_)
    if cfg.threshold == "validation":
        if ids is None or not ids["validation"]:
            raise LlmadError("--threshold validation needs a split with validation runs")
        vids = subsample(ids["validation"], val_runs, seed)
        return choose_stream_threshold(det, iter_runs(data, data_dir, vids), cfg)
    return float(cfg.threshold)


def run_replay(model: str, data: str, cfg: StreamConfig, *, split: str = "run", part: str = "test",
               seed: int = 0, runs: int | None = None, val_runs: int | None = None, train_runs: int | None = None,
               test_workflow: str | None = None, data_dir: str | Path | None = None, out: str | Path | None = None,
               hooks: RunHooks | None = None, detector: Any = None,
               on_alert: Callable[[dict], None] | None = None, force: bool = False) -> RunResult:
    """``llmad replay``: choose runs, open/fit the detector, set the threshold, replay, write the run folder.

    Per replayed run, ``hooks`` gets one ``log`` line and one ``advance``. ``detector`` skips opening ``model``
    (the harness passes one it loaded). The result's ``metrics`` are metrics.json's content, ``predictions`` the
    per-job frame (predictions.csv), and ``details["replay_result"]`` the engine's
    :class:`llmad.stream.ReplayResult`. An ``out`` holding an earlier run is refused before any work unless
    ``force``.
    """
    from llmad.io import write_frame_csv
    from llmad.rundir import check_out, default_out, quiet_warnings, write_run

    hooks = hooks or QUIET
    cfg.check()
    if detector is None and not model.startswith("baseline:") and not Path(model).exists():
        raise LlmadError(f"--model {model}: {NO_MODEL}")
    name = Path(model).name if not model.startswith("baseline:") else model.replace(":", "-")
    out_dir = check_out(out or default_out("replay", name), force=force)
    with quiet_warnings(out_dir, hooks.quiet):
        if split == "none":
            ids = None
            members = [m[0] for m in list_run_members(data, data_dir)]
            chosen = subsample(sorted(members), runs, seed)
        else:
            ids = split_run_ids(data, split, seed, data_dir, test_workflow)
            if part not in ids:
                raise LlmadError(f"--part {part!r}: expected train, validation or test")
            chosen = subsample(ids[part], runs, seed)
        if not chosen:
            raise LlmadError("no runs to replay")
        det = detector if detector is not None else open_detector(
            model, data=data, ids=ids, data_dir=data_dir, train_runs=train_runs, seed=seed, quantize=cfg.quantize,
            backend=cfg.backend, workers=cfg.workers)
        thr = _threshold(det, cfg, ids, data, data_dir, val_runs, seed)
        out_dir.mkdir(parents=True, exist_ok=True)
        note_run(out_dir)

        def report(msg: str) -> None:
            hooks.log(msg)
            hooks.advance(1)

        hooks.stage(f"replaying {len(chosen)} runs", total=len(chosen))
        res = replay(iter_runs(data, data_dir, chosen), det, cfg, thr, predictions_path=out_dir / "predictions.csv",
                     alerts_path=out_dir / "alerts.jsonl" if cfg.reveal == "events" else None, progress=report,
                     on_alert=on_alert)
    config = {"stream": config_dict(cfg), "model": model, "detector": getattr(det, "name", type(det).__name__),
              "data": data, "split": split, "part": part, "seed": seed, "runs": chosen,
              "runs_subsample": None if runs is None else int(runs), "test_workflow": test_workflow,
              "threshold": thr, "train_info": getattr(det, "train_info_", None)}
    metrics = {"mode": cfg.reveal, **res.metrics, "throughput": res.throughput}
    artifacts = {"predictions": "predictions.csv"}
    if cfg.reveal == "events":
        artifacts["alerts"] = "alerts.jsonl"
    if res.curve is not None:
        write_frame_csv(out_dir / "early_curve.csv", res.curve)
        plot_curve(res.curve, out_dir / "early_curve.png",
                   title=f"early detection: {getattr(det, 'name', 'detector')} on {data} ({len(chosen)} runs)")
        write_frame_csv(out_dir / "runs.csv", res.runs)
        artifacts.update(early_curve="early_curve.csv", early_curve_plot="early_curve.png", runs="runs.csv")
    if res.features_table is not None:
        write_frame_csv(out_dir / "features_steps.csv", res.features_table)
        artifacts["features_steps"] = "features_steps.csv"
    summary = summary_line(res, cfg)
    write_run(out_dir, config=config, metrics=metrics, summary=None, command="replay",
              data_dir=data_dir_used(data_dir))
    return RunResult(metrics, pd.read_csv(out_dir / "predictions.csv"),
                     details={"throughput": res.throughput, "threshold": thr, "curve": res.curve,
                              "runs": res.runs, "features_table": res.features_table, "config": config,
                              "replay_result": res},
                     artifacts=artifacts, out_dir=out_dir, summary=summary)


def summary_line(res: ReplayResult, cfg: StreamConfig) -> str:
    """One human line per replay."""
    m, t = res.metrics, res.throughput
    speed = f"{t['events']} events in {t['wall_s']:.1f} s ({t['events_per_s']:.0f} events/s)" if t.get("events") \
        else f"{t['wall_s']:.1f} s"
    if cfg.reveal == "features":
        return (f"features reveal: {m.get('jobs', 0)} jobs; anomalous ever right "
                f"{m.get('anomalous_ever_correct_share', NAN):.3f}, median first right step "
                f"T{m.get('median_first_correct_step_anomalous', NAN)}; {speed}")
    return (f"{m['runs']} runs, {m['anomalous_jobs']} anomalous jobs: caught {m['caught_share']:.3f}, before "
            f"execute_end {m['caught_before_execute_end_share']:.3f}, median lead {m['median_lead_job_s']:.0f} s "
            f"(job) / {m['median_lead_run_s']:.0f} s (run); false alerts/normal run "
            f"{m['false_alerts_per_normal_run']:.2f}; threshold {res.threshold:.4g}; {speed}")
