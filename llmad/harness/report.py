"""The written results: results.{md,csv,json}, status.json, plots/ and report.{md,html}. The HTML report is the
Jinja template ``report.html.j2`` next to this module (autoescaped) with the tables from ``DataFrame.to_html``."""
from __future__ import annotations

import base64
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from llmad.harness.aggregate import aggregate, md_cell, table_cells, table_markdown
from llmad.harness.execute import RunStatus
from llmad.harness.plots import make_plots
from llmad.harness.recipe import Recipe
from llmad.io import atomic_write_text, provenance, write_frame_csv, write_json

RUNS_HEAD = ["dataset", "method", "seed", "status", "wall s", "folder"]
RATIONALE_HEAD = ["dataset", "method", "seed", "job", "label", "answer", "rationale"]


def status_rows(statuses: list[RunStatus]) -> list[dict[str, Any]]:
    """One record per run of this invocation (status, hash, wall time, message), sorted for the report."""
    rows = []
    for st in sorted(statuses, key=lambda s: (s.spec.dataset, s.spec.row, s.spec.seed)):
        wall = st.seconds
        if st.status == "cached" and (st.run_dir / "metrics.json").is_file():
            wall = json.loads((st.run_dir / "metrics.json").read_text()).get("wall_seconds", 0.0)
        rows.append({"dataset": st.spec.dataset, "method": st.spec.row, "seed": st.spec.seed,
                     "status": st.status, "hash": st.spec.hash, "wall_seconds": round(float(wall or 0.0), 1),
                     "message": st.message})
    return rows


def write_report(recipe: Recipe, statuses: list[RunStatus], out: Path, added: list[str]) -> dict[str, Any]:
    """results.{md,csv,json}, plots and report.{md,html}; returns paths and the table."""
    table = aggregate(recipe, statuses)
    md_table = table_markdown(recipe, table)
    atomic_write_text(out / "results.md", md_table)
    write_frame_csv(out / "results.csv", table)
    write_json(out / "results.json", {"recipe": recipe.name, "headline": recipe.report.headline,
                                      "ci": recipe.report.ci, "bootstrap": recipe.report.bootstrap,
                                      "rows": table.to_dict(orient="records")})
    figs, notes = ([], ["plots disabled in the recipe"])
    if recipe.report.plots:
        figs, notes = make_plots(recipe, statuses, table, out / "plots")
    status = status_rows(statuses)
    write_json(out / "status.json", status)
    prov = provenance()
    h, pct = recipe.report.headline, int(round(recipe.report.ci * 100))
    counts = {k: sum(1 for s in status if s["status"] == k) for k in ("done", "cached", "failed", "refused")}
    limits = sorted({f"{s.spec.row}: {k} part limited to {v} {'runs' if s.spec.kind == 'replay' else 'rows'} "
                     f"(seeded)" for s in statuses for k, v in s.spec.limits.items() if v})
    limits += sorted({f"{d.name}: every part limited to {d.limit} rows (seeded)" for d in recipe.datasets if d.limit})
    limits += sorted({f"{s.spec.row}: train subsampled to {s.spec.config['train_limit']} rows (seeded)"
                      for s in statuses if s.spec.kind == "sft" and s.spec.config.get("train_limit")})
    about = [
        f"Rows: one per method x dataset; {h} is the mean over seeds (± sample sd when several seeds), "
        f"with a {pct}% percentile-bootstrap CI ({recipe.report.bootstrap} resamples of the test rows, each seed "
        f"resampled independently; for time series the points are resampled as if independent, so the CI is "
        f"optimistic there). Thresholds come from validation, never test.",
        "Strong baselines (bold) always run: " + (", ".join(sorted({r for r in table["method"]
                                                                      if table.loc[table['method'] == r,
                                                                                   'strong_baseline'].any()}))
                                                  or "none") + (f" (added by the harness: {', '.join(added)})"
                                                                if added else "") + ".",
        f"Runs in this invocation: {counts['done']} ran, {counts['cached']} from cache, {counts['failed']} failed, "
        f"{counts['refused']} refused by the leakage guard.",
    ]
    bad = [s for s in status if s["status"] in ("failed", "refused")]
    rationales = rationale_examples(statuses)
    report_md = render_markdown(recipe, md_table, about, limits, bad, figs, notes, status, prov, rationales)
    atomic_write_text(out / "report.md", report_md)
    paths = {"results_md": out / "results.md", "results_csv": out / "results.csv",
             "results_json": out / "results.json", "report_md": out / "report.md"}
    if recipe.report.html:
        atomic_write_text(out / "report.html", render_html(recipe, table, about + limits, bad, figs, notes,
                                                           status, prov, out, rationales))
        paths["report_html"] = out / "report.html"
    return {"table": table, "paths": paths, "figures": figs, "notes": notes, "status": status}


