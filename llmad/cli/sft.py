"""`llmad sft --model minilm --data flowbench:1000genome` fine-tunes an encoder classifier on job sentences;
`llmad predict --model runs/sft/.../model --data flowbench:montage` scores jobs with a saved model.

Multi-process (DDP over gloo on CPU, NCCL on GPUs): `torchrun --nproc_per_node 2 -m llmad sft ...`
(or `accelerate launch` with a MULTI_CPU/MULTI_GPU accelerate config). Rank 0 writes the outputs.
"""
from __future__ import annotations

from typing import Optional

import typer

from llmad.cli.apps import app
from llmad.cli.options import ConfigCommand, config_options, model_folder
from llmad.config import DataConfig, field_help, merge
from llmad.rundir import RunOptions


@app.command(cls=ConfigCommand)
@config_options("llmad.detectors.sft.config:SFTConfig", into="sft_opts",
                short={"model": "-m", "template": "-t", "progress": "-q"})
@config_options(DataConfig, into="data_opts")
@config_options("llmad.api.sft:SFTRunConfig", into="run_opts", short={"out": "-o"})
@config_options(RunOptions, into="common")
def sft(
    sft_opts: dict, data_opts: dict, run_opts: dict, common: dict,
    config: Optional[str] = typer.Option(None, "--config", help="YAML with data:/sft: sections (options override)"),
) -> None:
    """Fine-tune an encoder classifier on job sentences (HF Trainer); save the model and test metrics."""
    from llmad.api.sft import SFTRunConfig, run_sft
    from llmad.cli.progress import cli_hooks
    from llmad.config import from_dict, load_yaml
    from llmad.detectors.sft.config import parse_freeze
    from llmad.models.resolve import check_precision, resolve_model

    base = from_dict(SFTRunConfig, load_yaml(config), where=config) if config else SFTRunConfig()
    if config is None:
        base.data = DataConfig(spec="flowbench:1000genome", split="run")
    d = merge(base.data, data_opts)
    s = merge(base.sft, sft_opts)
    parse_freeze(s.freeze)
    check_precision(s.precision)  # before any data is loaded
    if not s.init_from:
        resolve_model(s.model)  # offline hub ids fail here, before any data is loaded
    # --resume is a command-line decision only (a config file never resumes by itself).
    cfg = merge(SFTRunConfig(data=d, sft=s, out=base.out, resume=False, keep_checkpoints=base.keep_checkpoints,
                             save_model=base.save_model), run_opts)
    with cli_hooks(bool(common.get("quiet"))) as hooks:
        res = run_sft(cfg, hooks=hooks, force=bool(common.get("force")))
    if res.summary:  # empty on the worker ranks of a multi-process run
        typer.echo(res.summary)


@app.command(cls=ConfigCommand)
@config_options(RunOptions, into="common")
def predict(
    common: dict,
    model: str = typer.Option(..., "--model", "-m", help="a saved job detector: <out>/model of sft, icl, baseline"
                                                       " (or the run folder <out>)"),
    data: str = typer.Option(..., "--data", "-d", help="dataset spec, e.g. flowbench:montage"),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="data folder (default: found automatically)"),
    columns: Optional[str] = typer.Option(None, "--columns", help=field_help(DataConfig, "columns")),
    split: Optional[str] = typer.Option(None, "--split", help="score one part of this split (default: all jobs)"),
    part: str = typer.Option("test", "--part", help="train | validation | test (with --split)"),
    test_workflow: Optional[str] = typer.Option(None, "--test-workflow", help="unseen workflow for --split workflow"),
    seed: int = typer.Option(0, "--seed", help="seed of the split and of the --limit sample"),
    limit: Optional[int] = typer.Option(None, "--limit", help="score a seeded sample of N jobs"),
    quantize: bool = typer.Option(False, "--quantize", help="dynamic int8 quantized scoring on CPU"),
) -> None:
    """Score jobs with a saved detector (sft, icl, baseline): predictions.csv, and metrics when labels are present."""
    from llmad.api.predict import run_predict
    from llmad.cli.progress import cli_hooks
    from llmad.data.specs import with_columns

    r = merge(RunOptions(), common)
    model = model_folder(model)
    with cli_hooks(r.quiet) as hooks:
        res = run_predict(model, with_columns(data, columns), data_dir=data_dir, split=split, part=part, seed=seed,
                          test_workflow=test_workflow, limit=limit, out=r.out, quantize=quantize, hooks=hooks,
                          force=r.force)
    typer.echo(res.summary)
