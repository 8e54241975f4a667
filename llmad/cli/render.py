"""`llmad render SPEC --template NAME|PATH`: job sentences as a ``text,label`` CSV."""
from __future__ import annotations

from typing import Optional

import typer

from llmad.cli import app


@app.command()
def render(spec: str = typer.Argument(..., help="Dataset spec, e.g. flowbench:1000genome"),
           template: str = typer.Option("paper", "--template", "-t", help="paper | compact | context | a .j2 path"),
           split: str = typer.Option("run", help="run | paper (the paper's job-level split) | workflow"),
           part: str = typer.Option("test", help="train | validation | test"),
           seed: int = typer.Option(0),
           causal: bool = typer.Option(False, help="Context from earlier-finished peers only."),
           test_workflow: Optional[str] = typer.Option(None, help="For --split workflow."),
           data_dir: Optional[str] = typer.Option(None, "--data-dir"),
           out: Optional[str] = typer.Option(None, "--out", "-o", help="CSV to write (else print examples)."),
           n: int = typer.Option(5, help="Examples to print without --out.")) -> None:
    """Render jobs with a template; with --split paper --template paper this reproduces the published sentences."""
    import pandas as pd

    from llmad.data import load_split
    from llmad.render import get_template, render_jobs

    get_template(template, "job")  # fail on a bad template before loading data
    s = load_split(spec, split=split, seed=seed, data_dir=data_dir, test_workflow=test_workflow,
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
