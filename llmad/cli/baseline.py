"""`llmad baseline --data SPEC --method rf|hgb|iforest|knn`: the strong non-LLM references."""
from __future__ import annotations

from typing import Optional

import typer

from llmad.cli import app


@app.command()
def baseline(data: str = typer.Option("flowbench:1000genome", "--data", help="Dataset spec."),
             method: str = typer.Option("rf", help="rf | hgb | iforest | knn"),
             split: str = typer.Option("run", help="run | paper (the paper's job-level split) | workflow"),
             features: str = typer.Option("plain", help="plain (the 9 sentence features) | context (+ peer/host)"),
             causal: bool = typer.Option(False, help="Context from earlier-finished peers only."),
             seed: int = typer.Option(0),
             test_workflow: Optional[str] = typer.Option(None, help="For --split workflow."),
             limit: Optional[int] = typer.Option(None, help="Subsample each part (seeded)."),
             data_dir: Optional[str] = typer.Option(None, "--data-dir"),
             out: Optional[str] = typer.Option(None, "--out", help="Run folder (default runs/baseline/...).")) -> None:
    """Fit a classical detector on train, threshold on validation, report test metrics."""
    from llmad.api.baseline import run_baseline
    from llmad.config import DataConfig
    from llmad.detectors.baselines import BaselineConfig

    run_baseline(DataConfig(spec=data, data_dir=data_dir, split=split, seed=seed, test_workflow=test_workflow,
                            limit=limit),
                 BaselineConfig(method=method, features=features, causal=causal, seed=seed), out=out)
