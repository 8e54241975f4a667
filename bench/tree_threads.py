"""Gradient-boosted tree fits (``hgb``) with one vs two OpenMP threads, under each OpenMP wait policy.

llmad sets ``OMP_WAIT_POLICY=PASSIVE`` on import (``llmad/__init__.py``: spinning idle threads of torch's and
sklearn's two OpenMP runtimes made SFT steps 10x slower on busy cores). HistGradientBoosting opens an OpenMP region
per tree node, and with sleeping threads every region pays a wake-up, so ``llmad.detectors.baselines.fit_tree``
fits hgb with one thread under PASSIVE. This measures that choice on real rows: Flow-Bench 1000genome, run split,
the context features the baselines use, 300 boosting iterations as ``make_estimator("hgb")`` builds them.

    .venv/bin/python bench/tree_threads.py        # bench/results/tree_threads.{md,json}

Each policy runs in its own fresh process (the policy is read when an OpenMP runtime loads); 1 and 2 threads
alternate within a process, 3 repeats each, the median is reported.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SIZES = (2000, 20000, None)  # None: the whole train part
REPEATS = 3


def child(policy: str) -> list[dict]:
    """Fit times in this process (``OMP_WAIT_POLICY`` already set by the parent)."""
    sys.path.insert(0, str(ROOT))
    from threadpoolctl import threadpool_limits

    from llmad.data import load_split
    from llmad.detectors.baselines import make_estimator, tree_inputs

    train = load_split("flowbench:1000genome", split="run", seed=0, context=True).part("train")
    rows = []
    for n in SIZES:
        part = train if n is None or n >= len(train) else train.sample(n, random_state=0)
        x, y = tree_inputs(part, "context"), part["label"].to_numpy()
        times: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(REPEATS):
            for threads in (1, 2):
                with threadpool_limits(threads, user_api="openmp"):
                    t0 = time.perf_counter()
                    make_estimator("hgb", seed=0).fit(x, y)
                    times[threads].append(time.perf_counter() - t0)
        rows.append({"policy": policy, "rows": int(len(part)), "features": int(x.shape[1]),
                     **{f"fit_s_{t}_thread{'s' if t > 1 else ''}": round(statistics.median(v), 3)
                        for t, v in times.items()}})
    return rows


def main() -> None:
    """Both policies, one fresh process each; the tables."""
    load0, t0, rows = os.getloadavg(), time.time(), []
    for policy in ("PASSIVE", "ACTIVE"):
        env = {**os.environ, "OMP_WAIT_POLICY": policy}
        out = subprocess.run([sys.executable, __file__, "child", policy], env=env, capture_output=True, text=True,
                             check=True, timeout=1800)
        rows += json.loads(out.stdout.strip().splitlines()[-1])
    for r in rows:
        r["two_over_one"] = round(r["fit_s_2_threads"] / r["fit_s_1_thread"], 2)
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)", "load_1min_start": load0[0],
            "load_1min_end": os.getloadavg()[0], "wall_s": round(time.time() - t0, 1),
            "data": "flowbench:1000genome, run split, train part, context features", "estimator": "hgb, 300 iter"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tree_threads.json").write_text(json.dumps({"settings": meta, "rows": rows}, indent=1) + "\n")
    import pandas as pd

    md = ["# hgb fits: one vs two OpenMP threads (`bench/tree_threads.py`)", "",
          f"{meta['data']}; {meta['estimator']}; median of {REPEATS}; {meta['machine']}; 1-minute load "
          f"{meta['load_1min_start']:.1f} at the start, {meta['load_1min_end']:.1f} at the end.", "",
          pd.DataFrame(rows).to_markdown(index=False), "",
          "`two_over_one` > 1: two threads are slower. llmad runs under PASSIVE (set on import), so "
          "`fit_tree` fits hgb with one thread.", ""]
    (RESULTS / "tree_threads.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        print(json.dumps(child(sys.argv[2])))
    else:
        main()
