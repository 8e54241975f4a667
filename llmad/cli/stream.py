"""`llmad replay --model DIR --data flowbench:1000genome` replays DAG runs in event time and reports how early
anomalous jobs are flagged; `llmad watch FEED --model DIR --alerts alerts.jsonl` tails a live job feed.

`--model` is a saved detector folder (`llmad sft` writes one; any `detector.json` kind), or
`baseline:rf` / `baseline:hgb-context` to fit a classical detector on the split's train runs first.
"""
from __future__ import annotations

from typing import Optional

import typer

from llmad.cli.apps import app
from llmad.cli.options import ConfigCommand, config_options, model_folder
from llmad.config import DataConfig, field_help
from llmad.rundir import RunOptions

# watch scores with torch by default: a resumed watch re-scores sentences in other batches, and fp32 keeps that
# batch-invariant to ~1e-7 (bf16/int8 move scores by ~1e-3/1e-2, which could flip an alert after a restart).
WATCH_DEFAULTS = {"backend": "torch"}
STREAM_CONFIG = "llmad.stream.config:StreamConfig"


@app.command(cls=ConfigCommand)
@config_options(STREAM_CONFIG, into="stream_opts")
@config_options(RunOptions, into="common")
def replay(
    model: str = typer.Option(..., "--model", "-m", help="saved detector folder, or baseline:rf[-context]"),
    data: str = typer.Option("flowbench:1000genome", "--data", "-d", help="Flow-Bench spec"),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="data folder (default: found automatically)"),
    columns: Optional[str] = typer.Option(None, "--columns", help=field_help(DataConfig, "columns")),
    split: str = typer.Option("run", "--split", help="run | workflow | none (every run of --data)"),
    part: str = typer.Option("test", "--part", help="train | validation | test"),
    test_workflow: Optional[str] = typer.Option(None, "--test-workflow", help="for --split workflow"),
    seed: int = typer.Option(0, "--seed", help="seed of the split and of the --limit samples"),
    limit: Optional[int] = typer.Option(None, "--limit", help="replay a seeded sample of N runs of the part"),
    train_limit: Optional[int] = typer.Option(None, "--train-limit", help="baseline:...: fit on N train runs"),
    val_limit: Optional[int] = typer.Option(None, "--val-limit", help="--threshold validation: replay N runs"),
    stream_opts: dict = None,
    common: dict = None,
) -> None:
    """Replay DAG runs in event time; per-job first alert, lead times, false alerts, early-detection curve."""
    import json

    from llmad.api.replay import run_replay
    from llmad.config import merge
    from llmad.data.specs import with_columns
    from llmad.stream.config import StreamConfig, parse_speed

    from llmad.cli.progress import cli_hooks

    cfg = merge(StreamConfig(), stream_opts).check()
    r = merge(RunOptions(), common)
    # A paced replay is a live demo: alerts go to stdout as they fire (they are also saved in alerts.jsonl).
    live = (lambda a: typer.echo(json.dumps(a, sort_keys=True))) if parse_speed(cfg.speed) is not None else None
    with cli_hooks(r.quiet, err=True) as hooks:
        res = run_replay(model_folder(model), with_columns(data, columns), cfg, split=split, part=part, seed=seed,
                         runs=limit, val_runs=val_limit, train_runs=train_limit, test_workflow=test_workflow,
                         data_dir=data_dir, out=r.out, hooks=hooks, on_alert=live, force=r.force)
    typer.echo(res.summary)
    typer.echo(f"wrote {res.out_dir}")


@app.command(cls=ConfigCommand)
@config_options(STREAM_CONFIG, into="stream_opts", exclude=("reveal", "speed", "batch", "workers"),
                defaults=WATCH_DEFAULTS, helps={"threshold": "(watch: model or a number)"})
def watch(
    path: str = typer.Argument(..., help="feed file (CSV with header, or JSON lines), or - for stdin"),
    model: str = typer.Option(..., "--model", "-m", help="saved detector folder"),
    alerts: Optional[str] = typer.Option(None, "--alerts", help="append alerts here as JSON lines (default stdout)"),
    state: Optional[str] = typer.Option(None, "--state", help="offset + state file [ALERTS.state.json]"),
    fmt: Optional[str] = typer.Option(None, "--format", help="csv | jsonl [file suffix, else 1st line]"),
    columns: Optional[str] = typer.Option(None, "--columns", help="column map (YAML) of a feed in your own table's "
                                                                  "layout (as for jobs:PATH)"),
    follow: bool = typer.Option(True, "--follow/--no-follow", help="keep waiting for appended records"),
    poll: float = typer.Option(0.2, "--poll", help="seconds between polls of the feed"),
    idle_exit: Optional[float] = typer.Option(None, "--idle-exit", help="stop after N s without new records"),
    stream_opts: dict = None,
    batch_lines: int = typer.Option(2000, "--batch-lines", help="records per scoring batch / checkpoint"),
    max_runs: int = typer.Option(64, "--max-runs", help="runs kept in memory (least recently updated dropped)"),
    checkpoint_s: float = typer.Option(1.0, "--checkpoint-s",
                                       help="seconds between checkpoints (alerts are written at checkpoints)"),
) -> None:
    """Tail a job-update feed; score new/updated jobs; write each job's first alert once (resumes after a kill)."""
    import signal
    import sys
    from pathlib import Path

    from llmad.api.replay import open_detector
    from llmad.config import merge
    from llmad.errors import LlmadError
    from llmad.stream.config import StreamConfig
    from llmad.stream.watch import Watcher

    from llmad.rundir import check_out

    cfg = merge(StreamConfig(**WATCH_DEFAULTS), stream_opts).check()
    if fmt not in (None, "csv", "jsonl"):
        raise LlmadError(f"--format {fmt!r}: expected csv or jsonl")
    for flag, given in (("--alerts", alerts), ("--state", state)):  # appended to across restarts: reuse is fine
        if given:
            check_out(given, kind="file", flag=flag)
    det = open_detector(model_folder(model), quantize=cfg.quantize, backend=cfg.backend)
    if cfg.threshold == "model":
        if getattr(det, "threshold_", None) is None:
            raise LlmadError("the model has no validation threshold; pass --threshold NUMBER")
        thr = float(det.threshold_)
    else:
        try:
            thr = float(cfg.threshold)
        except ValueError:
            raise LlmadError(f"--threshold {cfg.threshold!r}: expected model or a number") from None
    state_path = state or (f"{alerts}.state.json" if alerts else None)
    if state_path is None:
        typer.echo("llmad watch: no --alerts/--state file: progress is not saved (a restart starts over)", err=True)
    if path != "-" and not follow and not Path(path).exists():
        raise LlmadError(f"feed {path} does not exist")
    stopping = {"flag": False}

    def _stop(signum, frame):  # finish the batch in hand, save, exit cleanly
        stopping["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    rename = None
    if columns:
        from llmad.data.jobs import feed_renamer, load_column_map

        rename = feed_renamer(load_column_map(columns))
    w = Watcher(det, thr, alert=cfg.alert, k=cfg.k, n=cfg.n, fmt=fmt, state_path=state_path, alerts_path=alerts,
                batch_lines=batch_lines, max_runs=max_runs, checkpoint_s=checkpoint_s, rename=rename)
    info = w.run(path, follow=follow, poll_s=poll, idle_exit_s=idle_exit, stop=lambda: stopping["flag"])
    typer.echo(f"llmad watch: {info.get('records', 0)} records, {info.get('alerts', 0)} alerts, "
               f"{info.get('malformed', 0)} malformed, resumed={info['resumed']}", err=True)
    sys.stdout.flush()
