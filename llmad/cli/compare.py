"""`llmad compare RECIPE.yaml [--out DIR] [--resume] [--set key=value ...]`: run every method of a recipe on every
dataset (finished runs come from the cache) and write results.{md,csv,json}, plots/ and report.{md,html}.
"""
from __future__ import annotations

from typing import List, Optional

import typer

from llmad.cli.apps import app
from llmad.cli.options import LlmadCommand, config_options
from llmad.rundir import RunOptions


@app.command(cls=LlmadCommand)
@config_options(RunOptions, into="common",
                helps={"out": "(compare: default runs/compare/NAME; an earlier comparison there is its cache)"})
def compare(
    recipe: str = typer.Argument(..., help="recipe YAML, e.g. recipes/quickstart.yaml"),
    common: dict = None,
    resume: bool = typer.Option(False, "--resume",
                                help="continue interrupted runs from their checkpoints (finished runs are always "
                                     "reused)"),
    set_: Optional[List[str]] = typer.Option(None, "--set", "-s",
                                             help="override a recipe key (wins over the file), e.g. "
                                                  "--set seeds=[0,1] --set methods.rf-plain.config.n_estimators=50 "
                                                  "--set datasets.1000genome.limit=2000"),
) -> None:
    """Compare methods x datasets from a recipe; cached runs, a results table, plots and a report."""
    from llmad.harness import compare as run_compare

    from llmad.config import merge

    r = merge(RunOptions(), common)
    rep = run_compare(recipe, out=r.out, resume=resume, overrides=set_ or [], quiet=r.quiet, force=r.force)
    typer.echo(rep["paths"]["results_md"].read_text())
    st = rep["status"]
    n = {k: sum(1 for s in st if s["status"] == k) for k in ("done", "cached", "failed", "refused")}
    typer.echo(f"{n['done']} runs ran, {n['cached']} from cache, {n['failed']} failed, {n['refused']} refused "
               f"in {rep['total_seconds']:.1f} s; report: {rep['paths']['report_md']}"
               + (f" and {rep['paths']['report_html']}" if "report_html" in rep["paths"] else ""))
    for s in st:  # the reason of each failure, also with --quiet (the report has them too)
        if s["status"] in ("failed", "refused"):
            typer.echo(f"[{s['status']}] {s['method']} on {s['dataset']} seed {s['seed']}: "
                       f"{s['message'] or 'no message'}", err=True)
    if n["failed"] or n["refused"]:
        raise typer.Exit(1)
