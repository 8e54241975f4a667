"""`llmad baseline --data SPEC --method rf|hgb|iforest|knn`: the strong non-LLM references."""
from __future__ import annotations

from typing import Optional

import typer

from llmad.cli.apps import app
from llmad.cli.options import ConfigCommand, config_options
from llmad.config import DataConfig


@app.command(cls=ConfigCommand)
@config_options(DataConfig, into="data")
@config_options("llmad.detectors.baselines:BaselineConfig", into="method")
def baseline(data: dict, method: dict,
             out: Optional[str] = typer.Option(None, "--out", help="Run folder (default runs/baseline/...).")) -> None:
    """Fit a classical detector on train, threshold on validation, report test metrics."""
    from llmad.api.baseline import run_baseline
    from llmad.config import merge
    from llmad.detectors.baselines import BaselineConfig

    print(run_baseline(merge(DataConfig(), data), merge(BaselineConfig(), method), out=out).summary)
