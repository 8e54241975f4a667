"""Scoring speed of the fused stack vs its text-only LM (issue 17, item 7), side by side in one process.

    .venv/bin/python bench/fusion_speed.py --model runs/bench-lm-vs-trees/runs/<hash>/fusion/model \
        [--also <another stack's model folder>] --workflow 1000genome --jobs 1000 --reps 3

The same test jobs (peer-context features computed on whole runs, as the loader does) are scored by one MiniLM
alone (the first stack's first LM), by the stack (``score``: its LM score(s) + tree over features) and by each
``--also`` stack (e.g. ``test_lm: folds``, whose K fold LMs all score every job), interleaved rep by rep; the median
jobs/s of each and their ratio to the text-only LM go to bench/results/fusion_speed.{md,json} with the machine load.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmad.io import atomic_write_text, provenance  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a saved fusion-stack detector folder")
    p.add_argument("--also", action="append", default=[], help="another saved stack, scored in the same loop")
    p.add_argument("--workflow", default="1000genome")
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    import torch

    from llmad.data import load_split
    from llmad.data.splits import subsample
    from llmad.detectors import load_detector

    dets = [load_detector(m) for m in [a.model, *a.also]]
    for m, d in zip([a.model, *a.also], dets):
        if getattr(d, "kind", "") != "fusion-stack":
            raise SystemExit(f"{m}: a {getattr(d, 'kind', '?')} detector, not fusion-stack")
    det = dets[0]
    scorers = {"text-only LM (one MiniLM)": det.lm_.score}
    for d in dets:
        scorers[f"stack, test_lm {d.test_lm} ({len(d.lms_)} MiniLM{'s' if len(d.lms_) > 1 else ''} + tree)"] = d.score
    split = load_split(f"flowbench:{a.workflow}", split="run", seed=a.seed, context=True)
    jobs = subsample(split.test, a.jobs, a.seed).reset_index(drop=True)
    load0 = os.getloadavg()
    for d in dets:
        d.score(jobs.iloc[:64])  # warm-up: kernels, tokenizer caches
    times: dict[str, list[float]] = {k: [] for k in scorers}
    for _ in range(a.reps):
        for name, fn in scorers.items():
            t0 = time.perf_counter()
            fn(jobs)
            times[name].append(time.perf_counter() - t0)
    rows = {k: {"median_s": float(np.median(v)), "jobs_per_s": len(jobs) / float(np.median(v)), "reps_s": v}
            for k, v in times.items()}
    text, first = list(rows)[:2]
    ratio = rows[first]["jobs_per_s"] / rows[text]["jobs_per_s"]
    doc = {"model": a.model, "also": a.also, "workflow": a.workflow, "jobs": len(jobs), "reps": a.reps,
           "tree": getattr(det, "tree_name_", None), "torch_threads": torch.get_num_threads(),
           "load_average_start": load0, "load_average_end": os.getloadavg(), "rows": rows,
           "stack_over_text_speed_ratio": ratio,
           "provenance": {k: v for k, v in provenance().items() if k != "versions"}}
    out = ROOT / "bench" / "results"
    atomic_write_text(out / "fusion_speed.json", json.dumps(doc, indent=2) + "\n")
    lines = ["# Scoring speed: fused stack vs its text-only LM", "",
             f"Written by `bench/fusion_speed.py`: {len(jobs)} {a.workflow} test jobs (run split, seed {a.seed}), "
             f"scored {a.reps} times by each, interleaved in one process, torch fp32 on "
             f"{torch.get_num_threads()} threads of a {os.cpu_count()}-core CPU; load average at start "
             f"{load0[0]:.2f}, end {os.getloadavg()[0]:.2f}. Models: "
             f"{', '.join(f'`{m}` (tree: {d.tree_name_})' for m, d in zip([a.model, *a.also], dets))}.", "",
             "| scorer | median s | jobs/s | speed vs text-only |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['median_s']:.2f} | {v['jobs_per_s']:.0f} | {v['jobs_per_s'] / rows[text]['jobs_per_s']:.2f}x |"
              for k, v in rows.items()]
    lines += ["", f"Stack / text-only speed: **{ratio:.2f}x** (the tree over the features: "
              f"{1000 * (rows[first]['median_s'] - rows[text]['median_s']) / len(jobs):+.2f} ms per job; the LM "
              f"forward pass dominates, so a `test_lm: folds` stack scores at about 1/K of one LM's speed).", ""]
    atomic_write_text(out / "fusion_speed.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
