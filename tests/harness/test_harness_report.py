"""`llmad compare` outputs: the table, published numbers, the bootstrap, plots and the CLI."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmad.errors import LlmadError
from llmad.harness import compare
from llmad.harness.recipe import load_recipe
from llmad.metrics.classification import bootstrap_replicates



def test_published_numbers_are_printed_beside_ours(toy_zip, tmp_path, toy_recipe):
    pub = [{"method": "rf-plain", "dataset": "toy", "accuracy": 0.8143, "f1": 0.7212, "source": "paper A"},
           {"method": "rf-plain", "dataset": "toy", "accuracy": 0.5, "source": "paper B"}]
    rec = toy_recipe(toy_zip, seeds=[0], report={"bootstrap": 50, "plots": False, "html": False, "published": pub})
    rec["methods"] = rec["methods"][:2]
    compare(rec, out=tmp_path / "o", quiet=True)
    md = (tmp_path / "o" / "results.md").read_text()
    assert "paper A: accuracy 0.8143, f1 0.7212; paper B: accuracy 0.5" in md
    with pytest.raises(LlmadError, match="published"):
        load_recipe(toy_recipe(toy_zip, report={"published": [{"method": "x", "dataset": "toy", "auc": 1}]}))


def test_vectorised_bootstrap_equals_the_foundation_ci():
    """The one bootstrap (counts, vectorised) gives the CI the sklearn-per-resample loop gave (the table's CIs)."""
    from sklearn import metrics as skm

    from llmad.metrics.classification import bootstrap_ci

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 300)
    p = np.where(rng.random(300) < 0.8, y, 1 - y)
    fns = {"f1": lambda a, b: skm.f1_score(a, b, zero_division=0), "accuracy": skm.accuracy_score,
           "precision": lambda a, b: skm.precision_score(a, b, zero_division=0),
           "recall": lambda a, b: skm.recall_score(a, b, zero_division=0)}
    for metric, fn in fns.items():
        reps = bootstrap_replicates(y, p, metric, n_boot=200, seed=4)
        draws = np.random.default_rng(4)
        loop = [fn(y[i], p[i]) for i in (draws.integers(0, len(y), len(y)) for _ in range(200))]
        assert reps == pytest.approx(loop)
        lo, hi = bootstrap_ci(y, p, metric, n_boot=200, seed=4)
        assert np.quantile(loop, 0.025) == pytest.approx(lo) and np.quantile(loop, 0.975) == pytest.approx(hi)


