"""SFT bias as LLM_AD measures it (P(abnormal) - P(normal) on the empty sentence and the all-missing job, before and
after training) and the ``debias_augment`` rows that reduce it; a tiny BERT (built here, MiniLM's tokenizer)."""
from __future__ import annotations

import json

import pytest

from llmad.detectors.sft.config import SFTConfig
from llmad.detectors.sft.debias import all_missing_job, content_free_texts, debias_rows
from llmad.detectors.sft.detector import SFTDetector
from llmad.errors import LlmadError
from llmad.render import render_jobs

from conftest import make_tiny_bert, synthetic_jobs, tiny_sft_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return str(make_tiny_bert(tmp_path_factory.mktemp("tiny-bert")))


def cfg(model: str, **kw) -> SFTConfig:
    # Unweighted loss (the paper's): the gap then mirrors the train prior, which is what augmentation must undo.
    return tiny_sft_config(model, **{"epochs": 3, "lr": 3e-3, "class_weight": "none", **kw})


@pytest.mark.parametrize("template", ["paper", "compact", "context"])
def test_all_missing_job_renders_every_field_as_missing(template):
    jobs = synthetic_jobs(6)
    text = render_jobs(all_missing_job(jobs), template)[0]
    assert not any(ch.isdigit() for ch in text)  # no value at all
    assert content_free_texts(lambda j: render_jobs(j, template), jobs) == {"empty": "", "all_missing": text}


def test_debias_rows_are_content_free_and_balanced():
    free = {"empty": "", "all_missing": " no wms queue run post in out inb outb cpu"}
    texts, labels = debias_rows(free, 200, 0.3, seed=1)
    assert len(texts) == len(labels) == 60 and sum(labels) == 30
    assert all(texts[i] == texts[i + 1] and labels[i:i + 2] == [0, 1] for i in range(0, 60, 2))  # one text, both
    words = free["all_missing"].split()
    assert all(" ".join(words).startswith(t.strip()) for t in texts)  # prefixes of the all-missing job only
    assert {t for t in texts} >= {"", free["all_missing"]} and len(set(texts)) > 2
    assert debias_rows(free, 200, 0.0) == ([], [])


def test_bias_is_measured_before_and_after_and_augmentation_shrinks_it(tiny, tmp_path):
    """40% of the synthetic train jobs are anomalous: without augmentation the tiny model answers 'nothing' with
    about that prior (a gap of -0.4 when written); half as many content-free rows again bring it near 0 (+0.06 /
    +0.12; other seeds gave up to +0.34: the tiny random model is a noisy stand-in)."""
    train, val = synthetic_jobs(320, 0), synthetic_jobs(60, 1)
    plain = SFTDetector(cfg(tiny)).fit(train, val, output_dir=tmp_path / "plain", printer=lambda s: None)
    aug = SFTDetector(cfg(tiny, debias_augment=0.5)).fit(train, val, output_dir=tmp_path / "aug",
                                                          printer=lambda s: None)
    for det in (plain, aug):
        assert set(det.bias_) == {"empty", "all_missing"}
        assert all(-1 <= v["before"] <= 1 and -1 <= v["after"] <= 1 for v in det.bias_.values())
        assert det.bias_["empty"]["text"] == "" and "no" in det.bias_["all_missing"]["text"]
    # Same seed, same pretrained model and fresh head: the same bias before training.
    assert plain.bias_["empty"]["before"] == pytest.approx(aug.bias_["empty"]["before"])
    assert plain.train_info_["debias_rows"] == 0 and aug.train_info_["debias_rows"] == 160
    assert all(plain.bias_[k]["after"] < -0.25 for k in plain.bias_)
    for k in ("empty", "all_missing"):
        assert abs(aug.bias_[k]["after"]) < abs(plain.bias_[k]["after"]) - 0.15
    # Real jobs are still told apart (the threshold comes from validation: the scores' scale may shrink).
    from sklearn.metrics import roc_auc_score

    test = synthetic_jobs(60, 2)
    assert roc_auc_score(test["label"], aug.score(test)) > 0.95
    aug.save(tmp_path / "model")
    assert SFTDetector.load(tmp_path / "model").bias_ == aug.bias_


def test_run_sft_writes_bias_into_metrics(tiny, tmp_path):
    from llmad.api.sft import SFTRunConfig, run_sft
    from llmad.config import DataConfig
    from llmad.data.splits import Split

    split = Split(synthetic_jobs(64, 0), synthetic_jobs(32, 1), synthetic_jobs(32, 2), kind="run",
                  description="synthetic")
    run = SFTRunConfig(data=DataConfig(spec="flowbench:not-loaded"), out=str(tmp_path / "run"),
                       sft=cfg(tiny, epochs=1, debias_augment=0.1))
    logged = []
    res = run_sft(run, split=split, printer=logged.append)
    bias = json.loads((tmp_path / "run" / "metrics.json").read_text())["bias"]
    assert set(bias) == {"empty", "all_missing"}
    assert all({"before", "after"} <= set(v) for v in bias.values()) and bias == res.metrics["bias"]
    assert any(line.startswith("P(abnormal) - P(normal) before -> after training: empty") for line in logged)


def test_debias_augment_out_of_range_is_one_line(tiny):
    with pytest.raises(LlmadError, match="debias_augment"):
        SFTDetector(cfg(tiny, debias_augment=1.5)).fit(synthetic_jobs(8), None)
