"""``llmad transfer``: OmniTransfer (Sun et al., "Efficient Multivariate Time Series Anomaly Detection Through
Transfer Learning for Large-Scale Software Systems") over llmad's window detectors, compared with per-entity
training from scratch on the same new entities.

One run: load a multi-entity source (``smd:all``, ``asd:all``, ``nezha:trainticket`` (one entity per service),
``csv:FOLDER``); a seeded ``offline_fraction`` of the entities is offline: their first ``short`` train points are
clustered (W-HAC, ``llmad.detectors.omnitransfer.cluster``) and one base model per cluster is trained on the
members nearest its centroid. The other entities are new and only have their first ``short`` train points (the
"short data", ``new_days`` of data): each is matched to the nearest centroid and adapted by full fine-tuning or
partial transfer (``llmad.detectors.omnitransfer.transfer``). The comparison trains a fresh detector per new entity
on its whole train part (``scratch_data=full``, the usual per-entity model; ``short``: the same short data).

Each entity is z-scored with statistics of the data its model trains on. Thresholds come from the entity's own
validation part when it holds an anomaly, else from the pooled validation points of all new entities (the same
rule for both arms); test metrics are per entity and averaged over the entities whose test part holds an anomaly.
Costs: optimizer steps and train seconds; init time = matching + distance score + adaptation (transfer) vs fit
(scratch), compute only (the days of data each arm waits for are reported beside it).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from llmad.api.hooks import RunHooks
from llmad.api.result import RunResult
from llmad.config import option
from llmad.data.specs import parse_spec
from llmad.data.timeseries import Series, SeriesSplit
from llmad.data.windows import ZScore, make_windows
from llmad.errors import LlmadError

TRANSFER_METHODS = ("lstm-ae", "duallmad", "moment")


@dataclass
class TransferConfig:
    """One OmniTransfer run (every CLI option of ``llmad transfer`` maps onto a field)."""

    data: str = option("asd:all", "Multi-entity source: smd:all | asd:all | nezha:trainticket | csv:FOLDER "
                                  "(entities: machines, servers, services, files)")
    data_dir: str | None = option(None, "Data folder (default: the shared data dir).")
    method: str = option("lstm-ae", "lstm-ae | duallmad | moment")
    model: str | None = option(None, "moment: hub id or local folder (an `llmad pretrain moment` run works).")
    finetune: str = option("probe", "moment: probe | lora (what the base and scratch models train).", cli=False)
    offline_fraction: float = option(0.5, "Share of entities clustered offline (the rest are new).")
    new_days: float = option(1.0, "Short data of a new entity (and the clustering segment), in days.")
    short_points: int | None = option(None, "Short data in points (overrides --new-days).", cli=False)
    n_clusters: int | None = option(2, "Clusters of the offline entities (0: cut the tree at cluster_threshold).")
    cluster_threshold: float = option(0.5, "W-HAC distance cut when --n-clusters is 0.", cli=False)
    alpha: float = option(0.5, "Periodicity weight exponent: PW = period ** -alpha.")
    base_members: int = option(3, "Entities nearest a centroid that train its base model.", cli=False)
    distance_threshold: float = option(2.0, "Full fine-tuning when the distance score is at most this many times "
                                            "the base model's own score, else partial transfer.")
    mode: str = option("auto", "auto (distance rule) | full | partial", cli=False)
    window: int = option(64, "Window length (points).")
    stride: int | None = option(None, "Validation/test stride (default window/4).")
    train_stride: int | None = option(None, "Training-window stride (default window/16).", cli=False)
    max_steps: int = option(200, "Optimizer steps of each from-scratch model.")
    transfer_steps: int = option(50, "Optimizer steps of each transfer (partial: half frozen, half all).")
    base_steps: int = option(400, "Optimizer steps of each cluster base model (offline).")
    scratch_data: str = option("full", "Scratch models train on: full (the whole train part) | short.", cli=False)
    batch_size: int = option(64, "Training batch size.", cli=False)
    lr: float = option(1e-3, "Learning rate.", cli=False)
    hidden: int = option(32, "lstm-ae hidden size.", cli=False)
    vus_window: int = option(100, "VUS-PR sliding window (TSB-AD's slidingWindow; buffers 0..2x).", cli=False)
    limit_series: int | None = option(None, "Only the first N entities.", flag="--limit")
    seed: int = option(0, "Seed of the offline/new draw and of training.")
    out: str | None = option(None, "Run folder (default runs/transfer/...).")
    extra: dict[str, Any] = option(help="Passed to the detector constructor.", factory=dict, cli=False)


STEP_SECONDS = {"nezha": 60.0, "smd": 60.0, "asd": 300.0, "csv": 60.0}


# ---------------------------------------------------------------------------------------------- entities
@dataclass
class Entity:
    """One entity's series by part."""

    name: str
    train: list[Series]
    validation: list[Series]
    test: list[Series]


