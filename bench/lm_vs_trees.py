"""LM detectors vs the trees (issue 17, items 4-5): a recipe through ``llmad compare``, then one table per scale.
Family "tree": rf/hgb on plain or peer-context features; family "lm": anything whose decision uses a language model
(the stacked fusion included). Run split, 3 seeds (the seed also redraws the run split), thresholds on validation,
95% bootstrap CIs of the across-seed mean F1 (the harness's).

Two scales, one cache folder each (finished runs are reused):
- ``full`` (``recipes/lm_vs_trees_full.yaml``): every part whole. The stacks' LMs need a GPU:
  ``bench/lm_vs_trees_gpu.py`` runs them on one and packs the run folders; unpacked into this scale's folder they are
  cache hits, and ``run --scale full`` computes the trees here.
- ``cpu`` (``recipes/lm_vs_trees.yaml``): every part subsampled to 1,000 jobs; everything on 2 CPU cores.

    nice -n 5 .venv/bin/python bench/lm_vs_trees.py run --scale cpu
    nice -n 5 .venv/bin/python bench/lm_vs_trees.py run --scale full --lm-datasets 1000genome,somospie
    .venv/bin/python bench/lm_vs_trees.py report              # bench/results/lm_vs_trees.{md,json}: both scales

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

RECIPES = {"full": ROOT / "recipes" / "lm_vs_trees_full.yaml", "cpu": ROOT / "recipes" / "lm_vs_trees.yaml"}
OUTS = {"full": "bench-lm-vs-trees-full", "cpu": "bench-lm-vs-trees"}
RESULTS = ROOT / "bench" / "results"
TUNED_ON = ("1000genome", "montage", "predict_future_sales")
LM_KINDS = ("sft", "fusion", "icl", "nll")


def out_dir(scale: str) -> Path:
    """The scale's cache folder, under ``$LLMAD_BENCH_RUNS`` (default: the project's ``runs/``)."""
    return Path(os.environ.get("LLMAD_BENCH_RUNS", ROOT / "runs")) / OUTS[scale]


def family(kind: str) -> str:
    """"lm" when the decision uses a language model, "tree" for rf/hgb baselines."""
    return "lm" if kind in LM_KINDS else "tree"


def cmd_run(a: argparse.Namespace) -> None:
    """Run (or resume) the scale's recipe; wall time, load and any LM restriction go into ``bench_run.json``."""
    from llmad.config import load_yaml
    from llmad.harness import compare

    recipe = load_yaml(RECIPES[a.scale])
    lm_datasets = a.lm_datasets.split(",") if a.lm_datasets else None
    if lm_datasets is not None:  # LM runs that only a GPU can finish: only those already cached are used
        for m in recipe["methods"]:
            if m["method"] in LM_KINDS:
                m["datasets"] = lm_datasets
    out = out_dir(a.scale)
    t0, load0 = time.perf_counter(), os.getloadavg()
    rep = compare(recipe, out=out, resume=True, quiet=a.quiet)
    computed = sum(1 for st in rep["statuses"] if st.status == "done")
    if computed:  # one entry per invocation that computed runs (a rerun that only reuses the cache adds none)
        log = out / "bench_run.json"
        runs = json.loads(log.read_text()) if log.is_file() else []
        runs = runs if isinstance(runs, list) else [runs]  # an older single-invocation file
        runs.append({"wall_s": time.perf_counter() - t0, "computed_runs": computed, "load_average_start": load0,
                     "load_average_end": os.getloadavg(), "lm_datasets": lm_datasets,
                     "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        atomic_write_text(log, json.dumps(runs, indent=2) + "\n")


def _run_metrics(out: Path, method: str, dataset: str) -> list[dict]:
    """metrics.json of every finished seed of one method on one dataset (by the latest comparison's run list, so
    a run cached under another row name still counts)."""
    runs = json.loads((out / "recipe.resolved.json").read_text())["runs"]
    found = [out / "runs" / r["hash"] / "metrics.json" for r in runs
             if r["method"] == method and r["dataset"] == dataset]
    return [json.loads(f.read_text()) for f in found if f.is_file()]


def records(scale: str) -> list[dict]:
    """One record per method x workflow from the comparison's results.json (+ per-run facts of the LM rows)."""
    import numpy as np

    out = out_dir(scale)
    rows = json.loads((out / "results.json").read_text())["rows"]
    recs = []
    for r in rows:
        if r.get("status") != "ok":
            continue
        rec = {"scale": scale, "workflow": r["dataset"], "split": r["split"], "method": r["method"],
               "family": family(r["kind"]), "kind": r["kind"], "f1_mean": r["f1_mean"], "f1_std": r["f1_std"],
               "f1_ci": [r["f1_ci_low"], r["f1_ci_high"]], "roc_auc": r["roc_auc_mean"], "pr_auc": r["pr_auc_mean"],
               "accuracy": r["accuracy_mean"], "seeds": r["seeds"], "n_test": r["n_test"],
               "fit_s_mean": r["fit_seconds"], "wall_s_mean": r["wall_seconds"],
               "score_ms_per_job": r["score_ms_per_item"]}
        if r["kind"] == "fusion":
            mets = _run_metrics(out, r["method"], r["dataset"])
            rec["lm_only_f1_mean"] = float(np.mean([m["lm_only_f1"] for m in mets]))
            rec["lm_only_roc_auc_mean"] = float(np.mean([m["lm_only_roc_auc"] for m in mets]))
            rec["trees_chosen"] = sorted(m["tree"] for m in mets)
            rec["n_train"] = int(np.mean([m["n_train"] for m in mets]))
        recs.append(rec)
    return recs


def verdict(recs: list[dict], workflows: list[str]) -> dict:
    """Per workflow: the best tree, the best LM (None when no LM row finished) and whether the LM is at or above."""
    summary = {}
    for wf in workflows:
        tree = max((r for r in recs if r["workflow"] == wf and r["family"] == "tree"), key=lambda r: r["f1_mean"])
        lms = [r for r in recs if r["workflow"] == wf and r["family"] == "lm"]
        lm = max(lms, key=lambda r: r["f1_mean"]) if lms else None
        summary[wf] = {"best_tree": tree["method"], "best_tree_f1": tree["f1_mean"],
                       "best_tree_ci": tree["f1_ci"], "best_lm": lm["method"] if lm else None,
                       "best_lm_f1": lm["f1_mean"] if lm else None,
                       "lm_minus_tree": lm["f1_mean"] - tree["f1_mean"] if lm else None,
                       "lm_at_or_above_tree": lm["f1_mean"] >= tree["f1_mean"] if lm else None,
                       "tuned_on": wf in TUNED_ON}
    return summary


def _workflows(scale: str) -> list[str]:
    from llmad.config import load_yaml

    return [d["name"] for d in load_yaml(RECIPES[scale])["datasets"]]


def _info(scale: str) -> dict:
    """How the scale's runs were made: the local invocation and, for the full scale, the GPU run."""
    out = out_dir(scale)
    info = {"recipe": str(RECIPES[scale].relative_to(ROOT))}
    for name in ("bench_run", "gpu_run"):
        if (out / f"{name}.json").is_file():
            info[name] = json.loads((out / f"{name}.json").read_text())
    if "gpu_run" in info:  # the per-run list is in the run folders; keep the facts
        g = info["gpu_run"]
        info["gpu_run"] = {k: g[k] for k in ("device", "workers", "wall_s", "cpu_count", "load_average_start",
                                             "load_average_end")}
        info["gpu_run"]["stopped_at_deadline"] = [f"the stack on {r['dataset']} seed {r['seed']}"
                                                  for r in g["runs"] if r["status"] == "stopped at the deadline"]
        info["gpu_run"]["lm_wall_s"] = {f"{r['dataset']} seed {r['seed']}": round(r["wall_s"])
                                        for r in g["runs"] if r["status"] == "done"}
    return info


def _tables(recs: list[dict], summary: dict) -> tuple[str, str]:
    import pandas as pd

    table = pd.DataFrame([{
        "workflow": r["workflow"], "method": r["method"], "family": r["family"], "seeds": r["seeds"],
        "F1 (mean)": round(r["f1_mean"], 3), "F1 95% CI": f"[{r['f1_ci'][0]:.3f}, {r['f1_ci'][1]:.3f}]",
        "F1 sd": round(r["f1_std"], 3) if r["f1_std"] is not None else None,
        "ROC-AUC": round(r["roc_auc"], 3),
        "LM alone F1": f"{r['lm_only_f1_mean']:.3f}" if "lm_only_f1_mean" in r else "",
        "train jobs": r.get("n_train", ""),
        "tree chosen (per seed)": ",".join(r.get("trees_chosen", [])),
        "fit s": round(r["fit_s_mean"] or 0, 1)} for r in recs])
    ver = pd.DataFrame([{"workflow": wf, "tuned on": "yes" if s["tuned_on"] else "no (named before tuning)",
                         "best tree": f"{s['best_tree']} {s['best_tree_f1']:.3f}",
                         "best tree 95% CI": f"[{s['best_tree_ci'][0]:.3f}, {s['best_tree_ci'][1]:.3f}]",
                         "best LM": f"{s['best_lm']} {s['best_lm_f1']:.3f}" if s["best_lm"] else "not run",
                         "LM - tree": f"{s['lm_minus_tree']:+.3f}" if s["best_lm"] else "",
                         "LM at or above": ("yes" if s["lm_at_or_above_tree"] else "no") if s["best_lm"] else "n/a"}
                        for wf, s in summary.items()])
    return ver.to_markdown(index=False, disable_numparse=True), table.to_markdown(index=False)


def _reading(scale: str, summary: dict, recs: list[dict]) -> str:
    """What the verdict says, from the numbers (so a rerun cannot leave stale prose behind)."""
    ran = {wf: s for wf, s in summary.items() if s["best_lm"]}
    met = [wf for wf, s in ran.items() if s["lm_at_or_above_tree"]]
    gaps = [s["lm_minus_tree"] for s in ran.values()]
    inside = [wf for wf, s in ran.items() if s["best_tree_ci"][0] <= s["best_lm_f1"] <= s["best_tree_ci"][1]]
    lm_alone = [r["lm_only_f1_mean"] - summary[r["workflow"]]["best_tree_f1"] for r in recs if "lm_only_f1_mean" in r]
    missing = [wf for wf, s in summary.items() if not s["best_lm"]]
    where = "At full scale" if scale == "full" else "At this (CPU) scale"
    text = (f"**{where}, the LM-based detector is at or above the best tree on {len(met)} of "
            f"{len(summary)} workflows ({', '.join(met) or 'none'})"
            f"{'; not run on ' + ', '.join(missing) if missing else ''}.** LM - tree ranges {min(gaps):+.3f} to "
            f"{max(gaps):+.3f} F1; the LM's mean lies inside the best tree's 95% CI on {len(inside)} of {len(ran)} "
            f"({', '.join(inside) or 'none'}). The text-only LM score on its own trails the best tree by "
            f"{-max(lm_alone):.2f} to {-min(lm_alone):.2f} F1.")
    pairs = {r["workflow"]: r["f1_mean"] - full["f1_mean"] for r in recs if r["method"] == "stack-minilm-folds"
             for full in recs if full["method"] == "stack-minilm" and full["workflow"] == r["workflow"]}
    if pairs:  # the two ways of scoring test with the same fold LMs, paired
        up = [wf for wf, d in pairs.items() if d > 0]
        text += (f" Paired (same splits, same fold LMs), stack-minilm-folds - stack-minilm: "
                 f"{min(pairs.values()):+.3f} to {max(pairs.values()):+.3f} F1, higher on {len(up)} of {len(pairs)}.")
    return text


def _invocations(info: dict) -> str:
    """The local invocations that computed runs: how many, how long, at what load."""
    runs = info.get("bench_run", [])
    runs = runs if isinstance(runs, list) else [runs]
    return "; ".join(f"{r.get('computed_runs', '?')} runs in {r['wall_s'] / 60:.1f} min (1-minute load average at "
                     f"start/end {r['load_average_start'][0]:.1f} / {r['load_average_end'][0]:.1f}"
                     f"{', ' + r['note'] if r.get('note') else ''})" for r in runs) or "not recorded"


def _scale_section(scale: str, recs: list[dict], summary: dict, info: dict) -> list[str]:
    ver, table = _tables(recs, summary)
    if scale == "full":
        g = info.get("gpu_run", {})
        lm_times = ", ".join(f"{k} {v} s" for k, v in g.get("lm_wall_s", {}).items())
        how = (f"Every part whole (no `limit`). The stacks ran on one {g.get('device', 'GPU')} "
               f"(`bench/lm_vs_trees_gpu.py`: {g.get('workers')} stacks side by side, bf16, on a machine with "
               f"{g.get('cpu_count')} CPU cores; MiniLM carried as bf16 safetensors and converted back to fp32 "
               f"there; the GPU run's deadline was {g.get('wall_s', 0):.0f} s of the 15 device minutes a session "
               f"gets). Wall time of each stack there, training and scoring its 2 fold LMs and fitting its 4 "
               f"candidate trees: {lm_times}. Stopped at the deadline, so not in the table: "
               f"{', '.join(g.get('stopped_at_deadline', [])) or 'none'}. The trees ran on this machine's 2 CPU "
               f"cores: {_invocations(info)}.")
        lm_text = ("the mean score of the 2 fold LMs (`test_lm: folds`): no third LM on all train rows, so each "
                   "stack trains as much LM as one full-train fine-tune")
    else:
        how = (f"Every part subsampled to 1,000 jobs per seed (the recipe's `limit`), all on 2 CPU cores, fp32 "
               f"(a stack-minilm: two fold MiniLMs on ~500 jobs and one on 1,000, 3 epochs; stack-minilm-folds: the "
               f"same two fold MiniLMs only). Invocations: {_invocations(info)}.")
        lm_text = ("one more MiniLM fine-tuned on all train rows (`stack-minilm`, `test_lm: full`), or the mean of "
                   "the 2 fold LMs (`stack-minilm-folds`, `test_lm: folds`; the same splits and fold LMs, so the two "
                   "rows are paired)")
    if info.get("rows_from_previous_report"):
        how += (f" {info['rows_from_previous_report']} of the {len(recs)} rows are carried over from the previous "
                "report: their run folders are not on the machine that wrote this one.")
    title = {"full": "Full scale: every train job (LMs on one GPU)", "cpu": "CPU-sized: 1,000 jobs per part"}[scale]
    return [f"## {title}", "", f"Recipe `{info['recipe']}`. {how}", "",
            f"The stack's LM score: cross-fitted by run on train (2 folds); validation and test are scored by "
            f"{lm_text}. `LM alone F1`: that text-only score on its own at its own validation threshold.", "",
            "### Verdict per workflow", "", ver, "", _reading(scale, summary, recs), "",
            "### All rows", "", table, ""]


def _scale_records(scale: str, prev: dict) -> tuple[list[dict], dict]:
    """The scale's records and facts: from its cache folder, plus the previous report's rows and facts that the
    folder lacks (a new checkout has no run folders; a GPU session may bring back only some workflows)."""
    from llmad.config import load_yaml

    cached = (out_dir(scale) / "results.json").is_file()
    recs = records(scale) if cached else []
    have = {(r["workflow"], r["method"]) for r in recs}
    kept = [r for r in prev.get("records", []) if r["scale"] == scale and (r["workflow"], r["method"]) not in have]
    recipe = load_yaml(RECIPES[scale])
    wfs, methods = [d["name"] for d in recipe["datasets"]], [m["name"] for m in recipe["methods"]]

    def order(r: dict) -> tuple[int, int]:  # the recipe's order; rows it no longer names go last
        return (wfs.index(r["workflow"]) if r["workflow"] in wfs else len(wfs),
                methods.index(r["method"]) if r["method"] in methods else len(methods))

    info = _info(scale) if cached else {"recipe": str(RECIPES[scale].relative_to(ROOT))}
    old = prev.get("scales", {}).get(scale, {})
    if "gpu_run" in old and "gpu_run" not in info:
        info["gpu_run"] = old["gpu_run"]
    runs = [r for x in (old.get("bench_run", []), info.get("bench_run", []))
            for r in (x if isinstance(x, list) else [x])]
    if runs:  # every invocation that computed runs, each once
        info["bench_run"] = list({json.dumps(r, sort_keys=True): r for r in runs}.values())
    info["rows_from_previous_report"] = len(kept)
    return sorted(recs + kept, key=order), info


def cmd_report(a: argparse.Namespace) -> None:
    """Write bench/results/lm_vs_trees.{md,json}: the full-scale section first, then the CPU-sized one. Rows whose
    run folders are not here are carried over from the previous bench/results/lm_vs_trees.json."""
    prev = json.loads((RESULTS / "lm_vs_trees.json").read_text()) if (RESULTS / "lm_vs_trees.json").is_file() else {}
    scales = [s for s in ("full", "cpu") if (out_dir(s) / "results.json").is_file() or s in prev.get("scales", {})]
    doc = {"machine": {"cpu_cores": os.cpu_count(), "platform": platform.platform()}, "scales": {}, "records": []}
    lines = ["# LM detectors vs the trees (run split, 3 seeds)", "",
             "Written by `bench/lm_vs_trees.py report` from `llmad compare` of the recipes below. Family `tree`: "
             "rf/hgb on the nine job features (plain) or with peer-context features (context). Family `lm`: the "
             "decision uses a language model: the stack is a tree (rf or hgb, and plain or context features, chosen "
             "on validation) over the job's numbers and a MiniLM score that is cross-fitted by run (no train row is "
             "scored by an LM that trained on it). F1 at the validation threshold; the CI is the percentile "
             "bootstrap of the across-seed mean (test rows resampled per seed). The best tree is the max over four "
             "trees of the test mean, which favours the trees.", ""]
    for scale in scales:
        recs, info = _scale_records(scale, prev)
        summary = verdict(recs, [wf for wf in _workflows(scale) if any(r["workflow"] == wf for r in recs)])
        doc["scales"][scale] = {**info, "summary": summary}
        doc["records"] += recs
        lines += _scale_section(scale, recs, summary, info)
    # The headline (issue 17's goal): the largest scale measured.
    doc["summary"] = doc["scales"][scales[0]]["summary"] if scales else {}
    doc["summary_scale"] = scales[0] if scales else None
    atomic_write_text(RESULTS / "lm_vs_trees.json", json.dumps(doc, indent=2) + "\n")
    atomic_write_text(RESULTS / "lm_vs_trees.md", "\n".join(lines))
    print("\n".join(lines[:40]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--scale", choices=sorted(RECIPES), default="cpu")
    r.add_argument("--lm-datasets", default=None,
                   help="LM methods only on these datasets (comma-separated): those a GPU run finished")
    r.add_argument("--quiet", action="store_true")
    sub.add_parser("report")
    a = p.parse_args()
    {"run": cmd_run, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
