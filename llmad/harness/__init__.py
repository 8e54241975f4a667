"""The comparison harness behind ``llmad compare RECIPE.yaml``: recipes -> runs (cached by config hash) -> tables,
plots and a report.

    recipe.py  ──plan.py──> RunSpec per (method x dataset x sweep point x seed) ──hash──> <out>/runs/<hash>/
          ──adapters.py (a guard declaration + one llmad.api call per method kind)──> RunResult
          ──guard.py (what the adapter says it used vs the test part)──> metrics.json (written last = done)
          ──aggregate.py──> results.{md,csv,json}  ──plots.py──> plots/*.png  ──report.py──> report.{md,html}

``execute.py`` runs the plan (``context.py``: what an adapter gets; ``sft_extras.py``: t-SNE and attention of SFT
runs); ``compare.py`` ties it together. A run folder with ``metrics.json`` is finished and is never recomputed; a
rerun only re-aggregates. A run that fails is recorded (``error.json``) and the others continue. ``--resume``
continues interrupted runs from their own checkpoints (SFT); without it a half-written run folder is cleared and
started again.
"""
from llmad.api.result import RunResult
from llmad.harness.adapters import (ADAPTERS, adapter_baseline, adapter_icl, adapter_numeric, adapter_replay,
                                    adapter_sft)
from llmad.harness.aggregate import aggregate, table_markdown
from llmad.harness.compare import compare
from llmad.harness.context import RunContext
from llmad.harness.execute import RunStatus, execute
from llmad.harness.guard import LeakageError, LeakageGuard, job_keys
from llmad.harness.plan import HARNESS_VERSION, RunSpec, add_strong_baselines, plan
from llmad.harness.recipe import DatasetEntry, MethodEntry, Recipe, ReportConfig, config_class, load_recipe
from llmad.harness.report import write_report

__all__ = ["Recipe", "DatasetEntry", "MethodEntry", "ReportConfig", "RunSpec", "RunResult", "RunContext",
           "RunStatus", "LeakageGuard", "LeakageError", "load_recipe", "config_class", "plan", "execute",
           "aggregate", "table_markdown", "write_report", "compare", "ADAPTERS", "adapter_baseline", "adapter_sft",
           "adapter_icl", "adapter_numeric", "adapter_replay", "job_keys", "add_strong_baselines", "HARNESS_VERSION"]
