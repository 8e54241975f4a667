"""`llmad baseline --data SPEC --method rf|hgb|iforest|knn`: the strong non-LLM references."""
from __future__ import annotations

import typer

from llmad.cli.apps import app
from llmad.cli.options import ConfigCommand, config_options
from llmad.config import DataConfig
from llmad.rundir import RunOptions


@app.command(cls=ConfigCommand)
@config_options(DataConfig, into="data")
@config_options("llmad.detectors.baselines:BaselineConfig", into="method")
@config_options(RunOptions, into="run")
def baseline(data: dict, method: dict, run: dict) -> None:
    """Fit a classical detector on train, threshold on validation, report test metrics."""
    from llmad.api.baseline import run_baseline
    from llmad.cli.progress import cli_hooks
    from llmad.config import merge
    from llmad.detectors.baselines import BaselineConfig

    r = merge(RunOptions(), run)
    with cli_hooks(r.quiet) as hooks:
        res = run_baseline(merge(DataConfig(), data), merge(BaselineConfig(), method), out=r.out, force=r.force,
                           hooks=hooks)
    typer.echo(res.summary)
