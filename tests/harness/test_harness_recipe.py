"""`llmad compare` recipes: parsing, overrides, shipped recipes, strong baselines."""
from __future__ import annotations

from pathlib import Path

import pytest

from llmad.errors import LlmadError
from llmad.harness.plan import add_strong_baselines, plan
from llmad.harness.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]


def test_recipe_maps_onto_configs_and_unknown_keys_fail(toy_zip, toy_recipe):
    rec = load_recipe(toy_recipe(toy_zip))
    assert [m.name for m in rec.methods] == ["rf-plain", "hgb-context", "knn-plain"]
    specs = plan(rec)
    # 2 fixed methods + 2 sweep points, x 2 seeds
    assert len(specs) == 8 and len({s.hash for s in specs}) == 8
    rf = [s for s in specs if s.method == "rf-plain" and s.seed == 1][0]
    assert rf.config["n_estimators"] == 15 and rf.config["seed"] == 1 and rf.data["seed"] == 1
    knn = [s for s in specs if s.method == "knn-plain"]
    assert sorted({s.limits["train"] for s in knn}) == [30, 80]
    assert {s.row for s in knn} == {"knn-plain [train_limit=30]", "knn-plain [train_limit=80]"}

    bad = [({"colour": "red"}, "unknown key"),
           ({"datasets": [{"spec": str(toy_zip), "splt": "run"}]}, "splt"),
           ({"methods": [{"method": "baseline", "config": {"n_trees": 5}}]}, "n_trees"),
           ({"methods": [{"method": "svm"}]}, "svm"),
           ({"methods": [{"method": "baseline", "config": {"seed": 3}}]}, "set by the harness"),
           ({"methods": [{"method": "baseline", "sweep": {"depth": [1, 2]}}]}, "depth"),
           ({"report": {"headline": "auc"}}, "headline"),
           ({"methods": [{"method": "replay", "config": {}}]}, "source")]
    for patch, msg in bad:
        with pytest.raises(LlmadError, match=msg):
            load_recipe(toy_recipe(toy_zip, **patch))


def test_overrides_win_over_the_file(toy_zip, tmp_path, toy_recipe):
    path = tmp_path / "r.yaml"
    import yaml

    path.write_text(yaml.safe_dump(toy_recipe(toy_zip)))
    rec = load_recipe(path, ["methods.rf-plain.config.n_estimators=7", "seeds=[3]",
                       "datasets.toy.limit=50", "report.headline=accuracy",
                       "methods.knn-plain.sweep.train_limit=[40]"])
    specs = plan(rec)
    assert {s.seed for s in specs} == {3}
    assert [s.config["n_estimators"] for s in specs if s.method == "rf-plain"] == [7]
    assert all(s.data["limit"] == 50 for s in specs) and rec.report.headline == "accuracy"
    assert [s.limits["train"] for s in specs if s.method == "knn-plain"] == [40]
    with pytest.raises(LlmadError, match="no entry named"):
        load_recipe(path, ["methods.nope.config.n_estimators=7"])
    with pytest.raises(LlmadError, match="n_trees"):
        load_recipe(path, ["methods.rf-plain.config.n_trees=7"])
    with pytest.raises(LlmadError, match="key=value"):
        load_recipe(path, ["seeds"])


@pytest.mark.parametrize("name", ["quickstart", "paper", "early_detection", "trainticket", "all", "ci_tiny"])
def test_shipped_recipes_parse_and_plan(name):
    rec = load_recipe(ROOT / "recipes" / f"{name}.yaml")
    add_strong_baselines(rec)
    specs = plan(rec)
    assert specs and len({s.hash for s in specs}) == len(specs)
    jobs = {d.name for d in rec.datasets if d.family == "jobs"}
    for ds in jobs:  # the strong references run on every job dataset
        assert {"rf-plain", "hgb-context"} <= {s.method for s in specs if s.dataset == ds}
    for s in specs:
        if s.kind == "replay" and s.extras["source"] in {m.name for m in rec.methods}:
            assert s.extras["source_hash"] in {u.hash for u in specs if u.kind in ("sft", "fusion")}


def test_strong_baselines_are_always_added(toy_zip, toy_recipe):
    rec = load_recipe(toy_recipe(toy_zip, methods=[{"method": "baseline", "config": {"method": "knn"}}]))
    added = add_strong_baselines(rec)
    assert added == ["rf-plain", "hgb-context"]
    assert [m.name for m in rec.methods] == ["knn-plain", "rf-plain", "hgb-context"]


def test_a_key_added_at_its_old_behaviour_keeps_earlier_cache_keys():
    """``stack.test_lm: full`` is what every stack did before the key existed: runs cached then stay valid, and
    ``folds`` (a different computation) gets its own key."""
    from dataclasses import replace

    from llmad.harness.plan import RunSpec

    base = RunSpec(method="stack", kind="fusion", dataset="d", data={"spec": "flowbench:x"}, seed=0, limits={},
                   sweep={}, config={"kind": "stack", "stack": {"folds": 2, "tree": "auto"}, "seed": 0})
    with_full = replace(base, config={**base.config, "stack": {"folds": 2, "tree": "auto", "test_lm": "full"}})
    with_folds = replace(base, config={**base.config, "stack": {"folds": 2, "tree": "auto", "test_lm": "folds"}})
    assert with_full.hash == base.hash and with_folds.hash != base.hash
