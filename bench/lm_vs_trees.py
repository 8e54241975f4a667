"""LM detectors vs the trees (issue 17, item 4): ``recipes/lm_vs_trees.yaml`` through ``llmad compare``, then one
table. Family "tree": rf/hgb on plain or peer-context features; family "lm": anything whose decision uses a language
model (the stacked fusion included). Run split, 3 seeds (the seed also redraws the run split), thresholds on
validation, 95% bootstrap CIs of the across-seed mean F1 (the harness's).

    nice -n 5 .venv/bin/python bench/lm_vs_trees.py run       # resumable: finished runs are cached under runs/
    .venv/bin/python bench/lm_vs_trees.py report              # bench/results/lm_vs_trees.{md,json}

The two workflows beyond the three tuned on were named in the recipe before any tuning and never tuned on.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmad.io import atomic_write_text  # noqa: E402

RECIPE = ROOT / "recipes" / "lm_vs_trees.yaml"
OUT = Path(os.environ.get("LLMAD_LM_VS_TREES_OUT", ROOT / "runs" / "bench-lm-vs-trees"))
RESULTS = ROOT / "bench" / "results"
TUNED_ON = ("1000genome", "montage", "predict_future_sales")


def family(kind: str) -> str:
    """"lm" when the decision uses a language model, "tree" for rf/hgb baselines."""
    return "lm" if kind in ("sft", "fusion", "icl", "nll") else "tree"


def cmd_run(a: argparse.Namespace) -> None:
    """Run (or resume) the recipe; the invocation's wall time and load go into ``OUT/bench_run.json``."""
    from llmad.harness import compare

    t0, load0 = time.perf_counter(), os.getloadavg()
    compare(RECIPE, out=OUT, resume=True, quiet=a.quiet)
    (OUT / "bench_run.json").write_text(json.dumps({
        "wall_s": time.perf_counter() - t0, "load_average_start": load0, "load_average_end": os.getloadavg(),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2))


def _run_metrics(method: str, dataset: str) -> list[dict]:
    """metrics.json of every finished seed of one method on one dataset."""
    out = []
    for d in sorted((OUT / "runs").iterdir()):
        run = json.loads((d / "run.json").read_text())
        if run["method"] == method and run["dataset"] == dataset and (d / "metrics.json").is_file():
            out.append(json.loads((d / "metrics.json").read_text()))
    return out


def records() -> list[dict]:
    """One record per method x workflow from the comparison's results.json (+ per-run facts of the LM rows)."""
    import numpy as np

    rows = json.loads((OUT / "results.json").read_text())["rows"]
    recs = []
    for r in rows:
        if r.get("status") != "ok":
            continue
        rec = {"workflow": r["dataset"], "split": r["split"], "method": r["method"], "family": family(r["kind"]),
               "kind": r["kind"], "f1_mean": r["f1_mean"], "f1_std": r["f1_std"],
               "f1_ci": [r["f1_ci_low"], r["f1_ci_high"]], "roc_auc": r["roc_auc_mean"], "pr_auc": r["pr_auc_mean"],
               "accuracy": r["accuracy_mean"], "seeds": r["seeds"], "n_test": r["n_test"],
               "fit_s_mean": r["fit_seconds"], "wall_s_mean": r["wall_seconds"],
               "score_ms_per_job": r["score_ms_per_item"]}
        if r["kind"] == "fusion":
            mets = _run_metrics(r["method"], r["dataset"])
            rec["lm_only_f1_mean"] = float(np.mean([m["lm_only_f1"] for m in mets]))
            rec["lm_only_roc_auc_mean"] = float(np.mean([m["lm_only_roc_auc"] for m in mets]))
            rec["trees_chosen"] = sorted(m["tree"] for m in mets)
            rec["n_train"] = int(np.mean([m["n_train"] for m in mets]))
        recs.append(rec)
    return recs


def cmd_report(a: argparse.Namespace) -> None:
    """Write bench/results/lm_vs_trees.{md,json}."""
    import pandas as pd

    recs = records()
    run_info = json.loads((OUT / "bench_run.json").read_text()) if (OUT / "bench_run.json").is_file() else {}
    summary = {}
    for wf in dict.fromkeys(r["workflow"] for r in recs):
        tree = max((r for r in recs if r["workflow"] == wf and r["family"] == "tree"), key=lambda r: r["f1_mean"])
        lm = max((r for r in recs if r["workflow"] == wf and r["family"] == "lm"), key=lambda r: r["f1_mean"])
        summary[wf] = {"best_tree": tree["method"], "best_tree_f1": tree["f1_mean"], "best_lm": lm["method"],
                       "best_lm_f1": lm["f1_mean"], "lm_minus_tree": lm["f1_mean"] - tree["f1_mean"],
                       "lm_at_or_above_tree": lm["f1_mean"] >= tree["f1_mean"], "tuned_on": wf in TUNED_ON}
    doc = {"recipe": str(RECIPE.relative_to(ROOT)), "machine": {"cpu_cores": os.cpu_count(),
                                                              "platform": platform.platform(), "gpu": None},
           "run": run_info, "summary": summary, "records": recs}
    atomic_write_text(RESULTS / "lm_vs_trees.json", json.dumps(doc, indent=2) + "\n")

    table = pd.DataFrame([{
        "workflow": r["workflow"], "method": r["method"], "family": r["family"], "seeds": r["seeds"],
        "F1 (mean)": round(r["f1_mean"], 3), "F1 95% CI": f"[{r['f1_ci'][0]:.3f}, {r['f1_ci'][1]:.3f}]",
        "F1 sd": round(r["f1_std"], 3) if r["f1_std"] is not None else None,
        "ROC-AUC": round(r["roc_auc"], 3),
        "LM alone F1": f"{r['lm_only_f1_mean']:.3f}" if "lm_only_f1_mean" in r else "",
        "tree chosen (per seed)": ",".join(r.get("trees_chosen", [])),
        "fit s": round(r["fit_s_mean"] or 0, 1)} for r in recs])
    verdict = pd.DataFrame([{"workflow": wf, "tuned on": "yes" if s["tuned_on"] else "no (named before tuning)",
                             "best tree": f"{s['best_tree']} {s['best_tree_f1']:.3f}",
                             "best LM": f"{s['best_lm']} {s['best_lm_f1']:.3f}",
                             "LM - tree": f"{s['lm_minus_tree']:+.3f}",
                             "LM at or above": "yes" if s["lm_at_or_above_tree"] else "no"}
                            for wf, s in summary.items()])
    lines = [
        "# LM detectors vs the trees (run split, 3 seeds)", "",
        f"Written by `bench/lm_vs_trees.py report` from `llmad compare {RECIPE.relative_to(ROOT)}` (cached runs under "
        f"`runs/bench-lm-vs-trees`). Machine: {os.cpu_count()} CPU cores, no GPU (none was lent to this session), "
        f"so every row is CPU-sized: the recipe's `limit` subsamples every part (train, validation, test) per seed; "
        f"see the recipe for sizes and the LM's recipe. Invocation wall time: "
        f"{run_info.get('wall_s', float('nan')) / 60:.1f} min (each stack ~2 min: two fold MiniLMs on 500 jobs and "
        f"one on 1,000, 3 epochs, fp32); 1-minute load average at start/end: "
        f"{(run_info.get('load_average_start') or [float('nan')])[0]:.1f} / "
        f"{(run_info.get('load_average_end') or [float('nan')])[0]:.1f}.", "",
        "Family `tree`: rf/hgb on the nine job features (plain) or with peer-context features (context). Family `lm`: "
        "the decision uses a language model: the stack is a tree (rf or hgb, chosen on validation) over the job's "
        "numeric + peer-context features and a MiniLM score that is cross-fitted by run (no train row is scored by an "
        "LM that trained on it). `LM alone F1`: the stack's full-train MiniLM on its own (text only, its own "
        "validation threshold): the text model's level without the numbers. F1 at the validation threshold; the CI "
        "is the percentile bootstrap of the across-seed mean (test rows resampled per seed). The best tree is the "
        "max over four trees of the test mean, which favours the trees.", "",
        "## Verdict per workflow", "", verdict.to_markdown(index=False), "", _reading(summary, recs), "",
        "## All rows", "", table.to_markdown(index=False), "",
    ]
    atomic_write_text(RESULTS / "lm_vs_trees.md", "\n".join(lines))
    print(verdict.to_markdown(index=False))


def _reading(summary: dict, recs: list[dict]) -> str:
    """What the verdict says, from the numbers (so a rerun cannot leave stale prose behind)."""
    met = [wf for wf, s in summary.items() if s["lm_at_or_above_tree"]]
    gaps = [s["lm_minus_tree"] for s in summary.values()]
    inside = [wf for wf, s in summary.items()
              if next(r for r in recs if r["workflow"] == wf and r["method"] == s["best_tree"])["f1_ci"][0]
              <= s["best_lm_f1"]]
    lm_alone = [r["lm_only_f1_mean"] - summary[r["workflow"]]["best_tree_f1"] for r in recs
                if "lm_only_f1_mean" in r]
    return (f"**Goal {'met' if len(met) == len(summary) else 'not met'} at this (CPU) scale: the LM-based detector "
            f"is at or above the best tree on {len(met)} of {len(summary)} workflows.** LM - tree ranges "
            f"{min(gaps):+.3f} to {max(gaps):+.3f} F1; the stack's mean lies inside the best tree's 95% CI on "
            f"{len(inside)} of {len(summary)} ({', '.join(inside) or 'none'}), and its ROC-AUC matches the trees'. "
            f"The text-only MiniLM (the stack's full-train LM) trails the best tree by {-max(lm_alone):.2f} to "
            f"{-min(lm_alone):.2f} F1 with 1,000 train jobs: its score adds little beyond the numbers the trees "
            f"already read, and the extra, noisier column costs the stack a little. "
            f"The issue's GPU measurements (full train parts) put the text-only LM 0.03-0.06 behind the trees; "
            f"whether the stack then passes them needs those full-scale rows (no GPU was lent to this session).")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--quiet", action="store_true")
    sub.add_parser("report")
    a = p.parse_args()
    {"run": cmd_run, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
