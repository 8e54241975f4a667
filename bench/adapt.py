"""Adapting to an unseen workflow (issue 15): ``llmad adapt`` on every shipped workflow in turn, the other nine as
sources. Methods side by side on the same target rows: scratch (MiniLM fine-tuned on the k runs), transfer (MiniLM
fine-tuned on the sources, then on the k runs), proto (a meta-learned network paired with the target without
retraining it, and a tree pooled over the source jobs and the k runs), trees (rf on the numeric + peer-context
features of the k runs). Run split; threshold rule "rate" for every row (no
target validation label, no test label is read; ``llmad.api.adapt`` says how).

    nice -n 5 .venv/bin/python bench/adapt.py run        # resumable: one run folder per target under OUT
    nice -n 5 .venv/bin/python bench/adapt.py draws      # proto alone on seeds 1, 2: how much is the draw
    .venv/bin/python bench/adapt.py report               # bench/results/adapt.{md,json}

CPU-sized (the sizes are in SETTINGS and in every record). ``summary.median_speedup_vs_transfer``: median over
targets of t95(transfer) / t95(proto), t95 = the adaptation wall time of the cheapest k (full included) whose F1
reaches 95% of the method's own full-target F1; ``median_f1_gap_k2``: median over targets of proto's full-target
F1 minus its F1 with k = 2 runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmad.io import atomic_write_text, write_json  # noqa: E402

OUT = Path(os.environ.get("LLMAD_ADAPT_OUT", ROOT / "runs" / "bench-adapt"))
RESULTS = ROOT / "bench" / "results"
SETTINGS = {"shots": "0,1,2,5", "source_jobs": 150, "shot_jobs": 200, "full_jobs": 600, "unlabeled_jobs": 300,
            "limit": 400, "epochs": 2.0, "seed": 0}


def timed_adapt(out: Path, splits: dict, **config):
    """``run_adapt`` into ``out`` (forced), with its wall time and the machine load in ``out/bench_run.json``."""
    from llmad.api.adapt import AdaptConfig, run_adapt

    t0, load0 = time.perf_counter(), os.getloadavg()
    res = run_adapt(AdaptConfig(out=str(out), **config), splits=splits, force=True)
    write_json(out / "bench_run.json", {"wall_s": time.perf_counter() - t0, "load_average_start": load0,
                                        "load_average_end": os.getloadavg()})
    return res


def cmd_run(a: argparse.Namespace) -> None:
    """Every target (or ``--targets``), each workflow loaded once; finished targets are skipped."""
    from llmad.data import load_split
    from llmad.data.flowbench import available_workflows

    names = available_workflows()
    targets = a.targets.split(",") if a.targets else names
    t0 = time.perf_counter()
    splits = {w: load_split(f"flowbench:{w}", split="run", seed=SETTINGS["seed"], context=True) for w in names}
    print(f"loaded {len(names)} workflows in {time.perf_counter() - t0:.0f} s", flush=True)
    for t in targets:
        out = OUT / t
        if (out / "metrics.json").is_file():
            continue
        print(timed_adapt(out, splits, target=t, **SETTINGS).summary, flush=True)


def cmd_draws(a: argparse.Namespace) -> None:
    """Proto alone on more draws (``--seeds``: the split, the samples, the k runs and training all reseeded): how
    much of the seed-0 gap is the draw. Finished targets are skipped."""
    from llmad.data import load_split
    from llmad.data.flowbench import available_workflows

    names = available_workflows()
    for seed in (int(s) for s in a.seeds.split(",")):
        todo = [t for t in names if not (OUT / "draws" / f"seed{seed}" / t / "metrics.json").is_file()]
        if not todo:
            continue
        splits = {w: load_split(f"flowbench:{w}", split="run", seed=seed, context=True) for w in names}
        for t in todo:
            out = OUT / "draws" / f"seed{seed}" / t
            res = timed_adapt(out, splits, target=t, methods="proto", **{**SETTINGS, "seed": seed})
            print(f"seed {seed}: {res.summary}", flush=True)


def draw_gaps() -> dict[int, dict[str, float]]:
    """Proto's full - k2 F1 gap per extra draw (seed) and target, from ``draws`` run folders."""
    from llmad.api.adapt import summarize

    out: dict[int, dict[str, float]] = {}
    for d in sorted((OUT / "draws").glob("seed*/*/metrics.json")):
        m = json.loads(d.read_text())
        gap = summarize(m["rows"])["methods"]["proto"].get("gap_k2")
        if gap is not None:
            out.setdefault(int(d.parent.parent.name.removeprefix("seed")), {})[m["target"]] = gap
    return out


