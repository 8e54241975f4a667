"""`llmad nll --data flowbench:1000genome [--model smollm2-135m] [--permutations 3] [--threshold contamination:0.05]`
fine-tunes a causal LM on the train part's jobs (labels unused; `--normal-only`: rows labelled normal, the
semi-supervised mode) and scores each test job by the likelihood of its values (AnoLLM style); per-field NLL in
predictions.csv and metrics.json. Metric-window specs (`nezha:`, `smd:`, `asd:`, `csv:`) run the window variant.
"""
from __future__ import annotations

import typer

from llmad.cli.apps import app
from llmad.cli.options import ConfigCommand, config_options
from llmad.config import DataConfig
from llmad.rundir import RunOptions


@app.command(cls=ConfigCommand)
@config_options("llmad.detectors.nll.config:NLLConfig", into="nll_opts", short={"model": "-m", "template": "-t"})
@config_options(DataConfig, into="data_opts", exclude=("limit",))
@config_options("llmad.api.nll:NLLRunConfig", into="run_opts", short={"out": "-o"})
@config_options(RunOptions, into="common")
def nll(nll_opts: dict, data_opts: dict, run_opts: dict, common: dict) -> None:
    """Label-free detection: fine-tune a causal LM on serialized rows, score by value NLL; thresholds without labels."""
    from llmad.api.nll import NLLRunConfig, run_nll
    from llmad.cli.progress import cli_hooks
    from llmad.config import merge
    from llmad.detectors.nll.config import NLLConfig
    from llmad.models.resolve import resolve_model

    d = merge(DataConfig(spec="flowbench:1000genome", split="run"), data_opts)
    c = merge(NLLConfig(), nll_opts).validate()  # before any data or model is loaded
    if common.get("quiet"):
        c.progress = False  # -q: no Trainer or scoring bars either
    if run_opts.get("out"):  # an alias's first use converts its weights: a bad --out must fail before that
        from llmad.rundir import check_out

        check_out(run_opts["out"], force=bool(common.get("force")))
    resolve_model(c.model)  # an unreachable hub id fails here
    cfg = merge(NLLRunConfig(data=d, nll=c), run_opts)
    for name in ("test_limit", "val_limit"):
        v = getattr(cfg, name)
        if v is not None and v <= 0:
            raise typer.BadParameter(f"{'--limit' if name == 'test_limit' else '--val-limit'} must be positive")
    quiet = bool(common.get("quiet"))
    with cli_hooks(quiet) as hooks:
        res = run_nll(cfg, hooks=hooks, force=bool(common.get("force")))
    typer.echo(res.summary)
