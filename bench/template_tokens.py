"""Tokens per job for each job template under the MiniLM (BERT WordPiece) tokenizer, on all 1000genome jobs.

Run: .venv/bin/python bench/template_tokens.py  -> bench/results/template_tokens.md
"""
from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from llmad.data.context import add_context_features
from llmad.data.flowbench import load_jobs
from llmad.io import atomic_write_text
from llmad.models.resolve import resolve_model
from llmad.render import render_jobs, token_counts


def main(workflow: str = "1000genome") -> None:
    """Measure and write the table."""
    jobs = add_context_features(load_jobs(f"flowbench:{workflow}"))
    tok = AutoTokenizer.from_pretrained(resolve_model("minilm").location)
    lines = [f"# Tokens per job on {workflow} ({len(jobs):,} jobs, MiniLM WordPiece, [CLS]/[SEP] included)", "",
             "| template | mean | p95 | max | example |", "|---|---|---|---|---|"]
    for name in ("paper", "compact", "context"):
        texts = render_jobs(jobs, name)
        n = token_counts(texts, tok)
        lines.append(f"| {name} | {n.mean():.1f} | {int(sorted(n)[int(0.95 * len(n))])} | {n.max()} | `{texts[1]}` |")
    out = Path(__file__).parent / "results" / "template_tokens.md"
    atomic_write_text(out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
