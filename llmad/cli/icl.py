"""`llmad icl --model smollm2-135m --shots 4 --data flowbench:1000genome` classifies jobs in context with a
decoder LLM (zero/one/few-shot, label-word scoring or generation or chain-of-thought, content-free calibration,
optional 4-bit + LoRA tuning); writes config.json, metrics.json, predictions.csv (and reasoning.jsonl for CoT).
"""
from __future__ import annotations

import typer

from llmad.cli.apps import app
from llmad.cli.options import ConfigCommand, config_options
from llmad.rundir import RunOptions


@app.command(cls=ConfigCommand)
@config_options("llmad.detectors.icl.config:ICLConfig", into="icl_opts",
                short={"model": "-m", "shots": "-k", "template": "-t"})
@config_options("llmad.api.icl:ICLRun", into="run_opts", short={"data": "-d", "out": "-o"})
@config_options(RunOptions, into="common")
def icl(icl_opts: dict, run_opts: dict, common: dict) -> None:
    """In-context learning with a decoder LLM; metrics on the test part, threshold from validation."""
    from llmad.api.icl import ICLRun, run_icl
    from llmad.cli.progress import cli_hooks
    from llmad.config import merge
    from llmad.detectors.icl.config import ICLConfig
    from llmad.errors import LlmadError
    from llmad.models.resolve import resolve_model

    if run_opts.get("limit") is not None and run_opts["limit"] <= 0:
        raise LlmadError("--limit must be positive")
    if icl_opts.get("max_new_tokens") is not None and icl_opts["max_new_tokens"] <= 0:
        raise LlmadError("--max-new-tokens must be positive")
    cfg = merge(ICLConfig(), icl_opts).validate()
    if run_opts.get("out"):  # an alias's first use converts its weights: a bad --out must fail before that
        from llmad.rundir import check_out

        check_out(run_opts["out"], force=bool(common.get("force")))
    resolve_model(cfg.model)  # an unreachable hub id fails here, before any data is loaded
    quiet = bool(common.get("quiet"))
    with cli_hooks(quiet) as hooks:
        res = run_icl(cfg, merge(ICLRun(), run_opts), hooks=hooks, force=bool(common.get("force")))
    if quiet:  # otherwise the run logged it already
        typer.echo(res.summary)