def rationale_examples(statuses: list[RunStatus], per_run: int = 4, width: int = 300) -> list[dict[str, Any]]:
    """A few chain-of-thought rationales of each finished run whose predictions have a ``rationale`` column (ICL
    ``mode: cot``): abnormal-labelled rows first, then normal ones, each cut to ``width`` characters."""
    out = []
    for st in sorted(statuses, key=lambda s: (s.spec.dataset, s.spec.row, s.spec.seed)):
        f = st.run_dir / "predictions.csv"
        if st.status not in ("done", "cached") or not f.is_file() or "rationale" not in pd.read_csv(f, nrows=0):
            continue
        pred = pd.read_csv(f, keep_default_na=False, dtype={"rationale": str, "answer": str})
        ab = pred[pred["label"] == 1].head((per_run + 1) // 2)
        for _, r in pd.concat([ab, pred[pred["label"] != 1].head(per_run - len(ab))]).iterrows():
            text = " ".join(str(r["rationale"]).split())
            out.append({"dataset": st.spec.dataset, "method": st.spec.row, "seed": st.spec.seed,
                        "job": str(r.get("key", r.get("job_id", ""))), "label": int(r["label"]),
                        "answer": f"{r.get('answer', '')} ({r.get('answer_source', '')})",
                        "rationale": text if len(text) <= width else text[:width - 3] + "..."})
    return out


def render_markdown(recipe: Recipe, md_table: str, about: list[str], limits: list[str], bad: list[dict],
                    figs: list[tuple[str, str]], notes: list[str], status: list[dict], prov: dict,
                    rationales: list[dict] | None = None) -> str:
    """report.md: the results table, what the rows mean, failures, plots, CoT rationales, runs and provenance."""
    md = [f"# {recipe.name}", "", recipe.description.strip(), "", "## Results", "", md_table,
          *[f"- {a}" for a in about]]
    if limits:
        md += ["", "Subsampling:", *[f"- {x}" for x in limits]]
    if bad:
        md += ["", "## Failed or refused runs", ""]
        md += [f"- {s['method']} on {s['dataset']} (seed {s['seed']}): **{s['status']}**: {s['message']}" for s in bad]
    md += ["", "## Plots", ""]
    for cap, path in figs:
        md += [f"### {cap}", "", f"![{cap}]({path})", ""]
    if notes:
        md += ["Not plotted:", *[f"- {n}" for n in notes], ""]
    if rationales:
        md += ["## Chain-of-thought rationales", "",
               "The model's own words before its answer (answer source: generated = it wrote `Answer: <label>`, "
               "forced = the label scored after an appended `Answer:`).", "",
               "| " + " | ".join(RATIONALE_HEAD) + " |", "|" + "|".join(["---"] * len(RATIONALE_HEAD)) + "|"]
        md += ["| " + " | ".join(md_cell(c) for c in cells) + " |" for cells in _rationale_cells(rationales)]
        md += [""]
    md += ["## Runs", "", "| dataset | method | seed | status | wall s | folder |", "|---|---|---|---|---|---|"]
    md += [f"| {md_cell(s['dataset'])} | {md_cell(s['method'])} | {s['seed']} | {s['status']} | "
           f"{s['wall_seconds']} | runs/{s['hash']} |" for s in status]
    md += ["", "## Provenance", "",
           f"git commit `{prov.get('git_commit')}`, python {prov.get('python')}, "
           + ", ".join(f"{k} {v}" for k, v in prov.get("versions", {}).items()) + ". Each run folder holds "
           "run.json (resolved config + hash), provenance.json (versions, template hashes, seed, wall time, peak "
           "memory, leakage-guard checks), metrics.json and predictions.csv.", ""]
    return "\n".join(md)


def _rationale_cells(rationales: list[dict[str, Any]]) -> list[list[str]]:
    return [[str(r[k]) for k in ("dataset", "method", "seed", "job", "label", "answer", "rationale")]
            for r in rationales]


def _runs_cells(status: list[dict[str, Any]]) -> list[list[str]]:
    return [[str(s["dataset"]), str(s["method"]), str(s["seed"]), str(s["status"]), str(s["wall_seconds"]),
             f"runs/{s['hash']}"] for s in status]


def render_html(recipe: Recipe, table: pd.DataFrame, about: list[str], bad: list[dict],
                figs: list[tuple[str, str]], notes: list[str], status: list[dict], prov: dict, out: Path,
                rationales: list[dict] | None = None) -> str:
    """A self-contained HTML report: escaped tables, the plots inlined as base64 PNG."""
    import jinja2
    from markupsafe import Markup

    head, rows, strong = table_cells(recipe, table)
    results = pd.DataFrame(rows, columns=head).to_html(escape=True, index=False, table_id="results", border=0)
    runs = pd.DataFrame(_runs_cells(status), columns=RUNS_HEAD).to_html(escape=True, index=False, table_id="runs",
                                                                         border=0)
    cot = (pd.DataFrame(_rationale_cells(rationales), columns=RATIONALE_HEAD).to_html(
        escape=True, index=False, table_id="rationales", border=0) if rationales else "")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    template = env.from_string(resources.files(__package__).joinpath("report.html.j2").read_text("utf-8"))
    return template.render(
        name=recipe.name, description=recipe.description.strip(), results_table=Markup(results),
        strong_rows=[i + 1 for i, s in enumerate(strong) if s], about=about, bad=bad,
        figures=[{"caption": cap, "data": base64.b64encode((out / path).read_bytes()).decode()} for cap, path in figs],
        notes=notes, rationales_table=Markup(cot), runs_table=Markup(runs), git_commit=str(prov.get("git_commit")),
        python=str(prov.get("python")),
        versions=", ".join(f"{k} {v}" for k, v in prov.get("versions", {}).items()))
