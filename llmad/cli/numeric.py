"""`llmad numeric --method moment|lagllama|lstm-ae|iforest|rf|hgb|duallmad --data SPEC [--shots N]
[--finetune none|probe|lora]`,
`llmad pretrain moment --data SPEC [--data SPEC ...] --out DIR` and `llmad windows-text --data SPEC --out FILE.csv`.

The numeric track: metric windows from Nezha TrainTicket, SMD, ASD or a CSV, one detector contract, thresholds
from validation, time-series metrics (``llmad.api.numeric`` holds the API these commands call).
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional

import typer

from llmad.cli.apps import app
from llmad.cli.options import ConfigCommand, LlmadCommand, LlmadGroup, config_options
from llmad.rundir import RunOptions

pretrain_app = typer.Typer(help="Self-supervised pretraining of small foundation models on unlabeled train data.",
                           no_args_is_help=True, cls=LlmadGroup)
app.add_typer(pretrain_app, name="pretrain")


@app.command(cls=ConfigCommand)
@config_options("llmad.api.numeric:NumericConfig", into="opts")
@config_options(RunOptions, into="common")
def numeric(opts: dict, common: dict) -> None:
    """Fit a numeric detector on train windows, threshold on validation, report test metrics."""
    from llmad.api.numeric import NumericConfig, run_numeric
    from llmad.config import merge

    run_window_command("numeric", merge(NumericConfig(), opts), common, run_numeric)


def run_window_command(command: str, cfg: Any, common: dict, run: Callable[..., Any]) -> None:
    """The body of ``numeric`` and ``transfer``: default run folder ``runs/<command>/<method>-<data>-<stamp>``,
    progress hooks, ``run(cfg)``, the summary line."""
    from llmad.cli.progress import cli_hooks
    from llmad.config import merge
    from llmad.rundir import default_out

    r = merge(RunOptions(), common)
    if not cfg.out:
        cfg.out = str(default_out(command, f"{cfg.method}-{cfg.data.replace(':', '-').replace('/', '_')}"))
    with cli_hooks(r.quiet) as hooks:
        res = run(cfg, hooks=hooks, force=r.force)
    typer.echo(res.summary)
    typer.echo(f"wrote {cfg.out}")


@pretrain_app.command("moment", cls=LlmadCommand)
@config_options(RunOptions, into="common", helps={"out": "(the model goes to <out>/model; --model <out> loads it)"})
def pretrain_moment_cmd(data: List[str] = typer.Option(..., "--data", "-d", help="Dataset spec(s); only their train "
                                                                             "parts are used, labels ignored."),
                        common: dict = None,
                        seq_len: int = typer.Option(128, help="Input length (a multiple of 8)."),
                        d_model: int = typer.Option(64, help="Model width."),
                        layers: int = typer.Option(2, help="Transformer layers."),
                        heads: int = typer.Option(4, help="Attention heads."),
                        steps: int = typer.Option(300, "--max-steps", help="Training steps."),
                        batch_size: int = typer.Option(64, help="Windows per batch."),
                        lr: float = typer.Option(1e-3, help="Learning rate."),
                        mask_ratio: float = typer.Option(0.3, help="Share of patches masked."),
                        max_windows: int = typer.Option(4000, "--limit", help="At most N training windows (seeded)."),
                        seed: int = typer.Option(0, help="Seed of window sampling and training."),
                        data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Data folder.")) -> None:
    """Masked-reconstruction pretraining of a small MOMENT; load it later with `llmad numeric --model OUT`."""
    from llmad.api.numeric import pretrain_moment
    from llmad.cli.progress import cli_hooks
    from llmad.config import merge
    from llmad.rundir import default_out

    r = merge(RunOptions(), common)
    out = r.out or str(default_out("pretrain", "moment"))
    with cli_hooks(r.quiet) as hooks:
        res = pretrain_moment(data, out, data_dir=data_dir, seq_len=seq_len, d_model=d_model, n_layers=layers,
                              n_heads=heads, steps=steps, batch_size=batch_size, lr=lr, mask_ratio=mask_ratio,
                              max_windows=max_windows, seed=seed, log_every=0 if r.quiet else max(1, steps // 10),
                              force=r.force, hooks=hooks, quiet=r.quiet)
    typer.echo(f"pretrained {res['parameters']} parameters for {res['steps']} steps "
               f"(loss {res['first_loss']:.3f} -> {res['last_loss']:.3f}); wrote {out}")


@app.command("windows-text", cls=LlmadCommand)
def windows_text(data: str = typer.Option("nezha:trainticket", "--data", "-d", help="Metric dataset spec."),
                 out: str = typer.Option(..., "--out", help="CSV with text,label (the LLM_AD file shape)."),
                 part: str = typer.Option("test", help="train | validation | test"),
                 template: str = typer.Option("basic", help="prompts/window/<name>.j2 or a .j2 path"),
                 window: int = typer.Option(64, help="Window length (points)."),
                 stride: int = typer.Option(16, help="Step between windows."),
                 split: str = typer.Option("time", help="nezha: time | fault"),
                 view: str = typer.Option("pod", help="nezha: pod (per service) | system (all pods)"),
                 limit: Optional[int] = typer.Option(None, help="At most N windows (seeded sample)."),
                 seed: int = typer.Option(0, help="Seed of the --limit sample."),
                 data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Data folder.")) -> None:
    """Render metric windows as "FEAT is VAL" sentences: a text,label CSV for text classifiers outside llmad
    (`llmad sft` / `llmad icl` read Flow-Bench jobs, not this file)."""
    import numpy as np

    from llmad.data.windows import ZScore, make_windows
    from llmad.errors import LlmadError
    from llmad.io import write_frame_csv
    from llmad.api.numeric import NumericConfig, load_split, render_windows
    from llmad.rundir import check_out

    check_out(out, kind="file")
    sp = load_split(NumericConfig(data=data, data_dir=data_dir, split=split, view=view))
    parts = sp.parts()
    if part not in parts:
        raise LlmadError(f"--part {part!r}: expected train, validation or test")
    ws = make_windows(parts[part], ZScore().fit(sp.train), window, stride, part=part)
    rows = None
    if limit is not None and limit < len(ws):
        rows = np.sort(np.random.default_rng(seed).choice(len(ws), limit, replace=False))
    df = render_windows(ws, template=template, rows=rows)
    write_frame_csv(out, df)
    typer.echo(f"wrote {len(df)} windows ({int(df['label'].sum())} anomalous) to {out}")
