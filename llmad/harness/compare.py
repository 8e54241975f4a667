"""The entry point behind ``llmad compare``: recipe -> plan -> execute -> report."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable

from llmad.api.result import RunResult
from llmad.errors import LlmadError
from llmad.harness.context import RunContext
from llmad.harness.execute import execute
from llmad.harness.plan import add_strong_baselines, plan
from llmad.harness.plots import slug
from llmad.harness.recipe import load_recipe
from llmad.harness.report import write_report
from llmad.io import write_json
from llmad.interrupts import note_run


def compare(recipe_path: str | Path | dict[str, Any], out: str | Path | None = None, resume: bool = False,
            overrides: Iterable[str] | dict[str, Any] = (), quiet: bool = False,
            adapters: dict[str, Callable[[RunContext], RunResult]] | None = None, force: bool = False
            ) -> dict[str, Any]:
    """Load a recipe, run (or reuse) every run, write the results table, plots and report under ``out``.

    An ``out`` holding an earlier comparison is its cache (finished runs are reused); any other non-empty folder
    is refused before any work unless ``force``, which also clears an earlier comparison (start over).
    """
    from llmad.api.result import data_dir_used
    from llmad.rundir import check_out, write_run

    recipe = load_recipe(recipe_path, overrides)
    added = add_strong_baselines(recipe)
    specs = plan(recipe)
    if not specs:
        raise LlmadError("the recipe plans no runs (no method fits any dataset)")
    out = Path(out) if out else Path("runs") / "compare" / slug(recipe.name)
    check_out(out, force=force, reuse_ok=(out / "recipe.resolved.json").is_file() and not force)
    out.mkdir(parents=True, exist_ok=True)
    note_run(out, "the same command with --resume (finished runs are reused)", kept="finished runs")
    write_json(out / "recipe.resolved.json", {"recipe": recipe, "strong_baselines_added": added,
                                              "runs": [{"hash": s.hash, "method": s.row, "dataset": s.dataset,
                                                        "seed": s.seed} for s in specs]})
    t0 = time.perf_counter()
    statuses = execute(specs, out, resume=resume, quiet=quiet, adapters=adapters, report=recipe.report)
    run_s = time.perf_counter() - t0
    rep = write_report(recipe, statuses, out, added)
    counts = {k: sum(1 for st in statuses if st.status == k) for k in ("done", "cached", "failed", "refused")}
    write_run(out, command="compare", data_dir=data_dir_used(None),
              config={"recipe": recipe, "strong_baselines_added": added, "resume": resume,
                      "overrides": overrides if isinstance(overrides, dict) else list(overrides)},
              metrics={"runs": counts, "run_seconds": run_s, "results": "results.csv",
                       "status": [{"method": st.spec.row, "dataset": st.spec.dataset, "seed": st.spec.seed,
                                   "status": st.status, "seconds": st.seconds, "message": st.message,
                                   "run_dir": str(st.run_dir.relative_to(out))} for st in statuses]})
    rep.update(out=out, run_seconds=run_s, total_seconds=time.perf_counter() - t0, statuses=statuses, recipe=recipe)
    return rep