def test_cli_compare_with_set_and_outputs(toy_zip, tmp_path, toy_recipe):
    import yaml

    from llmad.cli import main

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(toy_recipe(toy_zip, seeds=[0])))
    main(["compare", str(path), "--out", str(tmp_path / "o"), "--quiet", "--set", "report.plots=true",
          "--set", "methods.knn-plain.sweep.train_limit=[20,40,80]"])
    assert len(pd.read_csv(tmp_path / "o" / "results.csv")) == 5
    pngs = sorted(p.name for p in (tmp_path / "o" / "plots").glob("*.png"))
    assert pngs == ["confusion_toy.png", "learning_knn-plain.png", "roc_pr_toy.png"]
    assert all((tmp_path / "o" / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    with pytest.raises(SystemExit) as e:
        main(["compare", str(path), "--set", "methods.rf-plain.config.trees=3"])
    assert e.value.code == 2


def test_markup_in_names_and_notes_renders_as_text(toy_zip, tmp_path, toy_recipe):
    import re
    from html.parser import HTMLParser

    evil = "rf|<script>alert(1)</script>"
    rec = toy_recipe(toy_zip, seeds=[0], description="a note | <script>alert(1)</script>",
                     report={"bootstrap": 20, "plots": False, "html": True,
                             "published": [{"method": evil, "dataset": "toy", "f1": 0.5,
                                            "source": "paper | <script>alert(1)</script>"}]})
    rec["methods"] = [{**rec["methods"][0], "name": evil}, rec["methods"][1]]
    rep = compare(rec, out=tmp_path / "o", quiet=True)
    page = rep["paths"]["report_html"].read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page

    class Table(HTMLParser):
        def __init__(self):
            super().__init__()
            self.on, self.cell, self.rows = False, None, []

        def handle_starttag(self, tag, attrs):
            if tag == "table":
                self.on = ("id", "results") in attrs
            elif self.on and tag == "tr":
                self.rows.append([])
            elif self.on and tag in ("td", "th"):
                self.cell = ""

        def handle_endtag(self, tag):
            if tag == "table":
                self.on = False
            elif self.on and tag in ("td", "th") and self.cell is not None:
                self.rows[-1].append(self.cell)
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell += data

    t = Table()
    t.feed(page)
    head, body = t.rows[0], t.rows[1:]
    assert len(body) == 2 and all(len(r) == len(head) for r in body)
    row = body[0]
    assert row[head.index("method")] == evil and "paper | <script>alert(1)</script>" in row[head.index("published")]

    # Markdown: the "|" is escaped, so the row keeps its columns (results.md and the report's results table).
    n_head = len(re.split(r"(?<!\\)\|", (tmp_path / "o" / "results.md").read_text().splitlines()[0])) - 2
    for name in ("results.md", "report.md"):
        rows = [ln for ln in (tmp_path / "o" / name).read_text().splitlines() if ln.startswith("| toy |")][:2]
        cells = [re.split(r"(?<!\\)\|", ln)[1:-1] for ln in rows]
        assert cells[0][1].strip().strip("*") == r"rf\|&lt;script>alert(1)&lt;/script>"
        assert all(len(c) == n_head for c in cells)


def test_cot_rationales_are_shown_in_the_report(tmp_path):
    """An ICL cot run's rationales (its predictions' ``rationale`` column) reach report.md and report.html,
    escaped; runs without the column add nothing."""
    from types import SimpleNamespace

    from llmad.harness.execute import RunStatus
    from llmad.harness.report import rationale_examples, render_html, render_markdown

    def run(name, row, frame):
        d = tmp_path / name
        d.mkdir()
        frame.to_csv(d / "predictions.csv", index=False)
        return RunStatus(SimpleNamespace(dataset="toy", row=row, seed=0), "done", d)

    cot = pd.DataFrame({"key": ["a", "b", "c"], "label": [0, 1, 0], "score": [0.0, 1.0, 0.0],
                        "prediction": [0, 1, 0], "answer": ["Normal", "Abnormal", "Normal"],
                        "answer_source": ["forced", "generated", "forced"], "p_abnormal": [0.2, 0.9, 0.1],
                        "rationale": ["runtime is 1.0x |usual|\nfine", "runtime <b>9x</b>. Answer: Abnormal", ""]})
    plain = cot[["key", "label", "score", "prediction"]]
    statuses = [run("cot", "icl-cot", cot), run("plain", "rf", plain)]
    ex = rationale_examples(statuses, per_run=2)
    assert [(e["method"], e["job"], e["label"]) for e in ex] == [("icl-cot", "b", 1), ("icl-cot", "a", 0)]
    assert ex[0]["answer"] == "Abnormal (generated)" and ex[1]["rationale"] == "runtime is 1.0x |usual| fine"
    recipe = SimpleNamespace(name="toy", description="d")
    md = render_markdown(recipe, "", [], [], [], [], [], [], {}, ex)
    assert "## Chain-of-thought rationales" in md and r"runtime is 1.0x \|usual\| fine" in md
    assert "&lt;b>9x&lt;/b>" in md
    assert "Chain-of-thought" not in render_markdown(recipe, "", [], [], [], [], [], [], {}, [])
    table = pd.DataFrame(columns=["dataset", "method", "strong_baseline"])
    recipe.report = SimpleNamespace(headline="f1", ci=0.95)
    page = render_html(recipe, table, [], [], [], [], [], {}, tmp_path, ex)
    assert 'id="rationales"' in page and "<b>9x</b>" not in page and "&lt;b&gt;9x&lt;/b&gt;" in page
    assert 'id="rationales"' not in render_html(recipe, table, [], [], [], [], [], {}, tmp_path, [])
