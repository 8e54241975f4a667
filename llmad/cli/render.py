"""`llmad render SPEC --template NAME|PATH`: job sentences as a ``text,label`` CSV."""
from __future__ import annotations

from typing import Optional

import typer

from llmad.cli.apps import app
from llmad.cli.options import ConfigCommand, config_options
from llmad.config import DataConfig, TemplateConfig


@app.command(cls=ConfigCommand)
@config_options(DataConfig, into="data_opts", exclude=("limit",))
@config_options(TemplateConfig, into="template_opts")
def render(spec: str = typer.Argument(..., help="Dataset spec, e.g. flowbench:1000genome"),
           data_opts: dict = None, template_opts: dict = None,
           part: str = typer.Option("test", help="train | validation | test"),
           out: Optional[str] = typer.Option(None, "--out", "-o", help="CSV to write (else print examples)."),
           n: int = typer.Option(5, help="Examples to print without --out.")) -> None:
    """Render jobs with a template; with --split paper --template paper this reproduces the published sentences."""
    import pandas as pd

    from llmad.config import merge
    from llmad.data import load_split
    from llmad.render import get_template, render_jobs

    d = merge(DataConfig(spec=spec), data_opts)
    t = merge(TemplateConfig(), template_opts)
    template, causal, split = t.name, t.causal, d.split

    get_template(template, "job")  # fail on a bad template before loading data
    if out:
        from llmad.rundir import check_out

        check_out(out, kind="file")
    s = load_split(spec, split=split, seed=d.seed, data_dir=d.data_dir, test_workflow=d.test_workflow,
                   context=(template == "context"), causal=causal)
    df = s.part(part)
    texts = render_jobs(df, template, causal=causal)
    frame = pd.DataFrame({"text": texts, "label": df["label"].astype(int).to_numpy()})
    if split == "paper" and template == "paper" and "published_text" in df.columns:
        same = (frame["text"] == df["published_text"]).to_numpy()
        matched = (df["run_id"] != "unmatched").to_numpy()
        typer.echo(f"{s.description}\nreproduced {int(same[matched].sum())}/{int(matched.sum())} published {part} "
                   f"sentences for rows whose job is in the data; {int((~matched).sum())} published rows have no "
                   f"job in the data (listed in the split info)", err=True)
    if out:
        from llmad.io import write_frame_csv

        write_frame_csv(out, frame)
        typer.echo(f"wrote {len(frame):,} rows to {out}")
    else:
        for t, y in frame.head(n).itertuples(index=False):
            typer.echo(f"[{y}] {t}")
