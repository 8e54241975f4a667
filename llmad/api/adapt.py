"""Python API behind ``llmad adapt``: adapt to a workflow never trained on, from k labeled runs (FLASH-style).

Protocol (one target workflow; every method sees the same rows):
- sources: every other shipped workflow (or ``sources``); a seeded sample of each one's run-split train part;
- target: its run split; ``k`` labeled runs are drawn from its train part (nested: the 1-run support is inside the
  2-run one), plus unlabeled train jobs (labels dropped before any method sees them); ``full`` = up to
  ``full_jobs`` labeled train jobs, the reference each method's own F1 is measured against; test = the test part;
- methods: ``scratch`` (the encoder fine-tuned on the k runs only), ``transfer`` (an SFT model trained on the
  sources, fine-tuned on the k runs: the LLM_AD recipe), ``proto`` (``llmad.detectors.proto``: meta-trained on the
  sources, paired with the target without retraining its network), ``trees`` (rf/hgb on the numeric +
  peer-context features of the k runs);
- threshold, the same named rule for every method and k (``rate``): the top ``rate`` of the unlabeled target jobs'
  scores, ``rate`` = the labeled target jobs' anomaly share (averaged per run) shrunk toward the sources' share as
  if 20 more runs had been seen at it (``proto.shrunk_rate``). No test label and no target validation label is read;
- ``adapt_s``: wall time from the target data to a usable detector (fine-tuning or pairing + scoring the unlabeled
  jobs for the threshold); what the sources cost is paid once, offline, and reported apart (``source_s``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmad.api.hooks import RunHooks
from llmad.api.result import RunResult, data_dir_used, predictions_frame
from llmad.config import option
from llmad.errors import LlmadError

METHODS = ("scratch", "transfer", "proto", "trees")


@dataclass
class AdaptConfig:
    """One ``llmad adapt`` run: a target workflow, its source workflows, the methods and the k values."""

    target: str = option("1000genome", "the workflow adapted to (never trained on before): a Flow-Bench name",
                         flag="--target")
    sources: str = option("all", "source workflows, comma separated; all = every other shipped workflow",
                          flag="--sources")
    methods: str = option(",".join(METHODS), "comma list of scratch | transfer | proto | trees", flag="--methods")
    shots: str = option("0,1,2,5", "labeled target runs per adaptation, comma list (full is always added)")
    source_jobs: int = option(300, "seeded sample of train jobs per source workflow", flag="--source-jobs")
    shot_jobs: int = option(200, "cap on the labeled target jobs of the k runs (a seeded sample)",
                            flag="--shot-jobs")
    full_jobs: int = option(1000, "labeled target train jobs of the full-target reference", flag="--full-jobs")
    unlabeled_jobs: int = option(400, "target train jobs used without labels (scales, centre, threshold)",
                                 flag="--unlabeled-jobs")
    limit: int = option(500, "seeded sample of the target's test part that is scored")
    model: str = option("minilm", "encoder of scratch, transfer and proto: offline alias, hub id or folder")
    source_model: str | None = option(None, "a saved llmad SFT model to transfer from (default: one trained on "
                                            "the sources in this run)", flag="--source-model")
    epochs: float = option(2.0, "SFT epochs, on the sources and on the k runs")
    tree: str = option("rf", "rf | hgb: the trees method (numeric + peer-context features)", flag="--tree")
    episodes: int = option(300, "proto: meta-training episodes on the sources", cli=False)
    seed: int = option(0, "seed of the splits, samples, run draws and training")
    data_dir: str | None = option(None, "data folder")
    out: str | None = option(None, "output folder [runs/adapt/<target>-<time>]")
    save_models: bool = option(False, "also save every adapted SFT model (proto models are always saved)",
                               flag="--save-models")

    def method_list(self) -> list[str]:
        """The methods asked for, checked."""
        ms = [m.strip() for m in self.methods.split(",") if m.strip()]
        bad = [m for m in ms if m not in METHODS]
        if bad or not ms:
            raise LlmadError(f"--methods {self.methods!r}: expected a comma list of {', '.join(METHODS)}")
        return ms

    def shot_list(self) -> list[int]:
        """The k values asked for, checked (sorted, unique)."""
        try:
            ks = sorted({int(s) for s in self.shots.split(",") if s.strip()})
        except ValueError:
            raise LlmadError(f"--shots {self.shots!r}: expected a comma list of integers >= 0, e.g. 0,1,2,5") from None
        if not ks or ks[0] < 0:
            raise LlmadError(f"--shots {self.shots!r}: expected a comma list of integers >= 0, e.g. 0,1,2,5")
        return ks


def load_workflows(cfg: AdaptConfig, splits: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """The target's run split and each source's (peer context on each whole table before any sample);
    ``splits``: already-loaded run splits by workflow name (a benchmark loads each workflow once)."""
    from llmad.data import load_split
    from llmad.data.flowbench import available_workflows

    names = available_workflows(cfg.data_dir)
    target = cfg.target.removeprefix("flowbench:")
    if target not in names:
        raise LlmadError(f"--target {cfg.target!r}: not a shipped workflow ({', '.join(names)})")
    srcs = [w for w in names if w != target] if cfg.sources == "all" else [
        s.strip().removeprefix("flowbench:") for s in cfg.sources.split(",") if s.strip()]
    bad = [s for s in srcs if s not in names or s == target]
    if bad or len(srcs) < 2:
        raise LlmadError(f"--sources {cfg.sources!r}: need >= 2 shipped workflows other than the target "
                         f"(bad: {', '.join(bad) or 'too few'})")

    def split(w: str):
        if splits is not None and w in splits:
            return splits[w]
        return load_split(f"flowbench:{w}", split="run", seed=cfg.seed, data_dir=cfg.data_dir, context=True)

    return split(target), {w: split(w) for w in srcs}


def supports(train: pd.DataFrame, ks: list[int], cap: int, seed: int) -> dict[int, pd.DataFrame]:
    """Nested k-run supports drawn from ``train``'s runs (seeded), each capped at ``cap`` jobs."""
    from llmad.data.splits import subsample

    runs = np.random.default_rng(seed).permutation(np.sort(train["run_id"].astype(str).unique()))
    out = {}
    for k in ks:
        if k > len(runs):
            raise LlmadError(f"--shots {k}: the target's train part has only {len(runs)} runs")
        if k:
            out[k] = subsample(train[train["run_id"].astype(str).isin(runs[:k])], cap, seed)
    return out


