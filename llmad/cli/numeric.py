"""`llmad numeric --method moment|lagllama|lstm-ae|iforest|rf|hgb --data SPEC [--shots N] [--finetune none|probe|lora]`,
`llmad pretrain moment --data SPEC [--data SPEC ...] --out DIR` and `llmad windows-text --data SPEC --out FILE.csv`.

The numeric track: metric windows from Nezha TrainTicket, SMD, ASD or a CSV, one detector contract, thresholds
from validation, time-series metrics (``llmad.api.numeric`` holds the API these commands call).
"""
from __future__ import annotations

from typing import List, Optional

import typer

from llmad.cli import app

pretrain_app = typer.Typer(help="Self-supervised pretraining of small foundation models on unlabeled train data.",
                           no_args_is_help=True)
app.add_typer(pretrain_app, name="pretrain")


@app.command()
def numeric(method: str = typer.Option("iforest", help="moment | lagllama | lstm-ae | iforest | rf | hgb"),
            data: str = typer.Option("asd:omi-1", "--data",
                                     help="nezha:trainticket | smd:<machine>|all | asd:<server>|all | csv:<path>"),
            shots: Optional[int] = typer.Option(None, help="Training windows (0 = zero-shot; rf/hgb: labelled "
                                                           "windows). Default: all."),
            finetune: str = typer.Option("none", help="moment: none | probe | lora; lagllama: none | full"),
            model: Optional[str] = typer.Option(None, help="moment/lagllama: hub id or local folder "
                                                           "(lagllama: 'scratch' trains a small one here)"),
            split: str = typer.Option("time", help="nezha: time | fault"),
            test_types: Optional[str] = typer.Option(None, help="nezha --split fault: unseen types, comma list "
                                                                "(default cpu_contention)"),
            view: str = typer.Option("pod", help="nezha: pod (per service) | system (all pods)"),
            window: Optional[int] = typer.Option(None, help="Window length (default 64 nezha/asd, 256 else, "
                                                            "moment: model seq_len)"),
            stride: Optional[int] = typer.Option(None, help="Validation/test stride (default window/4)."),
            max_steps: int = typer.Option(200, help="Training steps cap (lstm-ae, moment probe/lora, lagllama)."),
            limit_series: Optional[int] = typer.Option(None, help="smd/asd: only the first N machines."),
            seed: int = typer.Option(0),
            data_dir: Optional[str] = typer.Option(None, "--data-dir"),
            out: Optional[str] = typer.Option(None, "--out", help="Run folder (default runs/numeric/...)."),
            ) -> None:
    """Fit a numeric detector on train windows, threshold on validation, report test metrics."""
    from llmad.api.numeric import NumericConfig, run_numeric
    from llmad.rundir import default_out

    cfg = NumericConfig(method=method, data=data, shots=shots, finetune=finetune, model=model, split=split,
                        test_types=[t.strip() for t in test_types.split(",")] if test_types else None,
                        view=view, window=window, stride=stride, max_steps=max_steps, limit_series=limit_series,
                        seed=seed, data_dir=data_dir,
                        out=out or str(default_out("numeric", f"{method}-{data.replace(':', '-').replace('/', '_')}")))
    run_numeric(cfg)
    typer.echo(f"wrote {cfg.out}")


@pretrain_app.command("moment")
def pretrain_moment_cmd(data: List[str] = typer.Option(..., "--data", help="Dataset spec(s); only their train "
                                                                             "parts are used, labels ignored."),
                        out: str = typer.Option(..., "--out", help="Folder for save_pretrained."),
                        seq_len: int = typer.Option(128, help="Input length (a multiple of 8)."),
                        d_model: int = typer.Option(64), layers: int = typer.Option(2), heads: int = typer.Option(4),
                        steps: int = typer.Option(300), batch_size: int = typer.Option(64),
                        lr: float = typer.Option(1e-3), mask_ratio: float = typer.Option(0.3),
                        max_windows: int = typer.Option(4000), seed: int = typer.Option(0),
                        data_dir: Optional[str] = typer.Option(None, "--data-dir")) -> None:
    """Masked-reconstruction pretraining of a small MOMENT; load it later with `llmad numeric --model OUT`."""
    from llmad.api.numeric import pretrain_moment

    res = pretrain_moment(data, out, data_dir=data_dir, seq_len=seq_len, d_model=d_model, n_layers=layers,
                          n_heads=heads, steps=steps, batch_size=batch_size, lr=lr, mask_ratio=mask_ratio,
                          max_windows=max_windows, seed=seed, log_every=max(1, steps // 10))
    typer.echo(f"pretrained {res['parameters']} parameters for {res['steps']} steps "
               f"(loss {res['first_loss']:.3f} -> {res['last_loss']:.3f}); wrote {out}")


@app.command("windows-text")
def windows_text(data: str = typer.Option("nezha:trainticket", "--data"),
                 out: str = typer.Option(..., "--out", help="CSV with text,label (the LLM_AD file shape)."),
                 part: str = typer.Option("test", help="train | validation | test"),
                 template: str = typer.Option("basic", help="prompts/window/<name>.j2 or a .j2 path"),
                 window: int = typer.Option(64), stride: int = typer.Option(16),
                 split: str = typer.Option("time"), view: str = typer.Option("pod"),
                 limit: Optional[int] = typer.Option(None, help="At most N windows (seeded sample)."),
                 seed: int = typer.Option(0),
                 data_dir: Optional[str] = typer.Option(None, "--data-dir")) -> None:
    """Render metric windows as "FEAT is VAL" sentences so `llmad sft` / `llmad icl` can read them."""
    import numpy as np

    from llmad.data.windows import ZScore, make_windows
    from llmad.errors import LlmadError
    from llmad.io import write_frame_csv
    from llmad.api.numeric import NumericConfig, load_split, render_windows

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
