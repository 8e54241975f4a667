"""Label-free detection on Flow-Bench: the NLL detector (``llmad nll``, family "lm") beside classic unsupervised
detectors (family "classic": isolation forest, kNN distance, HBOS) on the same rows and features, and a supervised
tree (hgb) for scale; plus batched vs naive per-row scoring speed.

Run (about 30 min on 2 CPU cores):
    OMP_NUM_THREADS=2 .venv/bin/python bench/unsupervised.py  -> bench/results/unsupervised.{md,json}

Protocol: run split (whole DAG runs apart, seed 0) of each workflow; one seeded sample of train / validation / test
rows shared by every method. Features: the LM reads `--fields` (default `ops`: task, runtime, CPU time and the
label-free peer/host ratios of ``llmad.data.context``, as text); the classic detectors run on exactly those numeric
fields + the one-hot transformation (``lm-fields``), and also on the nine sentence features (``plain``) and on those
+ every peer/host fact (``context``) -- the best of them is the bar. The LM settings were chosen on 1000genome
validation rows (``bench/unsupervised_pilot.py`` -> ``results/unsupervised_pilot.md``). ROC-AUC and PR-AUC need
no threshold; ``f1`` is at the label-free rule ``contamination:0.05`` (the top 5% of held-out validation scores,
labels unused), ``f1_val`` at the best validation-F1 threshold (labels) for reference. No choice was made on test. lstm-ae is not run on job rows: it reconstructs a time series window, and a
job is one row with no time axis (jobs of a run ordered by time mix unrelated transformations); it stays a metric-
window detector (bench/results/numeric.md).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

from llmad.data import load_split
from llmad.data.context import CONTEXT_FEATURES
from llmad.data.flowbench import PAPER_FEATURES
from llmad.data.splits import subsample
from llmad.io import atomic_write_text
from llmad.metrics.classification import choose_threshold

WORKFLOWS = ["1000genome", "montage", "predict_future_sales"]
RESULTS = Path(__file__).parent / "results"
CONTAMINATION = 0.05


def features(df: pd.DataFrame, cats: list[str], cols: list[str]) -> np.ndarray:
    """Numeric features (NaN -> -1, as the baselines do) + one-hot transformation."""
    x = df[cols].to_numpy(dtype=np.float64)
    x = np.where(np.isfinite(x), x, -1.0)
    oh = (df["transformation"].astype(str).to_numpy()[:, None] == np.asarray(cats)[None, :]).astype(float)
    return np.hstack([x, oh])


def hbos(train: np.ndarray, bins: int = 20):
    """Histogram-based outlier score (Goldstein & Dengel 2012): sum over features of -log(bin density)."""
    edges = [np.unique(np.quantile(train[:, j], np.linspace(0, 1, bins + 1))) for j in range(train.shape[1])]
    dens = []
    for j, e in enumerate(edges):
        if len(e) < 2:
            dens.append(None)
            continue
        h, _ = np.histogram(train[:, j], bins=e, density=True)
        dens.append(np.maximum(h, 1e-6) / max(h.max(), 1e-12))

    def score(x: np.ndarray) -> np.ndarray:
        s = np.zeros(len(x))
        for j, e in enumerate(edges):
            if dens[j] is None:
                continue
            k = np.clip(np.searchsorted(e, x[:, j], side="right") - 1, 0, len(dens[j]) - 1)
            out = (x[:, j] < e[0]) | (x[:, j] > e[-1])
            s += np.where(out, -np.log(1e-6), -np.log(dens[j][k]))
        return s

    return score


def classic(name: str, xtr: np.ndarray, seed: int):
    """A fitted label-free scorer: higher = more anomalous."""
    if name == "iforest":
        m = IsolationForest(n_estimators=300, random_state=seed, n_jobs=2).fit(xtr)
        return lambda x: -m.score_samples(x)
    if name == "knn":
        sc = StandardScaler().fit(xtr)
        nn = NearestNeighbors(n_neighbors=10).fit(sc.transform(xtr))
        return lambda x: nn.kneighbors(sc.transform(x))[0].mean(axis=1)
    if name == "hbos":
        return hbos(xtr)
    raise ValueError(name)


def record(wf, method, family, supervision, y, s, val_y, val_s, **kw) -> dict:
    """One results row: ROC/PR-AUC, F1 at contamination:0.05 (validation scores) and at the validation-F1 threshold."""
    thr = float(np.quantile(val_s, 1 - CONTAMINATION))
    thr_val = choose_threshold(val_y, val_s)
    return {"workflow": wf, "split": "run", "method": method, "family": family, "supervision": supervision,
            "roc_auc": float(roc_auc_score(y, s)), "pr_auc": float(average_precision_score(y, s)),
            "f1": float(f1_score(y, (s >= thr).astype(int))), "threshold_rule": f"contamination:{CONTAMINATION}",
            "f1_val": float(f1_score(y, (s >= thr_val).astype(int))), **kw}


def lm_rows(wf, tr, va, te, args, normal_only: bool) -> tuple[dict, object]:
    from llmad.detectors.nll.config import NLLConfig
    from llmad.detectors.nll.detector import NLLDetector

    cfg = NLLConfig(model=args.model, keep_layers=args.keep_layers, permutations=args.permutations,
                    epochs=args.epochs, lora_r=args.lora, learning_rate=args.lr, batch_size=16,
                    threshold=f"contamination:{CONTAMINATION}", normal_only=normal_only, seed=args.seed,
                    fields=args.fields, aggregate=args.aggregate, progress=False)
    det = NLLDetector(config=cfg)
    t0 = time.perf_counter()
    det.fit(tr, va)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    d = det.score_details(te)
    score_s = time.perf_counter() - t0
    info = det.train_info_
    name = f"nll {args.model} {args.keep_layers or 'all'}L {args.aggregate}" + (" normal-only" if normal_only else "")
    rec = record(wf, name, "lm", "normal-only" if normal_only else "none", te["label"].to_numpy(),
                 d["score"].to_numpy(), va["label"].to_numpy(), det.validation_scores_,
                 train_rows=int(info["rows"]), val_rows=len(va), test_rows=len(te),
                 permutations=args.permutations, fit_s=round(fit_s, 1),
                 score_s=round(score_s, 1), ms_per_row=round(1000 * score_s / len(te), 2),
                 device=f"{info['device']} {info['precision']} ({os.environ.get('OMP_NUM_THREADS', '?')} threads)",
                 train_steps=info["steps"], tokens_per_row=round(info["tokens_per_row"], 1),
                 top_fields=d.loc[te["label"].to_numpy() == 1, "top_field"].value_counts().head(3).to_dict())
    return rec, det


def speed(det, te: pd.DataFrame, n: int) -> dict:
    """Batched vs naive per-row scoring of the same ``n`` rows, one permutation and the configured ones."""
    rows = te.head(n)
    out = {"rows": int(len(rows)), "uptime_before": subprocess.run(["uptime"], capture_output=True,
                                                                   text=True).stdout.strip()}
    orders = det.orders_
    det.score(rows.head(16))  # warm-up (first-call allocations)
    for r in sorted({1, len(orders)}):
        det.orders_ = orders[:r]
        t0 = time.perf_counter()
        det.score(rows)
        b = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(len(rows)):
            det.score(rows.iloc[i:i + 1])
        nv = time.perf_counter() - t0
        out[f"batched_jobs_per_s_r{r}"] = round(len(rows) / b, 1)
        out[f"naive_jobs_per_s_r{r}"] = round(len(rows) / nv, 1)
    det.orders_ = orders
    out["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workflows", nargs="+", default=WORKFLOWS)
    ap.add_argument("--train-rows", type=int, default=3000)
    ap.add_argument("--val-rows", type=int, default=600)
    ap.add_argument("--test-rows", type=int, default=1500)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--keep-layers", type=int, default=4)
    ap.add_argument("--permutations", type=int, default=3)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lora", type=int, default=0)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--fields", default="ops")
    ap.add_argument("--aggregate", default="mean")
    ap.add_argument("--normal-only", nargs="*", default=["1000genome"], help="workflows with a normal-only LM row")
    ap.add_argument("--speed-rows", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="unsupervised")
    ap.add_argument("--append", action="store_true", help="keep the other workflows' rows of results/<tag>.json")
    ap.add_argument("--speed-only", action="store_true",
                    help="only the speed table (a model fitted for 5 steps: same compute per row), appended")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    rows, speeds = [], {}
    if args.append and (RESULTS / f"{args.tag}.json").is_file():
        old = json.loads((RESULTS / f"{args.tag}.json").read_text())
        rows = [r for r in old["rows"] if r["workflow"] not in args.workflows]
        speeds = old.get("speed", {})
    if args.speed_only:
        from llmad.detectors.nll.config import NLLConfig
        from llmad.detectors.nll.detector import NLLDetector

        old = json.loads((RESULTS / f"{args.tag}.json").read_text())
        wf = args.workflows[0]
        sp = load_split(f"flowbench:{wf}", split="run", seed=args.seed, context=True)
        det = NLLDetector(config=NLLConfig(model=args.model, keep_layers=args.keep_layers, fields=args.fields,
                                           permutations=args.permutations, max_steps=5, train_limit=200,
                                           threshold="train-quantile:0.95", threshold_rows=32, progress=False))
        det.fit(sp.train, None)
        old["speed"][f"{wf} (re-measured {time.strftime('%Y-%m-%d %H:%M')} UTC)"] = speed(det, subsample(sp.test, args.test_rows, args.seed), args.speed_rows)
        write(old["rows"], old["speed"], argparse.Namespace(**{**old["config"], "tag": args.tag}))
        return
    for wf in args.workflows:
        t_wf = time.perf_counter()
        sp = load_split(f"flowbench:{wf}", split="run", seed=args.seed, context=True)
        tr = subsample(sp.train, args.train_rows, args.seed)
        va = subsample(sp.validation, args.val_rows, args.seed)
        te = subsample(sp.test, args.test_rows, args.seed)
        y, vy = te["label"].to_numpy(), va["label"].to_numpy()
        cats = sorted(tr["transformation"].astype(str).unique())
        from llmad.detectors.nll.detector import job_fields

        lm_cols = [c for c in job_fields(args.fields) if c != "transformation"]
        sets = [("plain", list(PAPER_FEATURES)), ("context", list(PAPER_FEATURES) + CONTEXT_FEATURES)]
        if lm_cols not in [c for _, c in sets]:
            sets.append(("lm-fields", lm_cols))  # exactly what the LM reads
        for fs, cols in sets:
            xtr, xva, xte = (features(d, cats, cols) for d in (tr, va, te))
            for name in ("iforest", "knn", "hbos"):
                t0 = time.perf_counter()
                f = classic(name, xtr, args.seed)
                fit_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                s = f(xte)
                sc = time.perf_counter() - t0
                rows.append(record(wf, f"{name}-{fs}", "classic", "none", y, s, vy, f(xva), train_rows=len(tr),
                                   val_rows=len(va), test_rows=len(te),
                                   permutations=None, fit_s=round(fit_s, 2), score_s=round(sc, 3),
                                   ms_per_row=round(1000 * sc / len(te), 3), device="cpu"))
            if fs == "context":
                m = HistGradientBoostingClassifier(max_iter=300, random_state=args.seed).fit(xtr, tr["label"])
                rows.append(record(wf, "hgb-context", "classic", "supervised", y, m.predict_proba(xte)[:, 1], vy,
                                   m.predict_proba(xva)[:, 1], train_rows=len(tr), val_rows=len(va),
                                   test_rows=len(te), permutations=None,
                                   device="cpu"))
        rec, det = lm_rows(wf, tr, va, te, args, normal_only=False)
        rows.append(rec)
        print(json.dumps(rec), flush=True)
        if wf == args.workflows[0] and args.speed_rows > 0:
            speeds[wf] = speed(det, te, args.speed_rows)
            print(json.dumps(speeds[wf]), flush=True)
        if wf in args.normal_only:
            rec, _ = lm_rows(wf, tr, va, te, args, normal_only=True)
            rows.append(rec)
            print(json.dumps(rec), flush=True)
        print(f"{wf}: {time.perf_counter() - t_wf:.0f} s", flush=True)
        write(rows, speeds, args)


def write(rows: list[dict], speeds: dict, args) -> None:
    """bench/results/<tag>.{json,md}: every row, the goal check and the speed table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"config": vars(args), "rows": rows, "speed": speeds}
    atomic_write_text(RESULTS / f"{args.tag}.json", json.dumps(payload, indent=2, default=str) + "\n")
    df = pd.DataFrame(rows)
    cols = ["workflow", "split", "method", "family", "supervision", "roc_auc", "pr_auc", "f1", "f1_val",
            "train_rows", "val_rows", "test_rows", "permutations", "fit_s", "score_s", "ms_per_row", "device"]
    md = [f"# Label-free detection: NLL (LM) vs classic unsupervised detectors ({args.tag})", "",
          "Written by `bench/unsupervised.py` (its docstring: protocol). Run split, seed 0; every method sees the "
          "same seeded sample of each part (its sizes: `train_rows`, `val_rows`, `test_rows`). `f1`: threshold `contamination:{CONTAMINATION}` (top 5% of validation scores, "
          "labels unused); `f1_val`: best-F1 threshold on validation labels (reference). `supervision` none = labels "
          "never used to fit; normal-only = train rows labelled normal (semi-supervised); supervised = hgb on labels,"
          " for scale. LM: " + f"{args.model}, first {args.keep_layers or 'all'} decoder layers, "
          f"{'LoRA r=' + str(args.lora) if args.lora else 'full fine-tuning'}, lr {args.lr}, {args.epochs} epoch(s), "
          f"fields {args.fields}, aggregate {args.aggregate}, {args.permutations} field orders at scoring; fp32 on "
          "2 CPU cores (no AMX/AVX512-BF16 here). LM settings were chosen on 1000genome validation rows "
          "(bench/results/unsupervised_pilot.md), never on test.", "",
          df[[c for c in cols if c in df.columns]].round(4).to_markdown(index=False), ""]
    goal = []
    for wf in dict.fromkeys(df["workflow"]):
        sub = df[df["workflow"] == wf]
        lm = sub[(sub["family"] == "lm") & (sub["supervision"] == "none")]["roc_auc"]
        cl = sub[(sub["family"] == "classic") & (sub["supervision"] == "none")]["roc_auc"]
        if len(lm) and len(cl):
            goal.append(f"- {wf}: LM ROC-AUC {lm.max():.3f}; best classic {cl.max():.3f} "
                        f"({sub.loc[cl.idxmax(), 'method']}); LM - best classic {lm.max() - cl.max():+.3f} "
                        f"(goal +0.15: {'met' if lm.max() - cl.max() >= 0.15 else 'not met'})"
                        + (f"; goal ROC-AUC >= 0.80: {'met' if lm.max() >= 0.8 else 'not met'}"
                           if wf == "1000genome" else ""))
    md += ["## Goal check (label-free rows only)", "", *goal, ""]
    if speeds:
        md += ["## Scoring speed (same rows, same process: batched vs naive per-row loop)", ""]
        for wf, s in speeds.items():
            md.append(f"- {wf}, {s['rows']} test rows: " + ", ".join(f"{k} {v}" for k, v in s.items()
                                                                     if "jobs_per_s" in k))
            md.append(f"  - load: before `{s['uptime_before']}`; after `{s['uptime_after']}`")
        md.append("")
    atomic_write_text(RESULTS / f"{args.tag}.md", "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