def _rate_threshold(det: Any, unlabeled: pd.DataFrame, labeled: pd.DataFrame | None, prior: float) -> float:
    from llmad.detectors.proto import rate_threshold, shrunk_rate

    det.rate_ = shrunk_rate(labeled, prior)
    det.threshold_ = rate_threshold(det.score(unlabeled), det.rate_)
    return det.threshold_


def _sft(cfg: AdaptConfig, init_from: str | None, epochs: float):
    from llmad.detectors.sft.config import SFTConfig
    from llmad.detectors.sft.detector import SFTDetector

    # No validation labels on the target: no evaluation passes, a fixed number of epochs, threshold by rate.
    return SFTDetector(SFTConfig(model=cfg.model, init_from=init_from, epochs=epochs, eval_during_training=False,
                                 early_stopping_patience=0, threshold_objective="argmax", seed=cfg.seed,
                                 progress=False))


def source_lm(path: str) -> str:
    """The SFT model folder to transfer from: a saved SFT model, a run folder holding one in ``model/``, or a
    fused stack (its first scoring LM: the full-train one, or fold 0's with ``test_lm: folds``; the stack's tree
    is fitted on the source's own features and is not carried)."""
    from llmad.detectors.base import read_detector_json

    p = Path(path).expanduser()
    if not (p / "detector.json").is_file() and (p / "model" / "detector.json").is_file():
        p = p / "model"
    kind = read_detector_json(p).get("kind")
    if kind == "sft":
        return str(p)
    if kind == "fusion-stack":
        return str(p / "lm")
    raise LlmadError(f"--source-model {path}: a saved {kind!r} detector; transfer needs an SFT model or a fused stack")


