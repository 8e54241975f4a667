"""A recipe with ``method: nll``: the harness runs it through ``llmad.api.nll`` with the leakage guard told what it
learned from (train rows with labels unused; validation rows for a label-free threshold)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parents[1]))
from nll_fixtures import tiny_nll_lm  # noqa: E402

from llmad.harness import compare  # noqa: E402


def test_nll_method_in_a_recipe(toy_zip, tmp_path):
    lm = tiny_nll_lm(tmp_path / "tiny")
    rec = {"name": "toy", "seeds": [0], "datasets": [{"name": "toy", "spec": str(toy_zip)}],
           "methods": [{"method": "nll", "config": {"model": str(lm), "fields": "paper", "epochs": 1,
                                                    "permutations": 1, "lora_r": 0, "threshold_rows": 16,
                                                    "threshold": "contamination:0.1"}}],
           "report": {"bootstrap": 50, "plots": False, "html": False}}
    res = compare(rec, out=tmp_path / "out", quiet=True)
    assert {s["status"] for s in res["status"]} == {"done"}  # nll + the strong baselines the harness adds
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert "nll-tiny" in table["method"].tolist()
    run = next(d for d in (tmp_path / "out" / "runs").iterdir()
               if json.loads((d / "run.json").read_text())["kind"] == "nll")
    guard = json.loads((run / "provenance.json").read_text())["leakage_guard"]["checked"]
    assert any("labels unused" in k for k in guard)
    m = json.loads((run / "metrics.json").read_text())
    assert m["threshold_rule"].startswith("contamination:0.1") and m["supervision"] == "none"
