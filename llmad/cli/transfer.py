"""`llmad transfer --method lstm-ae|moment|duallmad --data smd:all|asd:all|nezha:trainticket|csv:FOLDER
[--offline-fraction 0.5] [--new-days 1] [--n-clusters 2] [--transfer-steps 50]`.

OmniTransfer (Sun et al.): cluster half of the entities, one base model per cluster, adaptive full/partial transfer
to the new entities, compared with per-entity training from scratch (``llmad.api.transfer`` holds the API).
"""
from __future__ import annotations

import typer

from llmad.cli.apps import app
from llmad.cli.options import ConfigCommand, config_options
from llmad.rundir import RunOptions


@app.command(cls=ConfigCommand)
@config_options("llmad.api.transfer:TransferConfig", into="opts")
@config_options(RunOptions, into="common")
def transfer(opts: dict, common: dict) -> None:
    """OmniTransfer: cluster offline entities, transfer base models to new ones, compare with training from scratch."""
    from llmad.api.transfer import TransferConfig, run_transfer
    from llmad.cli.progress import cli_hooks
    from llmad.config import merge
    from llmad.rundir import default_out

    cfg = merge(TransferConfig(), opts)
    r = merge(RunOptions(), common)
    if not cfg.out:
        cfg.out = str(default_out("transfer", f"{cfg.method}-{cfg.data.replace(':', '-').replace('/', '_')}"))
    with cli_hooks(r.quiet) as hooks:
        res = run_transfer(cfg, hooks=hooks, force=r.force)
    typer.echo(res.summary)
    typer.echo(f"wrote {cfg.out}")