class _Method:
    """One method's source step (offline) and adaptation step (timed), behind one interface."""

    def __init__(self, name: str, cfg: AdaptConfig, out: Path):
        self.name, self.cfg, self.out = name, cfg, out
        self.source_s = 0.0
        self.source_model: str | None = None
        self.proto = None

    def prepare(self, source: pd.DataFrame, hooks: RunHooks) -> None:
        """What the method learns from the sources (not part of ``adapt_s``)."""
        from llmad.detectors.proto import ProtoDetector

        t0 = time.perf_counter()
        if self.name == "transfer":
            self.source_model = source_lm(self.cfg.source_model) if self.cfg.source_model else None
            if self.source_model is None:
                hooks.stage(f"transfer: training the source SFT model on {len(source)} source jobs")
                det = _sft(self.cfg, None, self.cfg.epochs).fit(source)
                self.source_model = str(self.out / "source_sft")
                det.save(self.source_model)
        elif self.name == "proto":
            hooks.stage(f"proto: meta-training on {len(source)} source jobs")
            self.proto = ProtoDetector(encoder=self.cfg.model, episodes=self.cfg.episodes, seed=self.cfg.seed)
            self.proto.fit(source)
        self.source_s = time.perf_counter() - t0

    def adapt(self, unlabeled: pd.DataFrame, labeled: pd.DataFrame | None, prior: float) -> tuple[Any, str]:
        """A detector for the target (``None`` when the method cannot use this support) and a note."""
        import copy

        from llmad.detectors.baselines import BaselineDetector

        one_class = labeled is not None and labeled["label"].nunique() < 2
        if self.name == "proto":
            # adapt() replaces every fitted pairing attribute, so a shallow copy keeps the meta-trained detector
            # reusable for the next k without copying its encoder (a deep copy duplicated MiniLM on every k)
            return copy.copy(self.proto).adapt(unlabeled, labeled), ""
        if labeled is None and self.name in ("scratch", "trees"):
            return None, "needs labeled target runs"
        if self.name == "trees":
            if one_class:
                return None, "one class in the labeled runs: a tree cannot be fitted"
            det = BaselineDetector(method=self.cfg.tree, features="context", seed=self.cfg.seed).fit(labeled)
        elif self.name == "transfer" and labeled is None:
            from llmad.detectors.sft.detector import SFTDetector

            det = SFTDetector.load(self.source_model)
        else:
            det = _sft(self.cfg, self.source_model if self.name == "transfer" else None, self.cfg.epochs)
            det.fit(labeled)
        _rate_threshold(det, unlabeled, labeled, prior)
        return det, "one class in the labeled runs" if one_class else ""


