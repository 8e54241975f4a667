"""Aggregation: one table row per method x dataset (x sweep point) with mean and sd over seeds and a bootstrap CI
of the headline metric, and that table as Markdown."""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from llmad.errors import LlmadError
from llmad.harness.execute import RunStatus
from llmad.harness.plan import is_strong
from llmad.harness.recipe import TABLE_METRICS, Recipe
from llmad.metrics.classification import bootstrap_replicates


def mean_ci(preds: list[pd.DataFrame], metric: str, n_boot: int, ci: float, seed: int = 0) -> tuple[float, float]:
    """Percentile CI of the across-seed mean: each seed's test rows are resampled independently."""
    reps = [bootstrap_replicates(p["label"].to_numpy(), p["prediction"].to_numpy(), metric, n_boot, seed + i)
            for i, p in enumerate(preds)]
    mean = np.mean(reps, axis=0)
    alpha = 1 - ci
    return float(np.quantile(mean, alpha / 2)), float(np.quantile(mean, 1 - alpha / 2))


def fmt(x: Any, nd: int = 3) -> str:
    """A table number with ``nd`` decimals; a dash when missing or not finite."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{nd}f}"


def aggregate(recipe: Recipe, statuses: list[RunStatus]) -> pd.DataFrame:
    """One row per method x dataset (x sweep point): mean and std over seeds, bootstrap CI of the headline."""
    groups: dict[tuple[str, str], list[RunStatus]] = {}
    order: list[tuple[str, str]] = []
    for st in statuses:
        key = (st.spec.dataset, st.spec.row)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(st)
    ds_order = [d.name for d in recipe.datasets]
    m_order = [m.name for m in recipe.methods]
    order.sort(key=lambda k: (ds_order.index(k[0]), m_order.index(groups[k][0].spec.method),
                              json.dumps(groups[k][0].spec.sweep, sort_keys=True, default=str)))
    h = recipe.report.headline
    rows = []
    for key in order:
        sts = sorted(groups[key], key=lambda s: s.spec.seed)
        spec = sts[0].spec
        ok = [s for s in sts if (s.run_dir / "metrics.json").is_file()]
        row: dict[str, Any] = {"dataset": spec.dataset, "method": spec.row, "kind": spec.kind,
                               "strong_baseline": is_strong(spec.kind, spec.config),
                               "split": spec.data.get("split"), "seeds": len(ok), "seeds_planned": len(sts)}
        for k, v in spec.sweep.items():
            row[f"sweep_{k}"] = v
        if not ok:
            row["status"] = ",".join(sorted({s.status for s in sts}))
            rows.append(row)
            continue
        mets = [json.loads((s.run_dir / "metrics.json").read_text()) for s in ok]
        row["status"] = "ok" if len(ok) == len(sts) else f"{len(sts) - len(ok)} of {len(sts)} seeds missing"
        row["n_test"] = int(np.mean([m.get("n", 0) for m in mets]))
        for k in TABLE_METRICS:
            vals = [m.get(k) for m in mets]
            vals = [float(v) for v in vals if v is not None and math.isfinite(float(v))]
            row[f"{k}_mean"] = float(np.mean(vals)) if vals else float("nan")
            row[f"{k}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")
        preds = [pd.read_csv(s.run_dir / "predictions.csv", usecols=["label", "prediction"]) for s in ok]
        lo, hi = mean_ci(preds, h, recipe.report.bootstrap, recipe.report.ci)
        row[f"{h}_ci_low"], row[f"{h}_ci_high"] = lo, hi
        row["fit_seconds"] = float(np.mean([m.get("fit_seconds") or 0.0 for m in mets]))
        row["wall_seconds"] = float(np.mean([m.get("wall_seconds") or 0.0 for m in mets]))
        row["score_ms_per_item"] = float(np.mean([m.get("score_ms_per_item") or 0.0 for m in mets]))
        rows.append(row)
    for pub in recipe.report.published:
        unknown = sorted(set(pub) - {"method", "dataset", "source", *TABLE_METRICS})
        if unknown or "method" not in pub or "dataset" not in pub:
            raise LlmadError(f"report.published entry {pub}: needs method, dataset, source and metric values "
                             f"({', '.join(TABLE_METRICS)}); unknown keys {unknown}")
        text = ", ".join(f"{k} {pub[k]:.4g}" for k in TABLE_METRICS if isinstance(pub.get(k), (int, float)))
        text = f"{pub.get('source', 'published')}: {text}"
        for r in rows:
            if r["method"] == pub["method"] and r["dataset"] == pub["dataset"]:
                r["published"] = f"{r['published']}; {text}" if r.get("published") else text
    return pd.DataFrame(rows)


def table_cells(recipe: Recipe, table: pd.DataFrame) -> tuple[list[str], list[list[str]], list[bool]]:
    """The shown results table: column heads, one list of text cells per row, and which rows are strong baselines
    (Markdown and HTML both render these cells)."""
    h = recipe.report.headline
    pct = int(round(recipe.report.ci * 100))
    has_pub = "published" in table.columns
    head = ["dataset", "method", "split", "seeds", "test n", f"{h} (mean ± sd)", f"{h} {pct}% CI", "accuracy",
            "ROC-AUC", "PR-AUC", "fit s"]
    if has_pub:
        head.append("published")
    rows, strong = [], []
    for _, r in table.iterrows():
        if r.get("status") not in ("ok",) and not r.get("seeds"):
            cells = [r["dataset"], r["method"], str(r.get("split")), f"0/{r['seeds_planned']}", "–", r["status"],
                     *["–"] * 5]
        else:
            sd = r.get(f"{h}_std")
            hv = fmt(r.get(f"{h}_mean")) + (f" ± {fmt(sd)}" if sd is not None and math.isfinite(sd) else "")
            cells = [r["dataset"], r["method"], str(r.get("split")), f"{r['seeds']}/{r['seeds_planned']}",
                     str(int(r["n_test"])), hv, f"[{fmt(r.get(f'{h}_ci_low'))}, {fmt(r.get(f'{h}_ci_high'))}]",
                     fmt(r.get("accuracy_mean")), fmt(r.get("roc_auc_mean")), fmt(r.get("pr_auc_mean")),
                     fmt(r.get("fit_seconds"), 1)]
        if has_pub:
            cells.append(r["published"] if isinstance(r.get("published"), str) else "")
        rows.append([str(c) for c in cells])
        strong.append(bool(r.get("strong_baseline")))
    return head, rows, strong


def md_cell(text: Any) -> str:
    """Text safe inside a Markdown table cell: a ``|`` cannot end the cell, a ``<`` cannot open an HTML tag."""
    return str(text).replace("|", "\\|").replace("<", "&lt;")


def table_markdown(recipe: Recipe, table: pd.DataFrame) -> str:
    """The results table as Markdown (mean ± std over seeds, CI of the headline; strong baselines in bold)."""
    head, rows, strong = table_cells(recipe, table)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for cells, bold in zip(rows, strong):
        cells = [md_cell(c) for c in cells]
        if bold:
            cells[1] = f"**{cells[1]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
