"""`llmad compare` end to end on real data, the HTML report checked in headless Chromium."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmad.harness import compare

ROOT = Path(__file__).resolve().parents[2]



def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    pytest.fail("headless Chromium is required for the report test (Debian: apt-get install chromium; "
                ".ci/run installs it)")


def _render_in_chromium(report: Path, tmp_path: Path) -> dict:
    """Load the report in headless Chromium; a script added to a copy reports what the page shows."""
    probe = """<script>window.addEventListener('load', () => {
      const t = document.querySelector('table#results');
      const imgs = [...document.images].map(i => ({w: i.naturalWidth, h: i.naturalHeight, ok: i.complete}));
      const out = {rows: t ? t.tBodies[0].rows.length : -1,
                   headers: t ? [...t.tHead.rows[0].cells].map(c => c.textContent) : [],
                   visible: t ? t.getBoundingClientRect().height > 0 : false, images: imgs};
      const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
      document.body.appendChild(pre);});</script>"""
    page = tmp_path / "probe.html"
    page.write_text(report.read_text().replace("</body>", probe + "</body>"))
    res = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    from html.parser import HTMLParser

    class Grab(HTMLParser):
        text, on = "", False

        def handle_starttag(self, tag, attrs):
            self.on = tag == "pre" and ("id", "probe") in attrs

        def handle_data(self, data):
            if self.on:
                self.text += data

    g = Grab()
    g.feed(res.stdout)
    assert g.text, f"chromium rendered nothing: {res.stderr[-500:]}"
    return json.loads(g.text)


@pytest.mark.integration
def test_ci_tiny_recipe_end_to_end_on_real_data(real_data_dir, tmp_path):
    out = tmp_path / "ci"
    rep = compare(ROOT / "recipes" / "ci_tiny.yaml", out=out, quiet=True)
    bad = [s for s in rep["status"] if s["status"] != "done"]
    assert not bad, bad
    table = pd.read_csv(out / "results.csv")
    assert set(table["kind"]) == {"baseline", "sft", "fusion", "icl", "replay"}
    runs = {json.loads((d / "run.json").read_text())["method"]: d for d in (out / "runs").iterdir()}
    stack = json.loads((runs["stack-minilm"] / "metrics.json").read_text())
    assert stack["tree"] in ("rf-plain", "rf-context", "hgb-plain", "hgb-context") and 0 <= stack["lm_only_f1"] <= 1
    assert (runs["stack-minilm"] / "fusion" / "model" / "lm" / "detector.json").is_file()
    assert set(table.loc[table["kind"] == "replay", "method"]) == {"replay-sft", "replay-stack"}
    assert table["f1_mean"].between(0, 1).all() and table["n_test"].gt(0).all()
    assert json.loads((out / "results.json").read_text())["rows"][0]["dataset"] == "eht_imaging"
    md = (out / "report.md").read_text()
    for name in ("roc_pr_eht_imaging.png", "confusion_eht_imaging.png", "early_eht_imaging.png",
                 "tsne_sft-minilm_eht_imaging.png", "attention_sft-minilm_eht_imaging.png"):
        assert (out / "plots" / name).read_bytes()[:4] == b"\x89PNG" and f"plots/{name}" in md
    sft_dir = next(d for d in (out / "runs").iterdir() if json.loads((d / "run.json").read_text())["kind"] == "sft")
    att = json.loads((sft_dir / "attention.json").read_text())
    assert np.allclose(np.asarray(att["attention"]).sum(1), 1.0, atol=1e-3)  # rows of a softmax
    shown = _render_in_chromium(out / "report.html", tmp_path)
    assert shown["rows"] == len(table) and shown["visible"] and "method" in shown["headers"]
    assert len(shown["images"]) == 5 and all(i["ok"] and i["w"] > 100 and i["h"] > 100 for i in shown["images"])
    # Everything cached: a rerun only re-aggregates and gives the same table.
    before = (out / "results.csv").read_bytes()
    again = compare(ROOT / "recipes" / "ci_tiny.yaml", out=out, quiet=True)
    assert {s["status"] for s in again["status"]} == {"cached"} and (out / "results.csv").read_bytes() == before
