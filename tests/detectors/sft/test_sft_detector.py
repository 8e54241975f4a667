"""SFTDetector: freezing, partial jobs, training that learns, save/reload score equality, LoRA adapters with the
head, init-from, custom templates, int8 copy. A tiny BERT (built here, MiniLM's tokenizer) keeps it fast."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from llmad.data.reveal import PREFIX_STAGES
from llmad.data.reveal import partial_at_stage as partial_jobs
from llmad.data.reveal import stage_prefix_augment as prefix_augmented
from llmad.detectors.sft.config import SFTConfig, parse_freeze
from llmad.detectors.sft.detector import SFTDetector
from llmad.detectors.sft.model import apply_freeze
from llmad.detectors.sft.training import latest_checkpoint
from llmad.errors import LlmadError

from conftest import make_tiny_bert, synthetic_jobs, tiny_sft_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return str(make_tiny_bert(tmp_path_factory.mktemp("tiny-bert")))


def quick_cfg(model: str, **kw) -> SFTConfig:
    return tiny_sft_config(model, **kw)


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    train, val, test = synthetic_jobs(240, 0), synthetic_jobs(80, 1), synthetic_jobs(80, 2)
    det = SFTDetector(quick_cfg(tiny, epochs=3, lr=3e-3)).fit(train, val, output_dir=tmp_path_factory.mktemp("fit"),
                                           printer=lambda s: None)
    return det, test


def test_parse_freeze_forms_and_errors():
    assert parse_freeze("none") == ("none", 0)
    assert parse_freeze("4-layers") == ("layers", 4)
    assert parse_freeze("2") == ("layers", 2)
    assert parse_freeze("encoder") == ("encoder", 0)
    with pytest.raises(LlmadError, match="embeddings"):
        parse_freeze("half")


def test_freeze_strategies_freeze_what_they_say(tiny):
    from transformers import AutoModelForSequenceClassification

    def fresh():
        return AutoModelForSequenceClassification.from_pretrained(tiny)

    m = fresh()
    full = apply_freeze(m, "none")
    assert full["trainable_params"] == full["total_params"]
    m = fresh()
    apply_freeze(m, "embeddings")
    assert not m.bert.embeddings.word_embeddings.weight.requires_grad
    assert m.bert.encoder.layer[0].attention.self.query.weight.requires_grad
    m = fresh()
    apply_freeze(m, "1-layers")
    assert not m.bert.encoder.layer[0].output.dense.weight.requires_grad
    assert m.bert.encoder.layer[1].output.dense.weight.requires_grad
    m = fresh()
    info = apply_freeze(m, "encoder")
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("classifier", "bert.pooler")) for n in trainable)
    assert info["trainable_params"] < info["total_params"] / 10
    with pytest.raises(LlmadError, match="only 2 layers"):
        apply_freeze(fresh(), "5-layers")


def test_partial_jobs_blank_later_stages_only():
    df = synthetic_jobs(10)
    cut = 3  # wms, stage-in, queue known; runtime and later unknown
    p = partial_jobs(df, cut)
    known = [c for st in PREFIX_STAGES[:cut] for c in st]
    unknown = [c for st in PREFIX_STAGES[cut:] for c in st]
    pd.testing.assert_frame_equal(p[known], df[known])
    assert p[unknown].isna().all().all()
    assert df["runtime"].notna().all()  # the input is not modified
    aug = prefix_augmented(df, copies=2, seed=0)
    assert len(aug) == 3 * len(df)
    assert aug["label"].sum() == 3 * df["label"].sum()
    assert aug.iloc[len(df):]["post_script_delay"].isna().all()


def test_fit_learns_and_thresholds_on_validation(trained):
    det, test = trained
    s = det.score(test)
    assert s.shape == (len(test),) and np.all((s >= 0) & (s <= 1))
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(test["label"], s) > 0.9
    assert 0 < det.threshold_ < 1
    assert det.train_info_["steps"] > 0 and det.train_info_["mean_train_tokens"] < 48
    # one validation line per epoch reached the log history
    assert sum("eval_loss" in h for h in det.trainer_state_["log_history"]) >= 1


def test_save_reload_scores_exactly_equal(trained, tmp_path):
    det, test = trained
    before = det.score(test)
    det.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "detector.json").read_text())
    assert meta["template"] == "compact" and meta["threshold"] == det.threshold_ and meta["max_length"] == 48
    assert (tmp_path / "m" / "model" / "model.safetensors").is_file()
    assert not list((tmp_path / "m").rglob("*.bin"))
    again = SFTDetector.load(tmp_path / "m")
    assert np.array_equal(again.score(test), before)
    assert np.array_equal(again.predict(test), det.predict(test))


def test_partial_jobs_score_and_order_independence(trained):
    det, test = trained
    part = partial_jobs(test, 2)
    s = det.score(part)
    assert np.isfinite(s).all() and len(s) == len(test)
    # length-sorted batching must hand scores back in input order
    rev = test.iloc[::-1].reset_index(drop=True)
    np.testing.assert_allclose(det.score(rev)[::-1], det.score(test), atol=1e-6)


def test_int8_copy_scores_close_and_is_cpu(trained):
    det, test = trained
    q = det.quantized()
    np.testing.assert_allclose(q.score(test), det.score(test), atol=0.05)
    assert q.device_ == "cpu" and det.model_ is not q.model_


def test_lora_saves_adapter_with_head_and_reloads_equal(tiny, tmp_path):
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForSequenceClassification

    train, val, test = synthetic_jobs(96, 0), synthetic_jobs(32, 1), synthetic_jobs(32, 2)
    det = SFTDetector(quick_cfg(tiny, lora=4, epochs=1)).fit(train, val, output_dir=tmp_path / "run",
                                                              printer=lambda s: None)
    before = det.score(test)
    det.save(tmp_path / "m")
    keys = list(safe_open(str(tmp_path / "m" / "adapter" / "adapter_model.safetensors"), "pt").keys())
    assert any("classifier" in k for k in keys) and any("lora_A" in k for k in keys)
    assert np.array_equal(SFTDetector.load(tmp_path / "m").score(test), before)
    # base + adapter (as another tool would load it) gives the same scores as the merged model
    base = AutoModelForSequenceClassification.from_pretrained(tiny)
    peft_model = PeftModel.from_pretrained(base, tmp_path / "m" / "adapter").merge_and_unload().eval()
    other = SFTDetector.load(tmp_path / "m")
    other.model_ = peft_model
    np.testing.assert_allclose(other.score(test), before, atol=1e-5)


def test_init_from_with_frozen_encoder_keeps_encoder_weights(trained, tmp_path):
    det, test = trained
    det.save(tmp_path / "a")
    b = SFTDetector(quick_cfg(str(tmp_path / "unused"), init_from=str(tmp_path / "a"), freeze="encoder",
                              epochs=1)).fit(synthetic_jobs(64, 5), synthetic_jobs(32, 6), output_dir=tmp_path / "b",
                                             printer=lambda s: None)
    wa = det.model_.bert.encoder.layer[1].output.dense.weight
    wb = b.model_.bert.encoder.layer[1].output.dense.weight
    assert np.array_equal(wa.detach().numpy(), wb.detach().numpy())
    assert not np.array_equal(det.model_.classifier.weight.detach().numpy(),
                              b.model_.classifier.weight.detach().numpy())
    with pytest.raises(LlmadError, match="not a saved llmad SFT model"):
        SFTDetector(quick_cfg("minilm", init_from=str(tmp_path))).fit(synthetic_jobs(8), None,
                                                                      output_dir=tmp_path / "c")


def test_custom_template_travels_with_the_model(tiny, tmp_path):
    tpl = tmp_path / "mine.j2"
    tpl.write_text("runtime {{ job.runtime | num }} cpu {{ job.kickstart_executables_cpu_time | num }}")
    det = SFTDetector(quick_cfg(tiny, template=str(tpl), max_steps=2, epochs=1)).fit(
        synthetic_jobs(32), synthetic_jobs(16, 1), output_dir=tmp_path / "run", printer=lambda s: None)
    test = synthetic_jobs(16, 2)
    before = det.score(test)
    det.save(tmp_path / "m")
    tpl.unlink()  # the saved copy must be used
    again = SFTDetector.load(tmp_path / "m")
    assert again.render(test.head(1))[0].startswith("runtime ")
    assert np.array_equal(again.score(test), before)


def test_max_time_pauses_with_a_checkpoint_and_resume_finishes(tiny, tmp_path):
    train, val = synthetic_jobs(64), synthetic_jobs(16, 1)
    cfg = quick_cfg(tiny, epochs=2, max_time_s=0.0)
    det = SFTDetector(cfg).fit(train, val, output_dir=tmp_path, printer=lambda s: None)
    assert det.paused_ and det.train_info_["steps"] == 1
    assert latest_checkpoint(tmp_path / "checkpoints").endswith("checkpoint-1")
    (tmp_path / "checkpoints" / "checkpoint-99").mkdir()  # a half-written one (no trainer_state.json) is ignored
    det2 = SFTDetector(quick_cfg(tiny, epochs=2)).fit(train, val, output_dir=tmp_path, resume=True,
                                                     printer=lambda s: None)
    assert not det2.paused_ and det2.train_info_["resumed_from"].endswith("checkpoint-1")
    assert det2.train_info_["steps"] == 8  # 64 jobs / 16 per batch * 2 epochs
    assert not (tmp_path / "checkpoints" / "checkpoint-99").exists()


def test_unknown_config_key_and_bad_values_fail_clearly(tiny):
    from llmad.config import from_dict

    with pytest.raises(LlmadError, match="unknown key"):
        from_dict(SFTConfig, {"epoch": 3})
    with pytest.raises(LlmadError, match="template"):
        SFTDetector(quick_cfg(tiny, template="nope")).fit(synthetic_jobs(8), None)
    with pytest.raises(LlmadError, match="threshold objective"):
        SFTDetector(quick_cfg(tiny, threshold_objective="median")).fit(synthetic_jobs(8), None)


def test_prefix_augment_trains_on_partial_copies(tiny, tmp_path):
    train = synthetic_jobs(48)
    det = SFTDetector(quick_cfg(tiny, prefix_augment=True, max_steps=1, epochs=1)).fit(
        train, None, output_dir=tmp_path, printer=lambda s: None)
    assert det.train_info_["train_rows"] == 2 * len(train)
    assert det.train_info_["prefix_augment"] == "stages"  # no timestamps here: stage cuts
    timed = train.assign(submit=0.0, execute_start=10.0, execute_end=20.0, stage_out_end=25.0)
    det = SFTDetector(quick_cfg(tiny, prefix_augment=True, max_steps=1, epochs=1)).fit(
        timed, None, output_dir=tmp_path / "b", printer=lambda s: None)
    assert det.train_info_["prefix_augment"] == "events"
    assert det.train_info_["train_rows"] > len(train)


def test_auto_max_length_fits_the_longest_train_job(tiny, tmp_path):
    train = synthetic_jobs(60, 3)
    det = SFTDetector(quick_cfg(tiny, max_length=None, template="paper", epochs=1))
    det.fit(train, None, output_dir=tmp_path / "fit", printer=lambda s: None)
    lens = [len(x) for x in det.tokenizer_(det.render(train))["input_ids"]]
    # The paper template is longer than the old fixed 64 tokens: nothing of it may be cut.
    assert max(lens) > 64 and det.config.max_length >= max(lens) - 1
    # One tokenization: the few sentences over the budget are re-encoded exactly as a truncating encode would.
    texts = det.render(train)
    ids, budget = det.encode_auto(texts)
    assert budget == det.config.max_length and ids == det.encode(texts, budget)
    det.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "detector.json").read_text())["max_length"] == det.config.max_length


def test_precision_bf16_trains_under_cpu_autocast_and_bad_choices_fail(tiny, tmp_path):
    train, val = synthetic_jobs(64), synthetic_jobs(32, 1)
    runs = {}
    for prec in ("fp32", "bf16"):
        det = SFTDetector(quick_cfg(tiny, epochs=1, precision=prec)).fit(train, val, output_dir=tmp_path / prec,
                                                                         printer=lambda s: None)
        runs[prec] = det
    assert runs["bf16"].train_info_["mixed_precision"] == {"bf16": True, "fp16": False}
    assert runs["fp32"].train_info_["mixed_precision"] == {"bf16": False, "fp16": False}
    a, b = runs["fp32"].score(val), runs["bf16"].score(val)
    assert np.isfinite(b).all()
    # Same seed, same rows: only the autocast numerics differ, so the weights (and scores) differ a little.
    assert 0 < np.abs(a - b).max() < 0.2
    with pytest.raises(LlmadError, match="fp16 needs a CUDA"):
        SFTDetector(quick_cfg(tiny, precision="fp16")).fit(train, None, output_dir=tmp_path / "x")
    with pytest.raises(LlmadError, match="--precision"):
        SFTDetector(quick_cfg(tiny, precision="fp8")).fit(train, None, output_dir=tmp_path / "y")


def test_balanced_class_weight_lifts_the_minority_and_is_recorded(tiny, tmp_path):
    import torch

    from llmad.detectors.sft.training import class_weighted_loss

    loss, w = class_weighted_loss(np.array([0, 0, 0, 1]))
    assert w == [pytest.approx(2 / 3, abs=1e-4), 2.0]  # n / (2 n_c): mean weight over the rows is 1
    logits, y = torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([1, 0])
    plain = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    assert float(loss({"logits": logits}, y)) == pytest.approx(float((plain * torch.tensor([2.0, 2 / 3])).mean()),
                                                               rel=1e-5)
    jobs = synthetic_jobs(96)
    jobs["label"] = (np.arange(len(jobs)) % 6 == 0).astype(int)  # 1 in 6 anomalous
    scores = {}
    for cw in ("none", "balanced"):
        det = SFTDetector(quick_cfg(tiny, epochs=2, class_weight=cw)).fit(jobs, None, output_dir=tmp_path / cw,
                                                                          printer=lambda s: None)
        scores[cw] = det.score(jobs)
    assert det.train_info_["class_weights"] == [0.6, 3.0]
    # Weighting moves the learned prior towards the minority class.
    assert scores["balanced"].mean() > scores["none"].mean() + 0.05
    with pytest.raises(LlmadError, match="class weight"):
        SFTDetector(quick_cfg(tiny, class_weight="auto")).fit(jobs, None, output_dir=tmp_path / "x")
