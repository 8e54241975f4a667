"""`llmad render --data SPEC --template NAME|PATH` (or `llmad render SPEC ...`): job sentences as a ``text,label``
CSV."""
from __future__ import annotations

from typing import Optional

import typer

from llmad.cli.apps import app
from llmad.cli.options import ConfigCommand, config_options
from llmad.config import DataConfig, TemplateConfig


@app.command(cls=ConfigCommand)
@config_options(DataConfig, into="data_opts")
@config_options(TemplateConfig, into="template_opts")
def render(dataset: Optional[str] = typer.Argument(None, help="Dataset spec (the same as --data), e.g. "
                                                                 "flowbench:1000genome", show_default=False),
           data_opts: dict = None, template_opts: dict = None,
           part: str = typer.Option("test", help="train | validation | test"),
           out: Optional[str] = typer.Option(None, "--out", "-o", help="CSV to write (else print examples)."),
           ) -> None:
    """Render jobs with a template; with --split paper --template paper this reproduces the published sentences."""
    import pandas as pd

    from llmad.config import merge
    from llmad.data import load_split
    from llmad.render import get_template, render_jobs

    d = merge(DataConfig(), {"spec": dataset, **data_opts})
    spec = d.spec
    t = merge(TemplateConfig(), template_opts)
    template, causal, split = t.name, t.causal, d.split

    get_template(template, "job")  # fail on a bad template before loading data
    if out:
        from llmad.rundir import check_out

        check_out(out, kind="file")
    s = load_split(spec, split=split, seed=d.seed, data_dir=d.data_dir, test_workflow=d.test_workflow,
                   context=(template == "context"), causal=causal, columns=d.columns)
    df = s.part(part)
    if d.limit is not None:  # a seeded sample of the part; without --out, the first 5 jobs are printed
        from llmad.data.splits import subsample

        df = subsample(df, d.limit, d.seed)
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
        for t, y in frame.head(d.limit or 5).itertuples(index=False):
            typer.echo(f"[{y}] {t}")