def entity_key(s: Series) -> str:
    """The entity a series belongs to: its group (machine, server, service), else the file it was cut from."""
    return str(s.meta.get("group") or s.meta.get("parent") or s.name)


def group_entities(split: SeriesSplit) -> list[Entity]:
    """The split's series grouped by entity, in first-seen order; entities without train or test data dropped."""
    out: dict[str, Entity] = {}
    for part, series in split.parts().items():
        for s in series:
            e = out.setdefault(entity_key(s), Entity(entity_key(s), [], [], []))
            getattr(e, part).append(s)
    return [e for e in out.values() if e.train and e.test]


def head_points(series: list[Series], n: int) -> list[Series]:
    """The first ``n`` points of a list of series (in order, the last one cut)."""
    out, left = [], int(n)
    for s in series:
        if left <= 0:
            break
        out.append(s if len(s) <= left else s.slice(0, left, name=f"{s.name}[:{left}]"))
        left -= len(out[-1])
    return out


def short_length(cfg: TransferConfig) -> int:
    """Points of short data."""
    if cfg.short_points:
        return int(cfg.short_points)
    kind, _ = parse_spec(cfg.data, family="series")
    return max(cfg.window + 1, int(round(cfg.new_days * 86400 / STEP_SECONDS.get(kind, 60.0))))


# ---------------------------------------------------------------------------------------------- detectors
def make_detector(cfg: TransferConfig, steps: int, seed: int):
    """A fresh detector of ``cfg.method`` through the same construction path as ``llmad numeric``."""
    from llmad.api.numeric import METHODS, NumericConfig, build_detector
    from llmad.detectors.omnitransfer.transfer import check_protocol, set_steps

    if cfg.method not in TRANSFER_METHODS:
        raise LlmadError(f"--method {cfg.method!r}: expected one of {', '.join(TRANSFER_METHODS)}")
    if cfg.method not in METHODS:
        raise LlmadError(f"--method {cfg.method}: this llmad build has no {cfg.method} detector "
                         f"(llmad.detectors.{cfg.method} is missing)")
    ncfg = NumericConfig(method=cfg.method, model=cfg.model, finetune=cfg.finetune, max_steps=steps,
                         batch_size=cfg.batch_size, lr=cfg.lr, hidden=cfg.hidden, seed=seed, extra=dict(cfg.extra))
    det = build_detector(ncfg)
    check_protocol(det)
    set_steps(det, steps, seed)
    return det


# ---------------------------------------------------------------------------------------------- evaluation
def _point_metrics(y: np.ndarray, s: np.ndarray, thr: float, vus_window: int) -> dict[str, Any]:
    from sklearn.metrics import average_precision_score

    from llmad.metrics.timeseries import event_f1, event_recall, point_adjust, point_f1, vus_pr

    pred = (s >= thr).astype(int)
    has = 0 < y.sum() < len(y)
    return {**point_f1(y, pred),
            "pr_auc": float(average_precision_score(y, s)) if has else float("nan"),
            "vus_pr": vus_pr(y, s, sliding_window=vus_window) if has else float("nan"),
            "event_recall": event_recall(y, pred), "event_f1": event_f1(y, pred),
            "pa_f1_INFLATED": point_f1(y, point_adjust(y, pred))["f1"], "positives": int(y.sum()),
            "points": int(len(y))}