def _fmt(v, nd: int = 3) -> str:
    return "" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def _f1(y, p) -> float:
    tp = float((y & p).sum())
    return 2 * tp / max(float(y.sum() + p.sum()), 1.0)


def gap_ci(dirs: list[Path], method: str = "proto", draws: int = 1000, seed: int = 0) -> list[float]:
    """95% interval of the median over targets of F1(full) - F1(k = 2): test runs resampled with replacement, the
    same draw for both rows of a target (a cluster bootstrap: a run's jobs share its one anomaly kind)."""
    import numpy as np
    import pandas as pd

    rng, per = np.random.default_rng(seed), []
    for d in dirs:
        p = pd.read_csv(d / "predictions.csv", dtype={"k": str, "run_id": str})
        p = p[p["method"] == method]
        full, k2 = p[p["k"] == "full"].reset_index(drop=True), p[p["k"] == "2"].reset_index(drop=True)
        if full.empty or k2.empty:
            continue
        assert (full["job_id"].to_numpy() == k2["job_id"].to_numpy()).all(), d  # the same test jobs, same order
        runs = full.groupby("run_id").indices
        ids = list(runs)
        y, pf, pk = (full["label"].to_numpy(bool), full["prediction"].to_numpy(bool), k2["prediction"].to_numpy(bool))
        gaps = []
        for _ in range(draws):
            idx = np.concatenate([runs[r] for r in rng.choice(ids, len(ids))])
            gaps.append(_f1(y[idx], pf[idx]) - _f1(y[idx], pk[idx]))
        per.append(gaps)
    med = np.median(np.asarray(per), axis=0)
    return [round(float(np.percentile(med, 2.5)), 3), round(float(np.percentile(med, 97.5)), 3)]


