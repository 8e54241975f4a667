"""The comparison's figures (PNG via matplotlib's Agg backend): ROC/PR curves and confusion matrices per dataset,
learning curves of swept label budgets, early-detection curves of replays, t-SNE and attention of SFT runs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from llmad.harness.execute import RunStatus
from llmad.harness.recipe import LABELED_KEYS, Recipe


def slug(s: str) -> str:
    """A file-name-safe form of a label (letters, digits, - and _ kept; 80 characters at most)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(s))[:80]


def _plt():
    """pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def first_seed(statuses: list[RunStatus]) -> dict[tuple[str, str], RunStatus]:
    """Per (dataset, row): the finished run with the smallest seed (what curves show)."""
    out: dict[tuple[str, str], RunStatus] = {}
    for st in sorted(statuses, key=lambda s: s.spec.seed):
        if (st.run_dir / "metrics.json").is_file():
            out.setdefault((st.spec.dataset, st.spec.row), st)
    return out


def make_plots(recipe: Recipe, statuses: list[RunStatus], table: pd.DataFrame, plot_dir: Path) -> tuple[
        list[tuple[str, str]], list[str]]:
    """All PNGs; returns [(caption, path relative to the output folder)] and notes on plots skipped."""
    from sklearn import metrics as skm

    plt = _plt()
    plot_dir.mkdir(parents=True, exist_ok=True)
    figs: list[tuple[str, str]] = []
    notes: list[str] = []
    first = first_seed(statuses)
    h = recipe.report.headline

    def save(fig, name: str, caption: str) -> None:
        fig.tight_layout()
        fig.savefig(plot_dir / name, dpi=110)
        plt.close(fig)
        figs.append((caption, f"{plot_dir.name}/{name}"))

    for d in recipe.datasets:
        runs = [(row, st) for (ds, row), st in first.items() if ds == d.name]
        if not runs:
            continue
        ds_slug = slug(d.name)
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.5))
        for row, st in runs:
            p = pd.read_csv(st.run_dir / "predictions.csv", usecols=["label", "score"])
            y, s = p["label"].to_numpy(), p["score"].to_numpy()
            if 0 < y.sum() < len(y):
                fpr, tpr, _ = skm.roc_curve(y, s)
                a1.plot(fpr, tpr, label=f"{row} (AUC {skm.auc(fpr, tpr):.3f})")
                pr, rc, _ = skm.precision_recall_curve(y, s)
                a2.plot(rc, pr, label=f"{row} (AP {skm.average_precision_score(y, s):.3f})")
        a1.plot([0, 1], [0, 1], ":", color="grey")
        a1.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC: {d.name}")
        a2.set(xlabel="recall", ylabel="precision", title=f"precision-recall: {d.name}")
        for a in (a1, a2):
            a.legend(fontsize=7, loc="lower right" if a is a1 else "lower left")
        save(fig, f"roc_pr_{ds_slug}.png", f"ROC and precision-recall curves on {d.name} (first seed of each method)")

        n = len(runs)
        cols = min(4, n)
        fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(3.1 * cols, 2.9 * ((n + cols - 1) // cols)),
                                 squeeze=False)
        for ax, (row, st) in zip(axes.ravel(), runs):
            cm = json.loads((st.run_dir / "metrics.json").read_text()).get("confusion_matrix") or [[0, 0], [0, 0]]
            cm = np.asarray(cm)
            ax.imshow(cm, cmap="Blues")
            for (i, j), v in np.ndenumerate(cm):
                ax.text(j, i, str(v), ha="center", va="center", color="black" if v < cm.max() / 2 else "white",
                        fontsize=9)
            ax.set_xticks([0, 1], ["normal", "anomalous"], fontsize=7)
            ax.set_yticks([0, 1], ["normal", "anomalous"], fontsize=7)
            ax.set_xlabel("predicted", fontsize=7)
            ax.set_ylabel("true", fontsize=7)
            ax.set_title(row, fontsize=8)
        for ax in axes.ravel()[n:]:
            ax.axis("off")
        save(fig, f"confusion_{ds_slug}.png", f"Confusion matrices on {d.name} (test, validation threshold)")

    # Learning curves: rows of one method that differ only in a labeled-sample count.
    for m in recipe.methods:
        keys = [k for k in m.sweep if k in LABELED_KEYS]
        if not keys:
            continue
        k = keys[0]
        sub = table[(table["method"].str.startswith(m.name + " [")) & table.get(f"sweep_{k}").notna()] \
            if f"sweep_{k}" in table else table.iloc[:0]
        if sub.empty or f"{h}_mean" not in sub:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for ds, g in sub.groupby("dataset", sort=False):
            g = g.sort_values(f"sweep_{k}")
            x = g[f"sweep_{k}"].astype(float).to_numpy()
            yv = g[f"{h}_mean"].to_numpy(dtype=float)
            ax.plot(x, yv, marker="o", label=f"{ds}")
            lo, hi = g[f"{h}_ci_low"].to_numpy(dtype=float), g[f"{h}_ci_high"].to_numpy(dtype=float)
            ax.fill_between(x, lo, hi, alpha=0.2)
            for _, r in table[(table["dataset"] == ds) & table["strong_baseline"]].iterrows():
                ax.axhline(r[f"{h}_mean"], ls="--", lw=0.8, color="grey")
                ax.text(x.max(), r[f"{h}_mean"], f" {r['method']}", fontsize=7, va="bottom", ha="right")
        if (x > 0).all():
            ax.set_xscale("log")
        ax.set(xlabel=k.replace("_", " "), ylabel=f"test {h}", title=f"learning curve: {m.name}")
        ax.legend(fontsize=8)
        save(fig, f"learning_{slug(m.name)}.png", f"Learning curve of {m.name}: test {h} vs {k} "
                                                   f"(band: bootstrap CI; dashed: strong baselines)")

    replay = [st for st in first.values() if st.spec.kind == "replay"]
    for d in recipe.datasets:
        curves = [st for st in replay if st.spec.dataset == d.name and (st.run_dir / "early_detection.csv").is_file()]
        if not curves:
            continue
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for st in curves:
            c = pd.read_csv(st.run_dir / "early_detection.csv")
            line, = ax.plot(c["life_fraction"], c["caught_share"], label=f"{st.spec.row}: anomalous jobs alerted")
            ax.plot(c["life_fraction"], c["false_alert_share"], "--", color=line.get_color(), lw=0.9,
                    label=f"{st.spec.row}: normal jobs alerted")
        ax.set(xlabel="fraction of the job's lifetime elapsed", ylabel="share of jobs", xlim=(0, 1), ylim=(0, 1),
               title=f"early detection on {d.name} (test runs, first seed)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
        save(fig, f"early_{slug(d.name)}.png", f"Early-detection curves on {d.name}: share of jobs alerted by each "
                                                f"fraction of their lifetime (solid: anomalous, dashed: normal)")
    if not replay:
        notes.append("no early-detection curves: the recipe has no replay runs")

    sft = [st for st in first.values() if st.spec.kind == "sft"]
    if not sft:
        notes.append("no t-SNE or attention plot: the recipe has no SFT method")
    for st in sft:
        tag = f"{slug(st.spec.row)}_{slug(st.spec.dataset)}"
        ts = st.run_dir / "tsne.csv"
        if ts.is_file():
            t = pd.read_csv(ts)
            fig, ax = plt.subplots(figsize=(6.5, 5))
            for typ, g in t.groupby("anomaly_type", sort=True):
                normal = str(typ) == "normal"
                ax.scatter(g["x"], g["y"], s=8 if normal else 14, alpha=0.45 if normal else 0.85,
                           marker="o" if normal else "^", label=f"{typ} ({len(g)})",
                           color="lightgrey" if normal else None)
            ax.set(title=f"t-SNE of {st.spec.row} embeddings ({st.spec.dataset} test jobs)", xticks=[], yticks=[])
            ax.legend(fontsize=7, markerscale=1.5)
            save(fig, f"tsne_{tag}.png", f"t-SNE of mean-pooled {st.spec.row} embeddings of test jobs on "
                                         f"{st.spec.dataset}, by anomaly type")
        else:
            notes.append(f"no t-SNE for {st.spec.row} on {st.spec.dataset}: the run kept no embeddings")
        at = st.run_dir / "attention.json"
        if at.is_file():
            a = json.loads(at.read_text())
            att, toks = np.asarray(a["attention"]), a["tokens"]
            size = max(5.0, 0.22 * len(toks))
            fig, ax = plt.subplots(figsize=(size + 1.5, size))
            im = ax.imshow(att, cmap="viridis")
            ax.set_xticks(range(len(toks)), toks, rotation=90, fontsize=6)
            ax.set_yticks(range(len(toks)), toks, fontsize=6)
            fig.colorbar(im, ax=ax, fraction=0.04)
            ax.set_title(f"{st.spec.row}: last-layer attention (mean over heads), P(anomalous)={a['score']:.2f}",
                         fontsize=8)
            save(fig, f"attention_{tag}.png", f"Attention of {st.spec.row} on one anomalous test job "
                                              f"({a['job']}, label {a['label']})")
    return figs, notes