def evaluate(arms: dict[str, dict[str, dict[str, Any]]], vus_window: int) -> None:
    """Per arm and entity: threshold (own validation, else pooled validation of the arm) and test metrics,
    written into each entity record under ``metrics``."""
    from llmad.metrics.classification import choose_threshold

    for recs in arms.values():
        pooled_y = np.concatenate([r["val_y"] for r in recs.values()])
        pooled_s = np.concatenate([r["val_s"] for r in recs.values()])
        pooled = float(choose_threshold(pooled_y, pooled_s)) if pooled_y.sum() else float(pooled_s.max())
        for r in recs.values():
            own = r["val_y"].sum() > 0
            thr = float(choose_threshold(r["val_y"], r["val_s"])) if own else pooled
            r["threshold"], r["threshold_source"] = thr, "own validation" if own else "pooled validation"
            r["metrics"] = _point_metrics(r["test_y"], r["test_s"], thr, vus_window)


def _scores(det: Any, series: list[Series], scaler: ZScore, window: int, stride: int) -> tuple[np.ndarray, ...]:
    ws = make_windows(series, scaler, window, stride, part="evaluation")
    return ws.point_labels(), det.score_points(ws)


def mean_metrics(recs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Means over entities whose test part holds an anomaly."""
    rows = [r["metrics"] for r in recs.values() if r["metrics"]["positives"] > 0]
    keys = ("f1", "precision", "recall", "pr_auc", "vus_pr", "event_recall", "event_f1", "pa_f1_INFLATED")
    out = {k: float(np.nanmean([m[k] for m in rows])) if rows else float("nan") for k in keys}
    out["entities"] = len(rows)
    return out


# ---------------------------------------------------------------------------------------------- run
def run_transfer(cfg: TransferConfig, *, split: SeriesSplit | None = None, hooks: RunHooks | None = None,
                 force: bool = False) -> RunResult:
    """Cluster the offline entities, train base models, transfer to the new ones, train the scratch comparison;
    metrics.json holds per-entity rows, the comparison and ``summary``."""
    from llmad.api.numeric import NumericConfig, load_split
    from llmad.detectors.omnitransfer.cluster import profile, whac
    from llmad.detectors.omnitransfer.transfer import adapt, choose_mode, distance_score, steps_taken
    from llmad.rundir import check_out, quiet_warnings

    hooks = RunHooks.of(hooks)
    check_config(cfg)
    out_dir = check_out(cfg.out, force=force) if cfg.out else None
    t_start = time.perf_counter()
    with quiet_warnings(out_dir, hooks.quiet):
        if split is None:
            hooks.stage(f"loading {cfg.data}")
            split = load_split(NumericConfig(data=cfg.data, data_dir=cfg.data_dir))
        ents = group_entities(split)
        if cfg.limit_series:
            ents = ents[:cfg.limit_series]
        if len(ents) < 2:
            raise LlmadError(f"{cfg.data}: transfer needs at least 2 entities with train and test data, "
                             f"found {len(ents)}")
        rng = np.random.default_rng(cfg.seed)
        order = rng.permutation(len(ents))
        n_off = min(len(ents) - 1, max(1, int(round(cfg.offline_fraction * len(ents)))))
        offline = [ents[i] for i in sorted(order[:n_off])]
        new = [ents[i] for i in sorted(order[n_off:])]
        n_short = short_length(cfg)
        stride = cfg.stride or max(1, cfg.window // 4)
        tstride = cfg.train_stride or max(1, cfg.window // 16)

        # -- offline: W-HAC + one base model per cluster
        hooks.stage(f"clustering {len(offline)} offline entities")
        t0 = time.perf_counter()
        profs = [profile(e.name, _values(head_points(e.train, n_short)), alpha=cfg.alpha) for e in offline]
        cl = whac(profs, n_clusters=cfg.n_clusters or None,
                  distance_threshold=None if cfg.n_clusters else cfg.cluster_threshold)
        cluster_s = time.perf_counter() - t0
        bases, base_rows = [], []
        for c in range(cl.n_clusters):
            members = cl.members(c)[:max(1, cfg.base_members)]
            hooks.stage(f"base model {c + 1}/{cl.n_clusters} on {[offline[i].name for i in members]}")
            # offline entities have their whole history; ZScore keeps one mean/std per entity (group)
            tr = [s for i in members for s in offline[i].train]
            train_ws = make_windows(tr, ZScore().fit(tr), cfg.window, tstride, part="base train")
            det = make_detector(cfg, cfg.base_steps, cfg.seed)
            t0 = time.perf_counter()
            det.fit(train_ws, None)
            fit_s = time.perf_counter() - t0
            ref = distance_score(det, train_ws)
            bases.append((det, ref))
            base_rows.append({"cluster": c, "members": [offline[i].name for i in cl.members(c)],
                              "centroid": offline[cl.medoids[c]].name,
                              "trained_on": [offline[i].name for i in members], "steps": steps_taken(det),
                              "train_seconds": fit_s, "own_distance_score": ref,
                              "train_windows": int(len(train_ws))})

        # -- new entities: transfer and scratch
        arms: dict[str, dict[str, dict[str, Any]]] = {"transfer": {}, "scratch": {}}
        rows = []
        for k, e in enumerate(new):
            hooks.stage(f"new entity {k + 1}/{len(new)}: {e.name}")
            short = head_points(e.train, n_short)
            t0 = time.perf_counter()
            c, dists = cl.match(profile(e.name, _values(short), alpha=cfg.alpha))
            scaler = ZScore().fit(short)
            short_ws = make_windows(short, scaler, cfg.window, tstride, part="short train")
            base, ref = bases[c]
            score = distance_score(base, short_ws)
            mode = choose_mode(score, ref, cfg.distance_threshold, cfg.mode)
            match_s = time.perf_counter() - t0
            det, info = adapt(base, short_ws, mode, cfg.transfer_steps, seed=cfg.seed)
            arms["transfer"][e.name] = _arm(det, e, scaler, cfg.window, stride)

            sc_train = e.train if cfg.scratch_data == "full" else short
            sc_scaler = ZScore().fit(sc_train)
            sc_ws = make_windows(sc_train, sc_scaler, cfg.window, tstride, part="train")
            sdet = make_detector(cfg, cfg.max_steps, cfg.seed)
            t1 = time.perf_counter()
            sdet.fit(sc_ws, None)
            sc_s = time.perf_counter() - t1
            arms["scratch"][e.name] = _arm(sdet, e, sc_scaler, cfg.window, stride)
            rows.append({"entity": e.name, "cluster": c, "centroid_distances": [float(d) for d in dists],
                         "distance_score": score, "distance_ratio": score / max(ref, 1e-12), "mode": mode,
                         "transfer": {"steps": info["steps"], "train_seconds": info["seconds"],
                                      "match_seconds": match_s, "init_seconds": match_s + info["seconds"],
                                      "phases": info["phases"], "train_points": int(sum(len(s) for s in short))},
                         "scratch": {"steps": steps_taken(sdet), "train_seconds": sc_s, "init_seconds": sc_s,
                                     "train_points": int(sum(len(s) for s in sc_train))}})
            if out_dir is not None:
                det.save(out_dir / "detectors" / _safe(e.name))
    evaluate(arms, cfg.vus_window)
    for r in rows:
        for arm in ("transfer", "scratch"):
            rec = arms[arm][r["entity"]]
            r[arm].update({"threshold": rec["threshold"], "threshold_source": rec["threshold_source"],
                           **rec["metrics"]})
    metrics = _report(cfg, split, cl, offline, new, base_rows, rows, arms, n_short, cluster_s,
                      time.perf_counter() - t_start)
    preds = _predictions(arms)
    artifacts: dict[str, str] = {}
    if out_dir is not None:
        from llmad.api.result import data_dir_used
        from llmad.rundir import write_run

        kind, _ = parse_spec(cfg.data, family="series")
        write_run(out_dir, config={"transfer": asdict(cfg), "short_points": n_short}, metrics=metrics,
                  predictions=preds, command="transfer",
                  data_dir=None if kind == "csv" else data_dir_used(cfg.data_dir))
        artifacts = {"detectors": "detectors", "predictions": "predictions.csv", "metrics": "metrics.json"}
    return RunResult(metrics, preds, details={"summary": metrics["summary"]}, artifacts=artifacts,
                     out_dir=out_dir, summary=summary_line(metrics))


def check_config(cfg: TransferConfig) -> None:
    """Bad options fail before any data is read, one line each."""
    if cfg.method not in TRANSFER_METHODS:
        raise LlmadError(f"--method {cfg.method!r}: expected one of {', '.join(TRANSFER_METHODS)}")
    if not 0 < cfg.offline_fraction < 1:
        raise LlmadError(f"--offline-fraction must be in (0, 1), got {cfg.offline_fraction}")
    if cfg.new_days <= 0 or (cfg.short_points is not None and cfg.short_points < 2):
        raise LlmadError("--new-days must be > 0 (short_points >= 2)")
    if cfg.n_clusters is not None and cfg.n_clusters < 0:
        raise LlmadError(f"--n-clusters must be >= 0, got {cfg.n_clusters}")
    if cfg.distance_threshold <= 0:
        raise LlmadError(f"--distance-threshold must be > 0, got {cfg.distance_threshold}")
    for name in ("max_steps", "transfer_steps", "base_steps"):
        if getattr(cfg, name) < 1:
            raise LlmadError(f"--{name.replace('_', '-')} must be >= 1")
    if cfg.scratch_data not in ("full", "short"):
        raise LlmadError(f"scratch_data {cfg.scratch_data!r}: expected full or short")
    if cfg.window < 2:
        raise LlmadError(f"--window must be >= 2, got {cfg.window}")
    from llmad.detectors.omnitransfer.transfer import MODES

    if cfg.mode not in MODES:
        raise LlmadError(f"mode {cfg.mode!r}: expected one of {', '.join(MODES)}")


def _values(series: list[Series]) -> np.ndarray:
    return np.concatenate([s.values for s in series])


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _arm(det: Any, e: Entity, scaler: ZScore, window: int, stride: int) -> dict[str, Any]:
    vy, vs = _scores(det, e.validation, scaler, window, stride) if e.validation else (np.zeros(0), np.zeros(0))
    ty, ts = _scores(det, e.test, scaler, window, stride)
    return {"val_y": vy, "val_s": vs, "test_y": ty, "test_s": ts}


def _predictions(arms: dict[str, dict[str, dict[str, Any]]]) -> pd.DataFrame:
    frames = []
    for name, rec in arms["transfer"].items():
        sc = arms["scratch"][name]
        frames.append(pd.DataFrame({
            "entity": name, "point": np.arange(len(rec["test_y"])), "label": rec["test_y"],
            "score_transfer": rec["test_s"], "prediction_transfer": (rec["test_s"] >= rec["threshold"]).astype(int),
            "score_scratch": sc["test_s"], "prediction_scratch": (sc["test_s"] >= sc["threshold"]).astype(int)}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _reduction(new: float, old: float) -> float:
    return float(1 - new / old) if old > 0 else float("nan")


def _report(cfg: TransferConfig, split: SeriesSplit, cl: Any, offline: list[Entity], new: list[Entity],
            base_rows: list[dict], rows: list[dict], arms: dict, n_short: int, cluster_s: float,
            total_s: float) -> dict[str, Any]:
    tr, sc = mean_metrics(arms["transfer"]), mean_metrics(arms["scratch"])
    cost = {arm: {k: float(sum(r[arm][k] for r in rows)) for k in ("steps", "train_seconds", "init_seconds")}
            for arm in ("transfer", "scratch")}
    offline_cost = {"steps": float(sum(b["steps"] for b in base_rows)),
                    "train_seconds": float(sum(b["train_seconds"] for b in base_rows)),
                    "cluster_seconds": cluster_s}
    kind, _ = parse_spec(cfg.data, family="series")
    step_s = STEP_SECONDS.get(kind, 60.0)
    summary = {
        "training_cost_reduction": _reduction(cost["transfer"]["steps"], cost["scratch"]["steps"]),
        "training_cost_reduction_seconds": _reduction(cost["transfer"]["train_seconds"],
                                                      cost["scratch"]["train_seconds"]),
        "init_time_reduction": _reduction(cost["transfer"]["init_seconds"], cost["scratch"]["init_seconds"]),
        "f1_loss": sc["f1"] - tr["f1"],
        "vus_pr_loss": sc["vus_pr"] - tr["vus_pr"],
        "cost_definition": "training_cost_reduction = 1 - transfer optimizer steps / scratch optimizer steps "
                           "(new entities only; _seconds: the same with train seconds); init_time_reduction: "
                           "matching + distance score + adaptation seconds vs scratch fit seconds (compute only)",
        "f1_definition": "mean scratch point F1 - mean transfer point F1 over new entities with test anomalies",
        "new_entities": len(new), "modes": {m: sum(r["mode"] == m for r in rows) for m in ("full", "partial")},
        "short_points": n_short, "short_days": n_short * step_s / 86400,
        "scratch_data_days": float(np.mean([r["scratch"]["train_points"] for r in rows]) * step_s / 86400)
        if rows else 0.0,
    }
    return {
        "method": cfg.method, "dataset": cfg.data, "split": split.summary(),
        "offline_entities": [e.name for e in offline], "new_entities": [e.name for e in new],
        "clustering": {"n_clusters": cl.n_clusters, "labels": dict(zip(cl.names, map(int, cl.labels))),
                       "centroids": [cl.names[m] for m in cl.medoids], "seconds": cluster_s,
                       "periods": {p.name: [int(x) for x in p.periods] for p in cl.profiles}},
        "base_models": base_rows, "entities": rows,
        "transfer": {**tr, "cost": cost["transfer"]}, "scratch": {**sc, "cost": cost["scratch"]},
        "offline_cost": offline_cost, "summary": summary, "total_seconds": total_s,
        "notes": ["point F1 at a threshold from validation (own, else pooled over new entities); VUS-PR as "
                  "TSB-AD defines it; event F1 = event recall with point precision (TSB-AD); PA-F1 is "
                  "point-adjusted and inflated, reported only as pa_f1_INFLATED"],
    }


def summary_line(m: dict[str, Any]) -> str:
    """One line for the terminal."""
    s, t, c = m["summary"], m["transfer"], m["scratch"]
    return (f"omnitransfer {m['method']} on {m['dataset']}: {s['new_entities']} new entities "
            f"({s['modes']['full']} full, {s['modes']['partial']} partial); F1 transfer {t['f1']:.3f} vs scratch "
            f"{c['f1']:.3f} (loss {s['f1_loss']:+.3f}); VUS-PR {t['vus_pr']:.3f} vs {c['vus_pr']:.3f}; "
            f"training cost -{s['training_cost_reduction']:.0%} steps, "
            f"-{s['training_cost_reduction_seconds']:.0%} seconds; init time -{s['init_time_reduction']:.0%}")
