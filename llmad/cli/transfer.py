"""`llmad transfer --method lstm-ae|moment|duallmad --data smd:all|asd:all|nezha:trainticket|csv:FOLDER
[--offline-fraction 0.5] [--new-days 1] [--n-clusters 2] [--transfer-steps 50]`.

OmniTransfer (Sun et al.): cluster half of the entities, one base model per cluster, adaptive full/partial transfer
to the new entities, compared with per-entity training from scratch (``llmad.api.transfer`` holds the API).
"""
from __future__ import annotations


from llmad.cli.apps import app
from llmad.cli.options import ConfigCommand, config_options
from llmad.rundir import RunOptions


@app.command(cls=ConfigCommand)
@config_options("llmad.api.transfer:TransferConfig", into="opts")
@config_options(RunOptions, into="common")
def transfer(opts: dict, common: dict) -> None:
    """OmniTransfer: cluster offline entities, transfer base models to new ones, compare with training from scratch."""
    from llmad.api.transfer import TransferConfig, run_transfer
    from llmad.cli.numeric import run_window_command
    from llmad.config import merge

    run_window_command("transfer", merge(TransferConfig(), opts), common, run_transfer)
