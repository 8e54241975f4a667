"""Recipes and --config files: every YAML the tool reads is bounded and type-checked before any run."""
from __future__ import annotations

import pytest

from llmad.config import check_value, from_dict, load_yaml, parse_yaml
from llmad.errors import LlmadError
from tests.badinput.runner import assert_nothing_partial, assert_user_error, run_cli

BOMB = "name: x\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")) + "description: *i\n"
OK = "name: x\ndatasets:\n  - spec: flowbench:1000genome\n"


def _recipe(tmp_path, text: str | bytes, name: str = "r.yaml"):
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


@pytest.mark.parametrize("text,needles", [
    (BOMB, ["r.yaml", "expands to more than"]),
    ("a: &a [*a]\n", ["r.yaml", "expands to more than"]),  # a recursive alias
    (OK + "report:\n  bootstrap: many\n", ["r.yaml", "report.bootstrap", "expected an integer", "many"]),
    (OK + "description: {a: 1}\n", ["r.yaml", "description", "expected a string", "dict"]),
    (OK + "methods:\n  - method: baseline\n    config: {features: 7}\n",
     ["r.yaml", "methods[0].config.features", "expected a string, got int 7"]),
    (OK + "seeds: [0, x]\n", ["r.yaml", "seeds[1]", "expected an integer"]),
    (OK + "methods:\n  - method: numeric\n    config: {val_fraction: high}\n",
     ["r.yaml", "methods[0].config.val_fraction", "expected a number"]),
    (OK + "report: 5\n", ["r.yaml", "report", "expected a mapping"]),
    (OK + "methods:\n  - method: baseline\n    sweep: {n_estimators: [10, many]}\n",
     ["r.yaml", "methods[0].sweep.n_estimators[1]", "expected an integer"]),
    (OK + "methods:\n  - method: baseline\n    sweep: {train_limit: [1.5]}\n",
     ["r.yaml", "methods[0].sweep.train_limit[0]", "expected an integer"]),
    (b"name: caf\xe9\n", ["r.yaml", "line 1", "not UTF-8"]),
    ("name: [unclosed\n", ["r.yaml", "invalid YAML"]),
    ("name: !!python/object/apply:os.system [echo pwned]\n", ["r.yaml", "invalid YAML"]),  # safe loader only
])
def test_bad_recipe_is_refused_before_any_run(tmp_path, text, needles):
    out = tmp_path / "out"
    res = run_cli(["compare", _recipe(tmp_path, text), "--out", out], timeout=20)
    assert_user_error(res, *needles)
    assert res.seconds < 15
    assert_nothing_partial(out)


def test_alias_bomb_is_refused_fast_and_small_aliases_still_work():
    with pytest.raises(LlmadError, match="expands to more than"):
        parse_yaml(BOMB, "bomb")
    assert parse_yaml("a: &x [1, 2]\nb: *x\n", "ok") == {"a": [1, 2], "b": [1, 2]}


def test_sft_config_file_is_checked_the_same_way(tmp_path):
    res = run_cli(["sft", "--config", _recipe(tmp_path, "sft:\n  epochs: three\n", "c.yaml"), "--out", tmp_path / "o"])
    assert_user_error(res, "c.yaml", "sft.epochs", "expected a number")


def test_checker_follows_the_type_hints():
    from llmad.detectors.icl.config import ICLConfig

    assert check_value(3, float, "x") == 3 and check_value(0.5, float, "x") == 0.5
    assert check_value(None, int | None, "x") is None
    with pytest.raises(LlmadError, match="x: expected an integer, got bool True"):
        check_value(True, int, "x")
    cfg = from_dict(ICLConfig, {"label_words": ["normal", "abnormal"]})
    assert isinstance(cfg.label_words, tuple)
    with pytest.raises(LlmadError, match="label_words"):
        from_dict(ICLConfig, {"label_words": ["only-one"]})


def test_load_yaml_needs_a_mapping(tmp_path):
    with pytest.raises(LlmadError, match="mapping"):
        load_yaml(_recipe(tmp_path, "- 1\n- 2\n"))
