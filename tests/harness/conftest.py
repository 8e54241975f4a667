"""Fixtures of the harness tests: a toy Flow-Bench archive and a recipe builder over it."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
from conftest import make_run_frame, write_zip


@pytest.fixture
def toy_zip(tmp_path: Path) -> Path:
    """12 synthetic runs (4 normal, 8 with a slow labeled host): every split part holds both classes."""
    frames = {f"toywf-run{r:04d}": make_run_frame(r, anomalous_host=None if r <= 4 else "worker1",
                                                  anomaly="cpu_3" if r % 2 else "hdd_5") for r in range(1, 13)}
    return write_zip(tmp_path / "toywf.zip", frames)


def _toy_recipe(zip_path: Path, **extra) -> dict:
    rec = {"name": "toy", "seeds": [0, 1],
           "datasets": [{"name": "toy", "spec": str(zip_path)}],
           "methods": [{"method": "baseline", "name": "rf-plain", "config": {"method": "rf", "n_estimators": 15}},
                       {"method": "baseline", "name": "hgb-context",
                        "config": {"method": "hgb", "features": "context", "n_estimators": 10}},
                       {"method": "baseline", "config": {"method": "knn"}, "sweep": {"train_limit": [30, 80]}}],
           "report": {"bootstrap": 100, "plots": False, "html": False}}
    rec.update(extra)
    return rec


@pytest.fixture
def toy_recipe() -> Callable[..., dict]:
    """``toy_recipe(zip_path, **top_level_overrides)`` -> a recipe mapping (3 baselines, 2 seeds)."""
    return _toy_recipe
