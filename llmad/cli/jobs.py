"""`llmad data import TABLE --columns map.yaml`: check your own job table before using it as `jobs:TABLE`."""
from __future__ import annotations

import json
from typing import Optional

import typer

from llmad.cli.apps import data_app
from llmad.cli.options import LlmadCommand
from llmad.config import DataConfig, field_help


@data_app.command("import", cls=LlmadCommand)
def import_(path: str = typer.Argument(..., help="job table: CSV, CSV.gz, Parquet, or a folder of them"),
            columns: Optional[str] = typer.Option(None, "--columns", help=field_help(DataConfig, "columns")),
            infer: bool = typer.Option(False, "--infer",
                                       help="write the inferred column map to <table>.llmad.yaml (or --map-out) "
                                            "for you to edit"),
            map_out: Optional[str] = typer.Option(None, "--map-out", help="where --infer writes the map"),
            force: bool = typer.Option(False, "--force", help="--infer: overwrite an existing map file"),
            out: Optional[str] = typer.Option(None, "--out", "-o", help="also write the report as JSON to this file"),
            as_json: bool = typer.Option(False, "--json", help="print the report as JSON")) -> None:
    """Check a job table through its column map: rows, runs, label rate, per-column type and missing rate."""
    from pathlib import Path

    from llmad.data.jobs import infer_column_map, map_yaml, read_table, sidecar_path, table_report
    from llmad.errors import LlmadError
    from llmad.io import atomic_write_text
    from llmad.rundir import check_out

    for flag, given in (("--out", out), ("--map-out", map_out)):  # before any work: one line, exit 2
        if given:
            check_out(given, kind="file", flag=flag)
    if infer:
        if columns:
            raise LlmadError("--infer writes a new map; drop --columns (or edit that map instead)")
        target = Path(map_out) if map_out else sidecar_path(path)
        if target.exists() and not force:
            raise LlmadError(f"file {target}: exists; edit it, or pass --force to overwrite it")
        atomic_write_text(target, "# llmad column map (inferred; edit me). Keys: run, job, label, anomaly_type, "
                                  "host, type, timestamps, features\n" + map_yaml(infer_column_map(read_table(path))))
        typer.echo(f"wrote the inferred column map to {target}", err=True)
        columns = str(target)
    rep = table_report(path, columns)
    if out:
        from llmad.io import write_json

        write_json(out, rep)
    if as_json:
        typer.echo(json.dumps(rep, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    c = Console()
    runs = f"{rep['runs']:,} runs" if rep["runs"] is not None else "no run ids"
    rate = f"label rate {rep['label_rate']:.4f}" if rep["label_rate"] is not None else "no labels"
    typer.echo(f"{path}: {rep['rows']:,} rows, {runs}, {rate}; splits by {rep['split_unit']}; "
               f"map: {rep['map_source']}")
    t = Table("column", "type", "missing", "role")
    for col in rep["columns"]:
        t.add_row(col["column"], col["dtype"], f"{col['missing_rate']:.1%}", col["role"])
    c.print(t)
    typer.echo(f"features ({len(rep['features'])}): {', '.join(rep['features'])}")
    spec = f"jobs:{path}" + (f" --columns {columns}" if columns and Path(columns) != sidecar_path(path) else "")
    typer.echo(f"use it as: --data {spec}")
