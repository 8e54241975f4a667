"""The numeric track's Python API: ``run_numeric(NumericConfig)`` -> ``RunResult``, ``pretrain_moment``, and the text
route (``render_windows``) that turns metric windows into "FEAT is VAL" sentences for ``llmad sft`` / ``icl``.

One run: load a split (``nezha:trainticket``, ``smd:<machine>|all``, ``asd:<server>|all``, ``csv:<path>``) ->
z-score fitted on train -> sliding windows -> pick the training windows (``shots``) -> fit the detector ->
threshold on validation points -> score test points -> time-series metrics (``llmad.metrics.timeseries``).

Training windows (``shots``): unsupervised detectors (moment probe/lora, lstm-ae, iforest, lagllama full, duallmad)
train on train windows that hold no labelled anomaly (a labelled window is "known normal"); ``shots`` caps how
many (seeded sample). Supervised ones (rf, hgb) take ``shots`` labelled windows, at least two of them anomalous
when the pool has any; the pool is the train part when it is labelled (Nezha, csv), else every other event stretch
of the validation part (SMD/ASD, whose train part has no labels), and the threshold is chosen on the other stretches.
``shots=0`` means zero-shot (moment without fine-tuning, lagllama without fine-tuning); other methods refuse it.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from llmad.api.hooks import RunHooks
from llmad.api.result import RunResult, predictions_frame
from llmad.config import option
from llmad.data.specs import parse_spec
from llmad.data.splits import subsample
from llmad.data.timeseries import Series, SeriesSplit
from llmad.data.windows import WindowSet, ZScore, make_windows
from llmad.errors import LlmadError, warn
from llmad.interrupts import note_run

METHODS = ("moment", "lagllama", "lstm-ae", "iforest", "rf", "hgb", "nll", "duallmad")
STEP_SECONDS = {"nezha": 60.0, "smd": 60.0, "asd": 300.0}
DEFAULT_WINDOW = {"nezha": 64, "asd": 64}  # Nezha stretches are a few hundred minutes; ASD parts ~1-3k points


@dataclass
class NumericConfig:
    """One numeric-track run (every CLI option of ``llmad numeric`` maps onto a field)."""

    method: str = option("iforest", "moment | lagllama | lstm-ae | iforest | rf | hgb | duallmad")
    data: str = option("asd:omi-1", "nezha:trainticket | smd:<machine>|all | asd:<server>|all | csv:<path>")
    data_dir: str | None = option(None, "Data folder (default: the shared data dir).")
    split: str = option("time", "nezha: time | fault")
    test_types: list[str] | None = option(None, "nezha --split fault: unseen types, comma list (default "
                                                "cpu_contention)")
    view: str = option("pod", "nezha: pod (per service) | system (all pods)")
    window: int | None = option(None, "Window length (default 64 nezha/asd, 256 else, moment: model seq_len).")
    stride: int | None = option(None, "Validation/test stride (default window/4).")
    train_stride: int | None = option(None, "Training-window stride (default window/16).", cli=False)
    shots: int | None = option(None, "Training windows (0 = zero-shot; rf/hgb: labelled windows). Default: all.")
    finetune: str = option("none", "moment: none | probe | lora; lagllama: none | full")
    model: str | None = option(None, "moment/lagllama: hub id or local folder (lagllama: 'scratch' trains a "
                                     "small one here); duallmad: backbone LM (alias | hub id | path, default "
                                     "smollm2-135m)")
    max_steps: int = option(200, "Training steps cap (lstm-ae, moment probe/lora, lagllama, duallmad stage 1).")
    epochs: int = option(3, "Training epochs cap (lstm-ae, moment probe/lora).", cli=False)
    batch_size: int = option(64, "Training batch size.", cli=False)
    lr: float = option(1e-3, "Learning rate.", cli=False)
    hidden: int = option(32, "lstm-ae hidden size.", cli=False)
    n_estimators: int = option(200, "iforest / rf / hgb: trees or boosting iterations.", cli=False)
    seed: int = option(0, "Seed of window sampling and training.")
    limit_series: int | None = option(None, "smd/asd: only the first N machines (series).", flag="--limit")
    val_fraction: float = option(0.3, "smd/asd: share of the labelled test part used for validation.", cli=False)
    event_tolerance: int = option(0, "Points after an event that still count as detecting it.", cli=False)
    threshold_objective: str = option("f1", "Validation objective of the threshold: f1 | accuracy | youden.",
                                      cli=False)
    threshold: str = option("val", "Threshold rule: val (best on validation points) | val-robust (the same on "
                                   "per-series robust-standardised scores; survives score drift) | "
                                   "contamination:Q (flag the top Q share of each part's own scores, labels unused)")
    out: str | None = option(None, "Run folder (default runs/numeric/...).")
    extra: dict[str, Any] = option(help="Passed to the detector constructor.", factory=dict, cli=False)


# ---------------------------------------------------------------------------------------------- data
def load_split(cfg: NumericConfig) -> SeriesSplit:
    """The train/validation/test series of ``cfg.data``."""
    kind, arg = parse_spec(cfg.data, family="series")
    if kind == "nezha":
        from llmad.data.nezha import make_split

        return make_split(arg or "trainticket", cfg.data_dir, view=cfg.view, split=cfg.split,
                          test_types=cfg.test_types)
    if cfg.split not in ("time",):
        raise LlmadError(f"--split {cfg.split} is only for nezha; {kind} uses a time split")
    if kind in ("smd", "asd"):
        from llmad.data.smd import make_split as smd_split

        return smd_split(kind, arg, cfg.data_dir, val_fraction=cfg.val_fraction, limit_machines=cfg.limit_series)
    from llmad.data.timeseries import load_csv_split

    return load_csv_split(arg)


def _moment_seq_len(model: str | None) -> int:
    import json

    from llmad.detectors.moment import moment_location

    p = Path(moment_location(model or "")).expanduser() / "config.json"
    if model and p.is_file():
        return int(json.loads(p.read_text()).get("seq_len", 512))
    return 512


def resolve_window(cfg: NumericConfig) -> int:
    """The window length a run uses (explicit, else per dataset and method)."""
    if cfg.window:
        return int(cfg.window)
    kind, _ = parse_spec(cfg.data, family="series")
    if kind in DEFAULT_WINDOW:
        return DEFAULT_WINDOW[kind]
    if cfg.method == "moment":
        return min(512, _moment_seq_len(cfg.model))
    return 256


# ---------------------------------------------------------------------------------------------- detectors
def build_detector(cfg: NumericConfig, work_dir: Path | None = None, train: WindowSet | None = None):
    """The detector for ``cfg.method`` with its options."""
    from llmad.detectors import windows as nb

    m, x = cfg.method, dict(cfg.extra)
    if m == "iforest":
        return nb.IForestDetector(n_estimators=cfg.n_estimators, seed=cfg.seed, **x)
    if m in ("rf", "hgb"):
        return nb.ForestDetector(method=m, n_estimators=cfg.n_estimators, seed=cfg.seed, **x)
    if m == "lstm-ae":
        return nb.LSTMAEDetector(hidden=cfg.hidden, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                                 max_steps=cfg.max_steps, seed=cfg.seed, **x)
    if m == "moment":
        from llmad.detectors.moment import DEFAULT_MODEL, MomentDetector

        return MomentDetector(model=cfg.model or DEFAULT_MODEL, finetune=cfg.finetune, epochs=cfg.epochs,
                              max_steps=cfg.max_steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, **x)
    if m == "lagllama":
        from llmad.detectors.lagllama import HUB_ID, LagLlamaDetector, build_small_lagllama

        model = cfg.model or HUB_ID
        ft = cfg.finetune if cfg.finetune != "probe" else "full"
        if model == "scratch":
            # No hub here: train a small Lag-Llama on the train windows themselves (self-supervised forecasting).
            if train is None or len(train) == 0:
                raise LlmadError("lagllama --model scratch needs training windows")
            path = (work_dir or Path("runs") / "lagllama-scratch") / "lag-llama.ckpt"
            from llmad.detectors.lagllama import default_lags

            # extra={"lags": [...], "context_length": n} shrinks the scratch model (tests, quick runs)
            lags = list(x.pop("lags", None) or default_lags(("min",)))
            ctx = int(x.pop("context_length", 32))
            xh, _ = train.windows_with_history(max(lags) + ctx)
            build_small_lagllama(path, context_length=ctx, lags_seq=lags, seed=cfg.seed, train_windows=xh,
                                 steps=cfg.max_steps, batch_size=cfg.batch_size, lr=cfg.lr)
            model, ft = str(path), "none"
        return LagLlamaDetector(model=model, finetune=ft, max_steps=cfg.max_steps, batch_size=cfg.batch_size,
                                lr=cfg.lr, seed=cfg.seed, **x)
    if m == "duallmad":  # extra: n_layers, branches, pretrained, stage2, patch, stage2_steps, group_by, ...
        from llmad.detectors.duallmad import DEFAULT_BACKBONE, DualLMADDetector

        return DualLMADDetector(backbone=cfg.model or DEFAULT_BACKBONE, steps=cfg.max_steps,
                                batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, **x)
    if m == "nll":  # llmad nll on metric windows: extra={"config": NLLConfig fields}
        from llmad.config import from_dict
        from llmad.detectors.nll.detector import NLLConfig, WindowNLLDetector

        return WindowNLLDetector(config=from_dict(NLLConfig, {"template": "window", "seed": cfg.seed,
                                                             **x.get("config", {})}))
    raise LlmadError(f"--method {m!r}: expected one of {', '.join(METHODS)}")


def select_training(cfg: NumericConfig, split: SeriesSplit, scaler: ZScore, window: int
                    ) -> tuple[WindowSet, list[Series], dict[str, Any]]:
    """(training windows, validation series for the threshold, notes) following the module doc's rules."""
    rng = np.random.default_rng(cfg.seed)
    tstride = cfg.train_stride or max(1, window // 16)
    supervised = cfg.method in ("rf", "hgb")
    info: dict[str, Any] = {}
    calib = split.validation
    if supervised:
        if all(s.labeled for s in split.train):
            pool = make_windows(split.train, scaler, window, tstride, part="train")
            info["label_pool"] = "train"
        else:
            from llmad.data.timeseries import alternate_event_segments

            pool_series, calib = alternate_event_segments(split.validation)
            pool = make_windows(pool_series, scaler, window, tstride, part="validation (label pool)")
            info["label_pool"] = ("validation event stretches 1, 3, 5, ... (train part unlabeled); "
                                  "threshold on stretches 2, 4, 6, ...")
        if cfg.shots == 0:
            raise LlmadError(f"{cfg.method} is supervised: --shots 0 leaves nothing to learn from")
        y = pool.window_labels()
        rows = subsample(np.arange(len(pool)), cfg.shots, rng)
        pos = np.flatnonzero(y == 1)
        if cfg.shots is not None and len(pos) and y[rows].sum() < min(2, len(pos)):
            need = min(2, len(pos)) - int(y[rows].sum())
            add = rng.choice(np.setdiff1d(pos, rows), size=need, replace=False)
            drop = rng.choice(rows[y[rows] == 0], size=need, replace=False)
            rows = np.sort(np.concatenate([np.setdiff1d(rows, drop), add]))
            info["forced_positives"] = int(need)
        train_ws = pool.subset(rows)
    else:
        if cfg.shots == 0:
            if cfg.method not in ("moment", "lagllama"):
                raise LlmadError(f"{cfg.method} has no zero-shot mode: use --shots > 0")
            train_ws = make_windows(split.train, scaler, window, tstride, part="train").subset(np.zeros(0, int))
        else:
            pool = make_windows(split.train, scaler, window, tstride, part="train")
            rows = np.arange(len(pool))
            if pool.all_labeled():
                rows = rows[pool.window_labels() == 0]
                info["dropped_anomalous_train_windows"] = int(len(pool) - len(rows))
            train_ws = pool.subset(subsample(rows, cfg.shots, rng))
        info["label_pool"] = "none (unsupervised; labels only drop known-anomalous train windows)"
    info["train_windows"] = int(len(train_ws))
    info["train_positive_windows"] = int(train_ws.window_labels().sum()) if len(train_ws) and \
        train_ws.all_labeled() else 0
    return train_ws, calib, info


# ---------------------------------------------------------------------------------------------- run
def run_numeric(cfg: NumericConfig, *, split: SeriesSplit | None = None, hooks: RunHooks | None = None,
                force: bool = False) -> RunResult:
    """Fit, calibrate on validation, score test; write a run folder when ``cfg.out`` (an ``out`` holding an
    earlier run is refused before any work unless ``force``).

    ``split``: an already-loaded ``SeriesSplit`` of ``cfg.data`` (else loaded here). ``RunResult.metrics`` is the
    metrics.json content; ``summary`` the line the CLI prints.
    """
    from llmad.metrics.timeseries import parse_threshold_rule, ts_report, validation_warning
    from llmad.rundir import check_out, peak_rss_mb, quiet_warnings

    hooks = RunHooks.of(hooks)
    out_dir = check_out(cfg.out, force=force) if cfg.out else None
    if cfg.method not in METHODS:
        raise LlmadError(f"--method {cfg.method!r}: expected one of {', '.join(METHODS)}")
    rule = parse_threshold_rule(cfg.threshold)
    if cfg.shots is not None and cfg.shots < 0:
        raise LlmadError("--shots must be >= 0")
    t_start = time.perf_counter()
    with quiet_warnings(out_dir, hooks.quiet):
        if split is None:
            hooks.stage(f"loading {cfg.data}")
            split = load_split(cfg)
        window = resolve_window(cfg)
        stride = cfg.stride or max(1, window // 4)
        scaler = ZScore().fit(split.train)
        train_ws, calib_series, sel = select_training(cfg, split, scaler, window)
        val_ws = make_windows(calib_series, scaler, window, stride, part="validation")
        test_ws = make_windows(split.test, scaler, window, stride, part="test")
        if val_ws.point_labels().sum() == 0:
            raise LlmadError("the validation part holds no anomalous point: a threshold cannot be chosen "
                             "(choose another split or more validation data)")
        if out_dir is not None:
            note_run(out_dir)
        det = build_detector(cfg, work_dir=out_dir / "models" if out_dir else None, train=train_ws)
        hooks.stage(f"fitting {cfg.method} on {len(train_ws)} windows")
        t0 = time.perf_counter()
        det.fit(train_ws, None)
        fit_s = time.perf_counter() - t0
        val_scores = det.score_points(val_ws)
        det.set_threshold(val_scores, val_ws.point_labels(), objective=cfg.threshold_objective)
        warning = validation_warning(val_ws.point_labels(), val_ws.point_events()[0]) if rule[0] != "contamination" \
            else None
        if warning:
            warn("thin-validation", warning)
        hooks.stage(f"scoring {len(test_ws)} test windows")
        t0 = time.perf_counter()
        test_scores = det.score_points(test_ws)
        score_s = time.perf_counter() - t0
    y = test_ws.point_labels()
    ev, types = test_ws.point_events()
    kind, _ = parse_spec(cfg.data, family="series")
    # The saved detector keeps the raw validation threshold; the rule decides what this run reports.
    val_scores, val_thr, test_scores, threshold, source = apply_threshold_rule(rule, det, cfg, val_ws, val_scores,
                                                                               test_ws, test_scores)
    rep = ts_report(y, test_scores, threshold, event_ids=ev, event_types=types,
                    tolerance=cfg.event_tolerance, step_seconds=STEP_SECONDS.get(kind),
                    vus_window=vus_window(split.test))
    val_rep = ts_report(val_ws.point_labels(), val_scores, val_thr)
    metrics: dict[str, Any] = {
        "method": det.name, "dataset": cfg.data, "split": split.summary(),
        "window": window, "stride": stride, "shots": cfg.shots, "selection": sel,
        "test": rep,
        "validation": {k: val_rep[k] for k in ("f1", "precision", "recall", "pr_auc", "roc_auc")},
        "threshold": threshold, "threshold_rule": cfg.threshold, "threshold_source": source,
        "warnings": [f"warning [thin-validation]: {warning}"] if warning else [],
        "timing": {"fit_seconds": fit_s, "score_seconds": score_s,
                   "test_windows": int(len(test_ws)),
                   "windows_per_second": len(test_ws) / score_s if score_s > 0 else float("nan"),
                   "points_per_second": len(y) / score_s if score_s > 0 else float("nan"),
                   "peak_rss_mb": peak_rss_mb(), "total_seconds": time.perf_counter() - t_start},
        "dropped": {"validation": val_ws.info.get("dropped", []), "test": test_ws.info.get("dropped", [])},
        "notes": _notes(cfg),
    }
    if np.ptp(test_scores) == 0:
        metrics["notes"].append("WARNING: the detector gave every test point the same score (degenerate)")
    names = np.concatenate([[n] * len(a) for n, a in zip(test_ws.names, test_ws.arrays)])
    idx = np.concatenate([np.arange(len(a)) for a in test_ws.arrays])
    preds = predictions_frame(pd.DataFrame({"label": y}), test_scores, threshold, id_columns=("label",))
    preds.insert(0, "series", names)
    preds.insert(1, "point", idx)
    preds["event"] = ev
    artifacts: dict[str, str] = {}
    if out_dir is not None:
        from llmad.rundir import write_run

        det.save(out_dir / "detector")
        write_run(out_dir, config={"numeric": asdict(cfg), "window": window, "stride": stride},
                  metrics=metrics, predictions=preds, command="numeric", data_dir=_data_dir(cfg))
        artifacts = {"detector": "detector", "predictions": "predictions.csv", "metrics": "metrics.json"}
    details = {k: metrics[k] for k in ("method", "window", "stride", "shots", "selection", "threshold", "notes")}
    return RunResult(metrics, preds, details=details, artifacts=artifacts, out_dir=out_dir,
                     summary=summary_line(metrics))


def vus_window(series: Sequence[Series]) -> int:
    """TSB-AD's VUS sliding window for a part: the median over its series of the first channel's period."""
    from llmad.metrics.timeseries import find_period

    return int(np.median([find_period(s.values[:, 0]) for s in series])) if series else 100


def _data_dir(cfg: NumericConfig) -> Path | None:
    """The data folder the run read (none for ``csv:<path>``)."""
    from llmad.api.result import data_dir_used

    return None if parse_spec(cfg.data, family="series")[0] == "csv" else data_dir_used(cfg.data_dir)


def apply_threshold_rule(rule: tuple[str, float | None], det: Any, cfg: NumericConfig, val_ws: WindowSet,
                         val_scores: np.ndarray, test_ws: WindowSet, test_scores: np.ndarray
                         ) -> tuple[np.ndarray, float, np.ndarray, float, str]:
    """(validation scores and threshold, test scores and threshold, where it came from) under ``--threshold``."""
    from llmad.metrics.classification import choose_threshold
    from llmad.metrics.timeseries import contamination_threshold, robust_standardise

    name, q = rule
    if name == "val":
        thr = float(det.threshold_)
        return val_scores, thr, test_scores, thr, "validation points (never test)"
    if name == "val-robust":
        v = robust_standardise(val_scores, [len(a) for a in val_ws.arrays])
        t = robust_standardise(test_scores, [len(a) for a in test_ws.arrays])
        thr = choose_threshold(val_ws.point_labels(), v, objective=cfg.threshold_objective)
        return v, float(thr), t, float(thr), ("val-robust: best on validation points of per-series "
                                              "robust-standardised scores ((s - series median) / MAD)")
    return (val_scores, contamination_threshold(val_scores, q), test_scores, contamination_threshold(test_scores, q),
            f"contamination:{q:g}: the top {q:.1%} of each part's own scores are flagged (labels unused)")


def _notes(cfg: NumericConfig) -> list[str]:
    notes = ["point-adjusted F1 is reported only under test.point_adjusted_INFLATED and never used to select"]
    model = cfg.model or ""
    if cfg.method in ("moment", "lagllama") and (Path(model).expanduser().exists() or model == "scratch"):
        notes.append("foundation model replaced by a small model trained on this machine (hub unreachable); "
                     "its zero-shot numbers are a stand-in, not the published model's")
    return notes


def summary_line(m: dict[str, Any]) -> str:
    """One line for the terminal."""
    t = m["test"]
    ev = t.get("event", {})
    return (f"{m['method']} on {m['dataset']}: F1 {t['f1']:.3f} P {t['precision']:.3f} R {t['recall']:.3f} "
            f"PR-AUC {t['pr_auc']:.3f} ROC-AUC {t['roc_auc']:.3f} VUS-PR {t.get('vus_pr', float('nan')):.3f} "
            f"event recall {ev.get('event_recall', float('nan')):.2f} "
            f"(threshold {m.get('threshold_rule', 'val')}; PA-F1 {t['point_adjusted_INFLATED']['f1']:.3f}, inflated)")


# ---------------------------------------------------------------------------------------------- pretraining
def pretrain_moment(data: Sequence[str], out: str | Path, data_dir: str | None = None, seq_len: int = 128,
                    d_model: int = 64, n_layers: int = 2, n_heads: int = 4, steps: int = 300,
                    batch_size: int = 64, lr: float = 1e-3, mask_ratio: float = 0.3, max_windows: int = 4000,
                    seed: int = 0, log_every: int = 0, force: bool = False,
                    hooks: RunHooks | None = None, quiet: bool = False) -> dict[str, Any]:
    """Self-supervised masked-reconstruction pretraining of a small MOMENT on the *train* parts of ``data``
    (labels unused), saved with ``save_pretrained(out/model)``; ``--model out`` loads it like a hub model.

    ``out`` is a run folder (config.json, provenance.json, pretrain.json, metrics.json last); one holding an earlier
    run is refused before any work unless ``force``; ``quiet``: library warnings go to ``<out>/warnings.log``."""
    from llmad.detectors.moment import pretrain_small_moment, small_moment_config
    from llmad.io import write_json
    from llmad.rundir import check_out, quiet_warnings, write_run

    hooks = RunHooks.of(hooks)
    if not data:
        raise LlmadError("pretrain moment: give at least one --data spec")
    out = check_out(out, force=force)
    hooks.stage(f"loading {', '.join(data)}")
    rng = np.random.default_rng(seed)
    chunks, used = [], {}
    for spec in data:
        cfg = NumericConfig(data=spec, data_dir=data_dir)
        split = load_split(cfg)
        ws = make_windows(split.train, ZScore().fit(split.train), seq_len, max(1, seq_len // 2), part=f"{spec} train")
        rows = subsample(np.arange(len(ws)), max_windows // len(data), rng)
        # Datasets differ in channel count: flatten to univariate windows (MOMENT is channel-independent).
        w = ws.windows(rows)
        chunks.append(np.transpose(w, (0, 2, 1)).reshape(-1, seq_len, 1))
        used[spec] = {"windows": int(len(rows)), "channels": int(w.shape[2])}
    x = np.concatenate(chunks)
    x = x[rng.permutation(len(x))[: max_windows * 8]]
    config = small_moment_config(seq_len=seq_len, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                                 d_ff=2 * d_model)
    t0 = time.perf_counter()
    hooks.stage(f"pretraining on {len(x)} sequences for {steps} steps")
    with quiet_warnings(out, quiet):
        res = pretrain_small_moment(x, out / "model", config=config, steps=steps, batch_size=batch_size, lr=lr,
                                    mask_ratio=mask_ratio, seed=seed, log_every=log_every)
    res.update({"data": used, "sequences": int(len(x)), "seconds": time.perf_counter() - t0,
                "note": "small MOMENT pretrained here on unlabeled train parts; a stand-in for MOMENT-1-large, "
                        "whose weights are unreachable offline", "model": "model"})
    write_json(out / "pretrain.json", res)
    settings = {"data": list(data), "seq_len": seq_len, "d_model": d_model, "n_layers": n_layers,
                "n_heads": n_heads, "steps": steps, "batch_size": batch_size, "lr": lr, "mask_ratio": mask_ratio,
                "max_windows": max_windows, "seed": seed, "data_dir": data_dir}
    write_run(out, command="pretrain moment", data_dir=_data_dir(NumericConfig(data=data[0], data_dir=data_dir)),
              config={"pretrain": settings}, metrics={k: v for k, v in res.items() if k != "note"})
    return res


# ---------------------------------------------------------------------------------------------- text route
def window_records(ws: WindowSet, rows: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Per window: features with last / mean / max z-scores, the label and where it comes from."""
    rows = np.arange(len(ws)) if rows is None else np.asarray(rows)
    x = ws.windows(rows)
    labels = ws.window_labels(rows)
    out = []
    for j, r in enumerate(rows):
        i, s = ws.index[r]
        feats = [{"name": f, "last": float(x[j, -1, k]), "mean": float(x[j, :, k].mean()),
                  "max": float(x[j, :, k].max()), "min": float(x[j, :, k].min())}
                 for k, f in enumerate(ws.features)]
        out.append({"series": ws.names[i], "start": int(s), "length": ws.length, "label": int(labels[j]),
                    "features": feats})
    return out


def render_windows(ws: WindowSet, template: str = "basic", rows: np.ndarray | None = None) -> pd.DataFrame:
    """``text,label`` rows (the LLM_AD CSV shape) from windows via a sandboxed ``prompts/window`` template."""
    from llmad.render import render_file

    recs = window_records(ws, rows)
    texts = [render_file(template, kind="window", window=r, features=r["features"]) for r in recs]
    return pd.DataFrame({"text": texts, "label": [r["label"] for r in recs],
                         "series": [r["series"] for r in recs], "start": [r["start"] for r in recs]})
