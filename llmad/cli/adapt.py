"""`llmad adapt --target montage [--shots 0,1,2,5] [--methods scratch,transfer,proto,trees]`: adapt to a workflow
never trained on from k labeled runs, every method on the same rows; F1 vs k, the time each method needs to reach
95% of its own full-target F1, and the transfer / meta-learned speed-up (``llmad.api.adapt`` says how).
"""
from __future__ import annotations

import typer

from llmad.cli.apps import app
from llmad.cli.options import ConfigCommand, config_options
from llmad.rundir import RunOptions


@app.command(cls=ConfigCommand)
@config_options("llmad.api.adapt:AdaptConfig", into="opts", exclude=("out",), short={"model": "-m"})
@config_options(RunOptions, into="run")
def adapt(opts: dict, run: dict) -> None:
    """Adapt to an unseen workflow from k labeled runs: from scratch, transfer, meta-learned (proto), trees."""
    from llmad.api.adapt import AdaptConfig, run_adapt
    from llmad.cli.progress import cli_hooks
    from llmad.config import merge

    r = merge(RunOptions(), run)
    cfg = merge(AdaptConfig(), opts)
    cfg.out = r.out
    cfg.method_list(), cfg.shot_list()  # fail on a bad list before any data or model is loaded
    with cli_hooks(r.quiet) as hooks:
        res = run_adapt(cfg, hooks=hooks, force=r.force)
    typer.echo(res.summary)