def cmd_report(a: argparse.Namespace) -> None:
    """bench/results/adapt.{md,json} from the run folders."""
    import pandas as pd

    from llmad.api.adapt import summarize

    records, per_target, n_sources = [], [], set()
    dirs = sorted(p for p in OUT.iterdir() if (p / "metrics.json").is_file())
    for d in dirs:
        m = json.loads((d / "metrics.json").read_text())
        n_sources.add(len(m["sources"]))
        run = json.loads((d / "bench_run.json").read_text()) if (d / "bench_run.json").is_file() else {}
        for r in m["rows"]:
            records.append({**r, "k": str(r["k"]), "split": m["split"], "n_test": m["n_test"],
                            "n_unlabeled": m["n_unlabeled"], "device": "cpu (2 cores, shared)"})
        s = summarize(m["rows"])  # recomputed: the summary's fields may be newer than the run
        per_target.append({"target": m["target"], "speedup_vs_transfer": s.get("speedup_vs_transfer"),
                           "speedup_vs_transfer_common": s.get("speedup_vs_transfer_common"),
                           "common_bar_f1": s.get("common_bar_f1"),
                           **{f"{meth}_{k}": v for meth, ms in s["methods"].items() for k, v in ms.items()},
                           "wall_s": run.get("wall_s"), "load_start": run.get("load_average_start"),
                           "load_end": run.get("load_average_end")})
    speed = [p["speedup_vs_transfer"] for p in per_target if p.get("speedup_vs_transfer")]
    gaps = [p["proto_gap_k2"] for p in per_target if p.get("proto_gap_k2") is not None]
    common = [p["speedup_vs_transfer_common"] for p in per_target if p.get("speedup_vs_transfer_common")]
    summary = {"median_speedup_vs_transfer": statistics.median(speed) if speed else None,
               "median_speedup_vs_transfer_common_bar": statistics.median(common) if common else None,
               "transfer_never_reaches_common_bar": sum(p.get("transfer_t_common_s") is None for p in per_target),
               "proto_never_reaches_common_bar": sum(p.get("proto_t_common_s") is None for p in per_target),
               "median_f1_gap_k2": statistics.median(gaps) if gaps else None,
               "median_f1_gap_k2_ci95": gap_ci(dirs) if gaps else None, "targets": len(per_target),
               "goal": {"speedup_at_least": 5.0, "gap_at_most": 0.05}}
    by_seed = {SETTINGS["seed"]: {p["target"]: p["proto_gap_k2"] for p in per_target
                                  if p.get("proto_gap_k2") is not None}, **draw_gaps()}
    summary["median_f1_gap_k2_by_seed"] = {str(k): round(statistics.median(v.values()), 4)
                                           for k, v in sorted(by_seed.items()) if v}
    every = [g for v in by_seed.values() for g in v.values()]
    summary["median_f1_gap_k2_all_draws"] = statistics.median(every) if len(by_seed) > 1 else None
    for meth in ("scratch", "transfer", "trees"):
        g = [p[f"{meth}_gap_k2"] for p in per_target if p.get(f"{meth}_gap_k2") is not None]
        summary[f"median_f1_gap_k2_{meth}"] = statistics.median(g) if g else None
    write_json(RESULTS / "adapt.json", {"settings": SETTINGS, "summary": summary, "per_target": per_target,
                                        "records": records, "machine": platform.platform()})
    df = pd.DataFrame(records)
    f1 = df[df["applicable"]].pivot_table(index=["target", "method"], columns="k", values="f1").round(3)
    roc = df[df["applicable"]].pivot_table(index=["target", "method"], columns="k", values="roc_auc").round(3)
    secs = df[df["applicable"]].pivot_table(index=["target", "method"], columns="k", values="adapt_s").round(2)
    cols = [c for c in ("0", "1", "2", "5", "full") if c in f1.columns]
    pt = pd.DataFrame(per_target)
    pt["load_1min_start"] = [v[0] if v else None for v in pt.get("load_start", [None] * len(pt))]
    f1_cols = ["target"] + [f"{m}_{k}" for m in ("proto", "transfer", "scratch", "trees")
                            for k in ("f1_full", "f1_k2", "gap_k2")]
    time_cols = ["target", "speedup_vs_transfer", "proto_t95_s", "proto_k95", "transfer_t95_s", "transfer_k95",
                 "common_bar_f1", "speedup_vs_transfer_common", "proto_t_common_s", "transfer_t_common_s",
                 "trees_t_common_s", "wall_s", "load_1min_start"]
    goal_speed = summary["median_speedup_vs_transfer"]
    goal_gap = summary["median_f1_gap_k2"]
    lines = [
        "# Adapting to an unseen workflow: scratch vs transfer vs meta-learned (proto) vs trees (adapt)",
        "",
        f"Written by `bench/adapt.py` (its docstring: protocol; `llmad.api.adapt`: the rules). Each target is a "
        f"workflow never trained on; the other {', '.join(map(str, sorted(n_sources)))} shipped workflows are "
        f"the sources. Run split, seed {SETTINGS['seed']}. Sizes: {SETTINGS['source_jobs']} train jobs per source "
        f"workflow; k labeled target runs (nested draws, at most {SETTINGS['shot_jobs']} of their jobs); full = "
        f"{SETTINGS['full_jobs']} labeled target train jobs; {SETTINGS['unlabeled_jobs']} unlabeled target train "
        f"jobs; {SETTINGS['limit']} test jobs. MiniLM (offline `minilm`) for scratch, transfer and proto's frozen "
        f"encoder; SFT {SETTINGS['epochs']} epochs, lr 1e-4, balanced loss, no evaluation passes. Threshold: rule "
        f"`rate` for every row (the top share of the unlabeled target jobs' scores; share = labeled target jobs' "
        f"anomaly share, averaged per run, shrunk toward the sources' as if 20 more runs had been seen). "
        f"`adapt_s`: wall seconds from the target data to a usable "
        f"detector (training or pairing, plus scoring the unlabeled jobs for the threshold); the source step is "
        f"paid once and not in it. CPU, 2 cores shared with other agents' jobs (load per target below).",
        "",
        "## Summary",
        "",
        f"- median speed-up, t95(transfer) / t95(proto): **{_fmt(goal_speed, 2)}x** "
        f"(goal >= 5x: {'met' if goal_speed and goal_speed >= 5 else 'not met'}); t95 = the cheapest adaptation "
        f"reaching 95% of the method's *own* full-target F1, so a method whose full-target F1 is poor reaches it at "
        f"once",
        f"- the same against a common bar (95% of the best full-target F1 of any method on that target): median "
        f"speed-up {_fmt(summary['median_speedup_vs_transfer_common_bar'], 2)}x over the targets where both reach "
        f"it; transfer never reaches it on {summary['transfer_never_reaches_common_bar']} of {len(per_target)} "
        f"targets, proto on {summary['proto_never_reaches_common_bar']}",
        f"- median F1 gap of proto, full target minus k = 2 runs: **{_fmt(goal_gap)}** "
        f"(goal <= 0.05: {'met' if goal_gap is not None and goal_gap <= 0.05 else 'not met'}); 95% interval "
        f"{summary['median_f1_gap_k2_ci95']} from a bootstrap over the test runs (1000 draws, the same draw for "
        f"the full and the k = 2 row of a target): how far the draw of test runs alone moves the gap",
        *(f"- median F1 gap, {m}: {_fmt(summary[f'median_f1_gap_k2_{m}'])}" for m in ("transfer", "scratch", "trees")),
        *(["- proto's gap on other draws (`bench/adapt.py draws`: proto alone, the split, samples, k runs and "
           "training reseeded; the other methods are not rerun): median per seed "
           + ", ".join(f"seed {k} **{v:.3f}**" for k, v in summary["median_f1_gap_k2_by_seed"].items())
           + f"; median over every (seed, target): {_fmt(summary['median_f1_gap_k2_all_draws'])}. The seed-0 "
           f"number above is one draw of these"] if summary["median_f1_gap_k2_all_draws"] is not None else []),
        "",
        "## Per target: F1 with the full target, with k = 2 runs, and the gap",
        "",
        pt[[c for c in f1_cols if c in pt.columns]].round(3).to_markdown(index=False),
        "",
        "## Per target: adaptation seconds to 95% of the own full-target F1 (t95, at k95), and to the common bar",
        "",
        "Empty `*_t_common_s`: the method never reaches the common bar on that target. `wall_s`: the whole target "
        "(source steps included); `load_1min_start`: the machine's 1-minute load when it started.",
        "",
        pt[[c for c in time_cols if c in pt.columns]].round(3).to_markdown(index=False),
        "",
        "## F1 vs k (test, rule `rate`)",
        "",
        f1[cols].reset_index().to_markdown(index=False),
        "",
        "## ROC-AUC vs k",
        "",
        roc[cols].reset_index().to_markdown(index=False),
        "",
        "## Adaptation wall seconds vs k",
        "",
        secs[cols].reset_index().to_markdown(index=False),
        "",
        "Empty cells: the method cannot use that support (scratch and trees need labeled target runs; trees need "
        "both classes among them). Machine load per target: `load_start` / `load_end` in adapt.json.",
    ]
    atomic_write_text(RESULTS / "adapt.md", "\n".join(lines) + "\n")
    print((RESULTS / "adapt.md").read_text()[:3000])


def main() -> None:
    """Subcommands: run, draws, report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--targets", default="", help="comma list (default: every shipped workflow)")
    d = sub.add_parser("draws")
    d.add_argument("--seeds", default="1,2", help="comma list of extra seeds (proto only)")
    sub.add_parser("report")
    a = p.parse_args()
    {"run": cmd_run, "draws": cmd_draws, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
