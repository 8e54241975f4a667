"""Scoring speed of the fused stack vs its text-only LM (issue 17, item 7), side by side in one process.

    .venv/bin/python bench/fusion_speed.py --model runs/bench-lm-vs-trees/runs/<hash>/fusion/model \
        --workflow 1000genome --jobs 1000 --reps 3

The same test jobs (peer-context features computed on whole runs, as the loader does) are scored by the stack
(``score``: LM score + tree over features) and by its LM alone (``lm_.score``), interleaved rep by rep; the median
jobs/s of each and their ratio go to bench/results/fusion_speed.{md,json} with the machine load.
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
    p.add_argument("--workflow", default="1000genome")
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    import torch

    from llmad.data import load_split
    from llmad.data.splits import subsample
    from llmad.detectors import load_detector

    det = load_detector(a.model)
    if getattr(det, "kind", "") != "fusion-stack":
        raise SystemExit(f"{a.model}: a {getattr(det, 'kind', '?')} detector, not fusion-stack")
    split = load_split(f"flowbench:{a.workflow}", split="run", seed=a.seed, context=True)
    jobs = subsample(split.test, a.jobs, a.seed).reset_index(drop=True)
    load0 = os.getloadavg()
    det.score(jobs.iloc[:64])  # warm-up: kernels, tokenizer caches
    times: dict[str, list[float]] = {"text-only LM": [], "stack (LM + tree)": []}
    for _ in range(a.reps):
        for name, fn in (("text-only LM", det.lm_score), ("stack (LM + tree)", det.score)):
            t0 = time.perf_counter()
            fn(jobs)
            times[name].append(time.perf_counter() - t0)
    rows = {k: {"median_s": float(np.median(v)), "jobs_per_s": len(jobs) / float(np.median(v)), "reps_s": v}
            for k, v in times.items()}
    ratio = rows["stack (LM + tree)"]["jobs_per_s"] / rows["text-only LM"]["jobs_per_s"]
    doc = {"model": a.model, "workflow": a.workflow, "jobs": len(jobs), "reps": a.reps,
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
             f"{load0[0]:.2f}, end {os.getloadavg()[0]:.2f}. Model: `{a.model}` (tree: {doc['tree']}).", "",
             "| scorer | median s | jobs/s |", "|---|---|---|"]
    lines += [f"| {k} | {v['median_s']:.2f} | {v['jobs_per_s']:.0f} |" for k, v in rows.items()]
    lines += ["", f"Stack / text-only speed: **{ratio:.2f}x** (the tree over the features adds "
              f"{1000 * (rows['stack (LM + tree)']['median_s'] - rows['text-only LM']['median_s']) / len(jobs):.2f} "
              f"ms per job; the LM forward pass dominates).", ""]
    atomic_write_text(out / "fusion_speed.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
