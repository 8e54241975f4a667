"""The NLL detector: number formatting, value spans through the template, per-field NLL, partial (streaming) rows,
label-free thresholds, the normal-only mode, and the stream scorer using partial scoring. Tiny Llama (tests/)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parents[2]))
from conftest import synthetic_jobs  # noqa: E402
from nll_fixtures import tiny_nll_lm  # noqa: E402

from llmad.detectors.nll.config import NLLConfig, parse_threshold  # noqa: E402
from llmad.detectors.nll.detector import NLLDetector, job_fields  # noqa: E402
from llmad.detectors.nll.serialize import Serializer, fmt_value, sig_num  # noqa: E402
from llmad.errors import LlmadError  # noqa: E402


@pytest.mark.parametrize("value, text", [(0, "0"), (152.4, "152"), (1523.7, "1520"), (15234, "15.2k"),
                                         (999960, "1M"), (0.012345, "0.0123"), (-3.14159, "-3.14"),
                                         (2.5e9, "2.5G"), (12, "12"), (1.0, "1"), (99999, "100k")])
def test_numbers_have_three_significant_digits(value, text):
    assert sig_num(value) == text


def test_missing_values_are_none_and_bools_words():
    assert fmt_value(float("nan")) is None and fmt_value(None) is None and fmt_value(float("inf")) is None
    assert fmt_value("  ") is None and fmt_value(True) == "yes" and fmt_value(np.int64(7)) == "7"


def test_spans_cover_exactly_the_values_and_sentinels_in_data_are_stripped():
    ser = Serializer("job")
    pairs = ser.values({"runtime": 152.3, "transformation": "ind\ue000ivid\ue001uals", "wms_delay": np.nan},
                       ["wms_delay", "runtime", "transformation"])
    assert pairs[0] == ("wms_delay", "missing")
    text, spans = ser.render(pairs)
    assert text == "wms missing, runtime 152, task individuals"
    assert [(n, text[a:b]) for n, a, b in spans] == [("wms_delay", "missing"), ("runtime", "152"),
                                                     ("transformation", "individuals")]
    partial = ser.values({"runtime": 152.3, "wms_delay": np.nan}, ["wms_delay", "runtime"], partial=True)
    assert partial == [("runtime", "152")]


def test_a_user_template_may_reorder_and_rename(tmp_path):
    tpl = tmp_path / "rev.j2"
    tpl.write_text("{% for f in fields | reverse %}<{{ f.name | upper }}={{ f.value }}>{% endfor %}")
    ser = Serializer(str(tpl))
    text, spans = ser.render([("a", "1"), ("b", "22")])
    assert text == "<B=22><A=1>"
    assert {n: text[a:b] for n, a, b in spans} == {"a": "1", "b": "22"}


def test_long_values_are_cut_with_a_warning(capsys):
    ser = Serializer("job", max_value_chars=10)
    pairs = ser.values({"transformation": "x" * 500}, ["transformation"])
    assert pairs == [("transformation", "x" * 10)]
    ser.warn()
    assert "warning [long-value]" in capsys.readouterr().err


def test_threshold_rules_parse_and_reject():
    assert parse_threshold("contamination:0.05") == ("contamination", 0.05)
    assert parse_threshold("train-quantile:0.95") == ("train-quantile", 0.95)
    assert parse_threshold("validation") == ("validation", None) and parse_threshold("2.5") == ("number", 2.5)
    for bad in ("contamination:0.7", "train-quantile:0.2", "top5", "contamination:x"):
        with pytest.raises(LlmadError, match="--threshold"):
            parse_threshold(bad)
    with pytest.raises(LlmadError, match="--permutations"):
        NLLConfig(permutations=0).validate()
    with pytest.raises(LlmadError, match="--lora"):
        NLLConfig(load_in_4bit=True, lora_r=0).validate()


# ------------------------------------------------------------------------------------------------ fitted detectors
@pytest.fixture(scope="module")
def lm_path(tmp_path_factory) -> Path:
    return tiny_nll_lm(tmp_path_factory.mktemp("nll") / "tiny")


def cfg(lm_path: Path, **kw) -> NLLConfig:
    base = dict(model=str(lm_path), fields="paper", epochs=3, learning_rate=1e-2, batch_size=16, permutations=2,
                lora_r=0, threshold_rows=64, progress=False)
    return NLLConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def fitted(lm_path) -> NLLDetector:
    return NLLDetector(config=cfg(lm_path, threshold="contamination:0.1")).fit(synthetic_jobs(240, 0),
                                                                               synthetic_jobs(80, 1))


def test_contamination_threshold_is_a_quantile_of_validation_scores(fitted):
    assert fitted.threshold_ == pytest.approx(np.quantile(fitted.validation_scores_, 0.9))
    assert fitted.threshold_rule_.startswith("contamination:0.1") and "labels unused" in fitted.threshold_rule_
    val = synthetic_jobs(80, 1)
    np.testing.assert_allclose(fitted.validation_scores_, fitted.score(val), rtol=1e-6)


def test_per_field_nll_names_the_planted_field(fitted):
    jobs = synthetic_jobs(80, 2)
    normal = jobs[jobs["label"] == 0].head(10).reset_index(drop=True)
    bad = normal.copy()
    bad["queue_delay"] = 7.7e7  # nothing like it in train
    d, db = fitted.score_details(normal), fitted.score_details(bad)
    assert {f"nll_{f}" for f in job_fields("paper")} <= set(d.columns)
    assert (db["nll_queue_delay"] > d["nll_queue_delay"]).all()
    assert (db["score"] > d["score"]).mean() >= 0.8
    assert (db["top_field"] == "queue_delay").mean() >= 0.8
    # the score is the mean over fields (each averaged over the orders) of the value NLL
    cols = [f"nll_{f}" for f in fitted.fields_]
    assert np.all(np.abs(d["score"] - d[cols].mean(axis=1)) < 0.5)


def test_partial_rows_leave_unknown_fields_out(fitted):
    jobs = synthetic_jobs(20, 3).fillna(3.0)
    part = jobs.copy()
    part[["runtime", "kickstart_executables_cpu_time", "post_script_delay"]] = np.nan
    full, partial = fitted.score_details(part), fitted.score_details(part, partial=True)
    assert (partial["fields_scored"] == full["fields_scored"] - 3).all()
    assert partial["nll_runtime"].isna().all() and full["nll_runtime"].notna().all()
    empty = jobs.head(2).copy()
    empty[job_fields("paper")] = np.nan
    s = fitted.score_partial(empty)
    assert np.isfinite(s).all() and (s == 0).all()  # nothing known yet: no evidence


def test_train_quantile_number_and_validation_rules(lm_path):
    tr, va = synthetic_jobs(120, 0), synthetic_jobs(40, 1)
    det = NLLDetector(config=cfg(lm_path, epochs=1, threshold="train-quantile:0.9")).fit(tr, va)
    assert det.threshold_rule_.startswith("train-quantile:0.9")
    assert np.isfinite(det.threshold_)
    det2 = NLLDetector(config=cfg(lm_path, epochs=1, threshold="3.5")).fit(tr, None)
    assert det2.threshold_ == 3.5
    with pytest.raises(LlmadError, match="labelled validation"):
        NLLDetector(config=cfg(lm_path, epochs=1, threshold="validation")).fit(tr, None)


def test_normal_only_trains_on_normal_rows_only(lm_path):
    tr = synthetic_jobs(120, 0)
    det = NLLDetector(config=cfg(lm_path, epochs=1, normal_only=True)).fit(tr, synthetic_jobs(40, 1))
    assert det.train_info_["rows"] == int((tr["label"] == 0).sum())
    assert det.train_info_["supervision"] == "normal-only" and det.name == "nll-normal-only"
    free = NLLDetector(config=cfg(lm_path, epochs=1)).fit(tr.drop(columns=["label"]), None)
    assert free.train_info_["rows"] == len(tr) and free.train_info_["supervision"] == "none"


def test_stream_scorer_uses_partial_scoring(fitted):
    from llmad.stream.scorer import CachedScorer

    sc = CachedScorer(fitted, fitted.input_columns())
    row = {c: np.nan for c in fitted.input_columns()}
    row.update(wms_delay=5.0, queue_delay=12.0)
    sc.request(sc.key(row), row)
    sc.flush()
    frame = pd.DataFrame([row])
    assert sc.score(sc.key(row)) == pytest.approx(fitted.score_partial(frame)[0])
    assert sc.score(sc.key(row)) != pytest.approx(fitted.score(frame)[0])  # "missing" would be scored otherwise


def test_z_aggregate_standardises_fields_on_train(fitted):
    import dataclasses

    jobs = synthetic_jobs(30, 4)
    z = NLLDetector(config=dataclasses.replace(fitted.config, aggregate="z"))
    for name in ("lm_", "fields_", "orders_", "baseline_", "scale_", "vocab_", "threshold_"):
        setattr(z, name, getattr(fitted, name))
    d = z.score_details(jobs)
    cols = [f"nll_{f}" for f in fitted.fields_]
    mu = np.array([fitted.baseline_[f] for f in fitted.fields_])
    sd = np.array([fitted.scale_[f] for f in fitted.fields_])
    np.testing.assert_allclose(d["score"], np.nanmean((d[cols].to_numpy() - mu) / sd, axis=1), rtol=1e-9)
    assert set(fitted.scale_) == set(fitted.baseline_) and all(v > 0 for v in fitted.scale_.values())
