"""`llmad data info|fetch|list`: describe and obtain datasets."""
from __future__ import annotations

import json
from typing import Any, Optional

import typer

from llmad.cli.apps import data_app
from llmad.cli.options import LlmadCommand

DataDir = typer.Option(None, "--data-dir",
                       help="Data folder (default: $LLMAD_DATA_DIR, ./data, the checkout's data/, ../shared/data).")


@data_app.command("info", cls=LlmadCommand)
def info(dataset: Optional[str] = typer.Argument(None, help="Dataset spec (the same as --data), e.g. "
                                                              "flowbench:1000genome", show_default=False),
         data: Optional[str] = typer.Option(None, "--data", "-d", help="Dataset spec, e.g. flowbench:1000genome"),
         data_dir: Optional[str] = DataDir,
         as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Runs, jobs, label and anomaly-type counts, features of a dataset."""
    from llmad.data import load_jobs
    from llmad.data.flowbench import summarize
    from llmad.errors import LlmadError

    if dataset and data and dataset != data:
        raise LlmadError(f"two datasets given ({dataset} and --data {data}); give one")
    spec = data or dataset
    if not spec:
        raise LlmadError("which dataset? e.g. llmad data info --data flowbench:1000genome "
                         "(`llmad data list` shows the workflows)")

    jobs, counts = load_counting_warnings(spec, data_dir, load_jobs)
    s = {**summarize(jobs), "warnings": counts}
    if as_json:
        typer.echo(json.dumps(s, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    c = Console()
    c.print(f"[bold]{spec}[/]: {s['runs']:,} runs ({s['anomalous_runs']:,} with anomalies), {s['jobs']:,} jobs, "
            f"{s['hosts']} hosts, {s['transformations']} transformations")
    t = Table("anomaly type", "jobs", "share", title="jobs by anomaly type")
    for k, v in s["anomaly_types"].items():
        t.add_row(k, f"{v:,}", f"{v / max(s['jobs'], 1):.1%}")
    c.print(t)
    names = {"0": "normal", "1": "anomalous"}
    t = Table("label", "jobs", "share", title="jobs by label")
    for k, v in s["labels"].items():
        t.add_row(f"{k} ({names.get(k, '?')})", f"{v:,}", f"{v / max(s['jobs'], 1):.1%}")
    c.print(t)
    c.print(f"numeric features ({len(s['numeric_features'])}): {', '.join(s['numeric_features'])}")
    counts = ", ".join(f"{k} {v}" for k, v in s["warnings"].items())
    c.print(f"warnings: {counts or 'none'}")


def load_counting_warnings(spec: str, data_dir: str | None, load) -> tuple[Any, dict[str, int]]:
    """``load(spec, data_dir)`` and the count of each named warning it issued (shown as usual)."""
    import warnings
    from collections import Counter

    from llmad.errors import LlmadWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default", LlmadWarning)
        jobs = load(spec, data_dir)
    named = [w for w in caught if isinstance(w.message, LlmadWarning)]
    for w in caught:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return jobs, dict(Counter(w.message.name for w in named))


@data_app.command("list", cls=LlmadCommand)
def list_(data_dir: Optional[str] = DataDir) -> None:
    """Workflows available in the data folder."""
    from llmad.data.flowbench import available_workflows

    for w in available_workflows(data_dir):
        typer.echo(w)


@data_app.command("fetch", cls=LlmadCommand)
def fetch(target: str = typer.Argument("flowbench", help="flowbench or flowbench:<workflow>"),
          data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Where to put data (default ./data)."),
          manifest: Optional[str] = typer.Option(None, help="Manifest JSON (default data/manifest.json)."),
          base_url: Optional[str] = typer.Option(None, help="Override the manifest's base URL (mirrors, tests)."),
          timeout: float = typer.Option(10.0, help="Seconds before a silent connection counts as offline.")) -> None:
    """Download official Flow-Bench archives, verify checksums, resume partial downloads."""
    from llmad.data.fetch import fetch_flowbench

    for path in fetch_flowbench(target, data_dir=data_dir, manifest=manifest, base_url=base_url, timeout=timeout):
        typer.echo(str(path))