def run_adapt(cfg: AdaptConfig, *, hooks: RunHooks | None = None, force: bool = False,
              splits: dict[str, Any] | None = None) -> RunResult:
    """Every method x every k (+ full) on one target workflow: metrics.json rows, summary, predictions.

    ``splits``: already-loaded run splits (``cfg.seed``, peer context) by workflow name; others are loaded here.
    """
    from llmad.data.splits import subsample
    from llmad.metrics.classification import classification_report
    from llmad.rundir import check_out, default_out, quiet_warnings, write_run

    hooks = RunHooks.of(hooks)
    methods, ks = cfg.method_list(), cfg.shot_list()
    if cfg.tree not in ("rf", "hgb"):
        raise LlmadError(f"--tree {cfg.tree!r}: expected rf or hgb")
    out = check_out(cfg.out or default_out("adapt", cfg.target), force=force)
    with quiet_warnings(out, hooks.quiet):
        hooks.stage("loading the target and source workflows")
        split, srcs = load_workflows(cfg, splits)
        train = split.part("train")
        test = subsample(split.part("test"), cfg.limit, cfg.seed)
        # Labels dropped: nothing downstream can read what the unlabeled jobs are.
        unlabeled = subsample(train, cfg.unlabeled_jobs, cfg.seed + 1).drop(columns=["label", "anomaly_type"])
        sets: dict[Any, pd.DataFrame | None] = {0: None} if 0 in ks else {}
        sets.update(supports(train, ks, cfg.shot_jobs, cfg.seed))
        sets["full"] = subsample(train, cfg.full_jobs, cfg.seed)
        source = pd.concat([subsample(s.part("train"), cfg.source_jobs, cfg.seed) for s in srcs.values()],
                           ignore_index=True)
        prior = float(source.groupby("workflow")["label"].mean().mean())
        rows, preds, saved = [], [], {}
        for name in methods:
            m = _Method(name, cfg, out)
            m.prepare(source, hooks)
            for k, labeled in sets.items():
                hooks.stage(f"{name}: adapting with k={k}")
                t0 = time.perf_counter()
                det, note = m.adapt(unlabeled, labeled, prior)
                adapt_s = time.perf_counter() - t0
                row = {"target": cfg.target, "method": name, "k": k,
                       "support_jobs": 0 if labeled is None else int(len(labeled)),
                       "support_anomalous": 0 if labeled is None else int(labeled["label"].sum()),
                       "source_s": round(m.source_s, 2), "note": note}
                if det is None:
                    rows.append({**row, "applicable": False})
                    continue
                t1 = time.perf_counter()
                scores = det.score(test)
                metrics = classification_report(test["label"], scores, threshold=det.threshold_)
                rows.append({**row, "applicable": True, "adapt_s": round(adapt_s, 3),
                             "score_s": round(time.perf_counter() - t1, 3), "threshold_rule": "rate",
                             "rate": round(float(det.rate_), 4), **{key: metrics[key] for key in (
                                 "f1", "precision", "recall", "accuracy", "roc_auc", "pr_auc")}})
                p = predictions_frame(test, scores, det.threshold_)
                p.insert(0, "k", str(k))
                p.insert(0, "method", name)
                preds.append(p)
                if name == "proto" or (cfg.save_models and name in ("scratch", "transfer")):
                    det.save(out / "models" / f"{name}-k{k}")
                    saved[f"{name}-k{k}"] = f"models/{name}-k{k}"
        summary = summarize(rows)
    metrics = {"target": cfg.target, "split": "run", "sources": sorted(srcs), "threshold_rule": "rate",
               "n_test": int(len(test)), "n_unlabeled": int(len(unlabeled)), "source_prior_rate": prior,
               "rows": rows, "summary": summary}
    predictions = pd.concat(preds, ignore_index=True) if preds else None
    write_run(out, config={"adapt": cfg}, metrics=metrics, predictions=predictions, command="adapt",
              data_dir=data_dir_used(cfg.data_dir))
    line = "; ".join(f"{m} F1 full {s['f1_full']:.3f} k<=2 {s['f1_k2']:.3f} t95 {s['t95_s']:.1f}s"
                     for m, s in summary["methods"].items() if s.get("f1_full") is not None)
    return RunResult(metrics, predictions, details={"summary": summary},
                     artifacts={"metrics": "metrics.json", **saved}, out_dir=out,
                     summary=f"adapt to {cfg.target}: {line} -> {out}")


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method: F1 of the full target, at k <= 2, and the time to reach 95% of its own full-target F1."""
    per: dict[str, Any] = {}
    for name in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == name and r.get("applicable")]
        full = next((r for r in mine if r["k"] == "full"), None)
        if full is None:
            per[name] = {"f1_full": None}
            continue
        small = [r for r in mine if r["k"] != "full" and r["k"] <= 2]
        f1_k2 = max(small, key=lambda r: r["k"])["f1"] if small else 0.0  # the largest k <= 2 the method used
        # the cheapest adaptation (any k, full included) that reaches 95% of this method's own full-target F1
        hits = [r for r in mine if r["f1"] >= 0.95 * full["f1"]]
        best = min(hits, key=lambda r: r["adapt_s"])
        per[name] = {"f1_full": full["f1"], "f1_k2": f1_k2, "gap_k2": full["f1"] - f1_k2,
                     "t95_s": best["adapt_s"], "k95": best["k"]}
    # "Its own full-target F1" rewards a method whose full-target F1 is poor (it is reached at once), so a common
    # bar is reported beside it: 95% of the best full-target F1 of any method here; None = never reached.
    fulls = [v["f1_full"] for v in per.values() if v.get("f1_full") is not None]
    bar = 0.95 * max(fulls) if fulls else None
    for name, v in per.items():
        hits = [r for r in rows if r["method"] == name and r.get("applicable") and bar is not None and r["f1"] >= bar]
        v["t_common_s"] = min((r["adapt_s"] for r in hits), default=None)
    out: dict[str, Any] = {"methods": per, "common_bar_f1": bar}
    t, p = per.get("transfer", {}), per.get("proto", {})
    if t.get("t95_s") and p.get("t95_s"):
        out["speedup_vs_transfer"] = t["t95_s"] / p["t95_s"]
    if t.get("t_common_s") and p.get("t_common_s"):
        out["speedup_vs_transfer_common"] = t["t_common_s"] / p["t_common_s"]
    return out


__all__ = ["AdaptConfig", "METHODS", "run_adapt", "summarize", "supports", "load_workflows"]
