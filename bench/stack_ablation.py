"""Does the LM add anything to the stack? (issue 17). The stack's tree layer re-fitted from the LM scores its run
folder saved (``fusion/lm_scores.csv``: cross-fitted on train, the fold LMs' mean on validation and test), once
with the LM score as a column and once without it, for each of the four trees the stack chooses from; beside them
the validation pick (which is the stack itself: checked equal to the run's own test F1) and the mean of rf and hgb
on the picked feature set. No LM is trained here: it reads the runs of ``bench/lm_vs_trees.py run --scale cpu``
(or ``full``, where its folders exist).

    .venv/bin/python bench/stack_ablation.py [--scale cpu]     # bench/results/stack_ablation.{md,json}
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from lm_vs_trees import out_dir  # noqa: E402

from llmad.io import atomic_write_text  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TREES = [f"{k}-{f}" for f in ("plain", "context") for k in ("rf", "hgb")]


def layer(run: dict, folder: Path) -> list[dict]:
    """Test F1 of every tree-layer variant of one stack run, with and without its LM score."""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import f1_score

    from llmad.data import load_split
    from llmad.detectors.baselines import fit_tree, make_estimator, tree_inputs
    from llmad.metrics.classification import choose_threshold, objective_value

    d, seed = run["data"], run["seed"]
    sp = load_split(d["spec"], split=d["split"], seed=d["seed"], data_dir=d["data_dir"], limit=d["limit"],
                    context=True)
    lm = pd.read_csv(folder / "fusion" / "lm_scores.csv", dtype={"run_id": str, "job_id": str})
    parts = {}
    for p, items in (("train", sp.train), ("validation", sp.validation), ("test", sp.test)):
        s = lm[lm.part == p].set_index(["run_id", "job_id"])["lm_score"]
        key = pd.MultiIndex.from_arrays([items["run_id"].astype(str), items["job_id"].astype(str)])
        scores = s.reindex(key).to_numpy()
        if np.isnan(scores).any():
            raise SystemExit(f"{folder}: {int(np.isnan(scores).sum())} {p} rows without an LM score")
        parts[p] = (items, scores, items["label"].to_numpy().astype(int))
    base = sp.train.attrs.get("features")
    y_val, y_test = parts["validation"][2], parts["test"][2]
    out = []
    for with_lm in (True, False):
        cand = {}
        for fs in ("plain", "context"):
            x = {p: tree_inputs(parts[p][0], fs, base=base) for p in parts}
            if with_lm:
                x = {p: np.column_stack([x[p], parts[p][1]]) for p in parts}
            for kind in ("rf", "hgb"):
                est = fit_tree(make_estimator(kind, n_estimators=300, seed=seed), x["train"], parts["train"][2])
                cand[f"{kind}-{fs}"] = [est.predict_proba(x[p])[:, 1] for p in ("validation", "test")]
        for fs in ("plain", "context"):
            cand[f"mean-{fs}"] = [(a + b) / 2 for a, b in zip(cand[f"rf-{fs}"], cand[f"hgb-{fs}"])]
        f1 = {}
        for name, (v, t) in cand.items():
            thr = choose_threshold(y_val, v, "f1")
            f1[name] = (objective_value(y_val, v, thr, "f1"), float(f1_score(y_test, (t >= thr).astype(int))))
        pick = max(TREES, key=lambda k: f1[k][0])  # the stack's rule: best validation F1, ties to the first
        f1["pick"] = f1[pick]
        f1["pick-mean"] = f1[f"mean-{pick.split('-')[1]}"]
        out += [{"workflow": run["dataset"], "seed": seed, "lm": with_lm, "variant": k, "val_f1": v, "test_f1": t,
                 "picked": pick} for k, (v, t) in f1.items()]
    stack_f1 = json.loads((folder / "metrics.json").read_text())["f1"]
    mine = next(r["test_f1"] for r in out if r["lm"] and r["variant"] == "pick")
    if abs(mine - stack_f1) > 1e-9:
        raise SystemExit(f"{folder}: the re-fitted layer scores {mine:.4f}, the stack run {stack_f1:.4f}")
    return out


def main() -> None:
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=("cpu", "full"), default="cpu")
    a = ap.parse_args()
    root = out_dir(a.scale)
    runs = json.loads((root / "recipe.resolved.json").read_text())["runs"]
    t0, load0 = time.perf_counter(), os.getloadavg()
    rows = []
    for r in runs:
        folder = root / "runs" / r["hash"]
        run = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else None
        if run and run["kind"] == "fusion" and (folder / "fusion" / "lm_scores.csv").is_file():
            rows += layer(run, folder)
            print(f"{r['dataset']} seed {r['seed']}: done", flush=True)
    df = pd.DataFrame(rows)
    # without the LM, each tree is the recipe's baseline row of the same name: same rows, seeds and builder
    alone = df[~df.lm].groupby(["workflow", "variant"])["test_f1"].mean()
    for r in json.loads((root / "results.json").read_text())["rows"]:
        if r["kind"] == "baseline" and (r["dataset"], r["method"]) in alone.index and \
                abs(alone[(r["dataset"], r["method"])] - r["f1_mean"]) > 1e-9:
            raise SystemExit(f"{r['dataset']} {r['method']}: re-fitted without the LM "
                             f"{alone[(r['dataset'], r['method'])]:.4f}, the baseline run {r['f1_mean']:.4f}")
    mean = df.groupby(["workflow", "variant", "lm"])["test_f1"].mean().unstack("lm")
    order = TREES + ["pick", "mean-plain", "mean-context", "pick-mean"]
    table = pd.DataFrame({"with LM": mean[True], "without LM": mean[False]}).reset_index()
    table["LM adds"] = table["with LM"] - table["without LM"]
    table["variant"] = pd.Categorical(table["variant"], order)
    table = table.sort_values(["workflow", "variant"])
    gain = table[table.variant.isin(TREES + ["pick"])]["LM adds"]
    seeds = sorted(df.seed.unique().tolist())
    summary = {"scale": a.scale, "seeds": seeds, "stack_runs": int(len(df) / (2 * len(order))),
               "lm_adds_min": float(gain.min()), "lm_adds_max": float(gain.max()),
               "lm_adds_median": float(gain.median()), "wall_s": time.perf_counter() - t0,
               "load_average_start": load0, "load_average_end": os.getloadavg()}
    lines = [
        "# Does the LM add anything to the stack? (tree layer with and without the LM score)", "",
        f"`bench/stack_ablation.py --scale {a.scale}`: the stack runs of `bench/lm_vs_trees.py` ({a.scale} scale, "
        f"{summary['stack_runs']} runs, seeds {seeds}), their tree layer re-fitted from the LM scores each run "
        "saved (`fusion/lm_scores.csv`), once with the LM score as a column and once without it. Same rows, same "
        "seeds, same trees (300 trees, the stack's builder), thresholds on validation. `pick`: the tree with the "
        "best validation F1 of the four, the stack's rule (with the LM it equals each run's own test F1; without "
        "it each tree equals the recipe's baseline row of that name: both checked); "
        "`mean-*`: the mean of rf's and hgb's probabilities; `pick-mean`: that mean on the picked feature set. "
        "Test F1, mean over seeds.", "",
        f"**The LM score adds {summary['lm_adds_min']:+.3f} to {summary['lm_adds_max']:+.3f} F1 (median "
        f"{summary['lm_adds_median']:+.3f}) to the same tree** over the four trees and the pick on the five "
        "workflows. Averaging rf and hgb moves F1 about as much with or without the LM, so a stack that beats the "
        "best single tree by averaging would owe it to the averaging, not to the LM.", "",
        table.to_markdown(index=False, floatfmt=".3f"), "",
        f"Wall time {summary['wall_s'] / 60:.1f} min on {os.cpu_count()} CPU cores (1-minute load at start / end "
        f"{load0[0]:.1f} / {summary['load_average_end'][0]:.1f}).", ""]
    name = "stack_ablation" if a.scale == "cpu" else "stack_ablation_full"
    atomic_write_text(RESULTS / f"{name}.md", "\n".join(lines))
    atomic_write_text(RESULTS / f"{name}.json", json.dumps({"summary": summary, "rows": rows}, indent=2) + "\n")
    print("\n".join(lines[:8]))


if __name__ == "__main__":
    main()
