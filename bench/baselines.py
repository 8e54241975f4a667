"""Strong non-LLM references: rf/hgb x plain/context features x paper/run splits on the three LLM_AD workflows.

Run: .venv/bin/python bench/baselines.py  -> bench/results/baselines.{md,csv,json}
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pandas as pd

from llmad.api.baseline import run_baseline
from llmad.config import DataConfig
from llmad.detectors.baselines import BaselineConfig
from llmad.io import atomic_write_text, write_frame_csv

WORKFLOWS = ["1000genome", "montage", "predict_future_sales"]
RESULTS = Path(__file__).parent / "results"


def main() -> None:
    """Run the grid and write the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--workflows", nargs="+", default=WORKFLOWS)
    ap.add_argument("--methods", nargs="+", default=["rf", "hgb"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for wf in args.workflows:
            for split in ("paper", "run"):
                for method in args.methods:
                    for features in ("plain", "context"):
                        m = run_baseline(DataConfig(spec=f"flowbench:{wf}", split=split, seed=args.seed),
                                         BaselineConfig(method=method, features=features, seed=args.seed),
                                         out=Path(tmp) / f"{wf}-{split}-{method}-{features}").metrics
                        rows.append({"workflow": wf, "split": split, "method": method, "features": features,
                                     "accuracy": m["accuracy"], "precision": m["precision"], "recall": m["recall"],
                                     "f1": m["f1"], "roc_auc": m["roc_auc"], "pr_auc": m["pr_auc"],
                                     "fit_s": m["fit_seconds"], "ms_per_job": m["latency_ms_per_job"],
                                     "test_rows": m["n"]})
    df = pd.DataFrame(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_frame_csv(RESULTS / "baselines.csv", df)
    atomic_write_text(RESULTS / "baselines.json", json.dumps(rows, indent=2))
    md = ["# Non-LLM baselines (threshold chosen on validation F1)", "",
          "`paper` = the paper's job-level split (LLM_AD published validation/test rows); `run` = whole DAG runs "
          "70/15/15 (llmad's default). `context` adds peer/host features computed from other jobs' observable fields.",
          "", df.round(4).to_markdown(index=False)]
    atomic_write_text(RESULTS / "baselines.md", "\n".join(md) + "\n")
    print(df.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
