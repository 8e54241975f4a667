"""DualLMAD with tiny backbones built here (a 2-layer Llama and a 2-layer GPT-2, saved with ``save_pretrained`` and
loaded by path through ``from_pretrained``, the call that loads ``gpt2`` where the hub is reachable), plus one run
on the real offline ``smollm2-135m`` alias."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from numeric_fixtures import synthetic  # noqa: E402

from llmad.data.windows import ZScore, make_windows  # noqa: E402
from llmad.errors import LlmadError  # noqa: E402


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> str:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(123)  # not the detector seed: its random-init ablation would rebuild these weights
    path = tmp_path_factory.mktemp("duallmad") / "tiny-llama"
    LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=64, max_position_embeddings=128)
                     ).save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="module")
def sets():
    """Two SMD-like entities in two groups (machine-1-*, machine-2-*): clean train, level shifts in val/test."""
    def part(kind: str, seed: int, anomalies=()):
        out = []
        for m, off in (("machine-1-1", 0), ("machine-2-1", 10)):
            s = synthetic(240 if kind != "train" else 400, anomalies=anomalies, seed=seed + off,
                          name=f"smd:{m}/{kind}")
            s.meta["group"] = f"smd:{m}"
            out.append(s)
        return out

    tr, va, te = part("train", 0), part("validation", 1, (60, 170)), part("test", 2, (50, 150))
    z = ZScore().fit(tr)
    return make_windows(tr, z, 32, 4), make_windows(va, z, 32, 8), make_windows(te, z, 32, 8)


def _det(backbone: str, **kw):
    from llmad.detectors.duallmad import DualLMADDetector

    return DualLMADDetector(backbone=backbone, **{"steps": 40, "stage2_steps": 15, "batch_size": 16, "lr": 1e-2,
                                                  "device": "cpu", **kw})


@pytest.fixture(scope="module")
def fitted(tiny_llama, sets):
    tr, va, _ = sets
    return _det(tiny_llama).fit(tr, va)


def test_fit_trains_stage1_and_flags_level_shifts(fitted, sets):
    from sklearn.metrics import roc_auc_score

    _, _, te = sets
    assert np.mean(fitted.losses_[-5:]) < 0.5 * fitted.losses_[0]
    assert len(fitted.losses_) == 40 and fitted.threshold_ is not None
    assert roc_auc_score(te.point_labels(), fitted.score_points(te)) > 0.8
    # only norms, projections, embeddings and heads trained in stage 1: attention/MLP weights stay the LM's
    from llmad.detectors.duallmad import load_backbone_lm

    lm = load_backbone_lm(fitted.backbone, 2)
    ref = dict(lm.named_parameters())["model.layers.0.self_attn.q_proj.weight"]
    for prefix in ("backbone_t", "backbone_m"):
        got = dict(fitted.model_.named_parameters())[f"{prefix}.blocks.0.self_attn.q_proj.weight"]
        assert not got.requires_grad and np.array_equal(got.detach().numpy(), ref.detach().numpy())
    trained = {n for n, p in fitted.model_.named_parameters() if p.requires_grad}
    assert "backbone_t.blocks.0.input_layernorm.weight" in trained and "t_in.weight" in trained


def test_stage2_group_heads_are_picked_by_entity(fitted, sets):
    _, _, te = sets
    assert fitted.groups_ == {"smd:machine-1": 1, "smd:machine-2": 2} and len(fitted.model_.heads) == 3
    h0, h1 = fitted.model_.heads[0].t_out.weight, fitted.model_.heads[1].t_out.weight
    assert not np.allclose(h0.detach().numpy(), h1.detach().numpy())
    np.testing.assert_array_equal(fitted._window_groups(te, len(te)),
                                  np.where(te.index[:, 0] == 0, 1, 2))
    with_groups = fitted.score_steps(te)
    saved, fitted.groups_ = fitted.groups_, {}
    try:
        head0 = fitted.score_steps(te)
    finally:
        fitted.groups_ = saved
    assert not np.allclose(with_groups, head0)
    # plain arrays carry no entity: the stage-1 head
    np.testing.assert_allclose(fitted.score_steps(te.windows()), head0, rtol=1e-5)


def test_save_load_round_trip_keeps_group_heads(fitted, sets, tmp_path):
    import llmad.detectors

    _, _, te = sets
    fitted.save(tmp_path / "d")
    again = llmad.detectors.load(tmp_path / "d")
    assert again.groups_ == fitted.groups_ and again.threshold_ == fitted.threshold_
    np.testing.assert_allclose(again.score_points(te), fitted.score_points(te), rtol=1e-5)


@pytest.mark.parametrize("branches", ["temporal", "metric"])
def test_single_branch_ablations(tiny_llama, sets, branches):
    tr, va, te = sets
    det = _det(tiny_llama, branches=branches, steps=10, stage2=False).fit(tr, va)
    names = {n.split(".")[0] for n, _ in det.model_.named_parameters()}
    other = "backbone_m" if branches == "temporal" else "backbone_t"
    assert other not in names and det.name == f"duallmad-{branches}-nostage2" and det.groups_ == {}
    assert np.isfinite(det.score_points(te)).all()


def test_random_init_has_the_same_architecture_other_weights(fitted, tiny_llama, sets):
    tr, va, _ = sets
    det = _det(tiny_llama, pretrained=False, steps=2, stage2=False).fit(tr, va)
    a, b = dict(det.model_.named_parameters()), dict(fitted.model_.named_parameters())
    assert {k: v.shape for k, v in a.items() if not k.startswith("heads.")} == \
        {k: v.shape for k, v in b.items() if not k.startswith("heads.")}
    k = "backbone_t.blocks.0.mlp.up_proj.weight"
    assert not np.allclose(a[k].detach().numpy(), b[k].detach().numpy())
    assert det.name == "duallmad-nostage2-randominit"


def test_warm_start_keeps_the_given_model_and_its_frozen_layers(fitted, tiny_llama, sets):
    import copy

    tr, va, _ = sets
    det = _det(tiny_llama, steps=5, stage2=False)
    det.warm_start = True
    det.model_ = copy.deepcopy(fitted.model_)
    for n, p in det.model_.named_parameters():
        p.requires_grad = not n.startswith(det.generic_prefixes)
    before = {n: p.detach().clone() for n, p in det.model_.named_parameters()}
    given = det.model_
    det.fit(tr, va)
    assert det.model_ is given and len(det.model_.heads) == 1
    after = dict(det.model_.named_parameters())
    assert all(np.array_equal(before[n].numpy(), after[n].detach().numpy()) for n in before
               if n.startswith(det.generic_prefixes))
    assert not np.array_equal(before["t_in.weight"].numpy(), after["t_in.weight"].detach().numpy())
    det.warm_start = False  # a plain fit starts over, as sklearn's does
    det.fit(tr, va)
    assert det.model_ is not given


def test_bad_options(tiny_llama, sets):
    from llmad.detectors.duallmad import DualLMADDetector, group_of

    with pytest.raises(LlmadError, match="branches"):
        DualLMADDetector(branches="spatial")
    with pytest.raises(LlmadError, match="multiple of patch"):
        _det(tiny_llama, patch=5).fit(sets[0])
    with pytest.raises(LlmadError, match="n_layers"):
        _det(tiny_llama, n_layers=3).fit(sets[0])
    assert group_of("smd:machine-3-10") == "smd:machine-3" and group_of("ts-auth-service") == "ts-auth-service"


def test_gpt2_backbone_loads_by_path_with_its_weights(tmp_path, sets):
    """The real GPT-2 route: ``from_pretrained(<gpt2 folder>)``; a tiny GPT2Config model stands in for ``gpt2``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    path = tmp_path / "tiny-gpt2"
    lm = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=3, n_head=4, vocab_size=64, n_positions=64))
    lm.save_pretrained(str(path))
    tr, va, te = sets
    det = _det(str(path), n_layers=2, steps=5, stage2=False).fit(tr, va)
    got = dict(det.model_.named_parameters())
    ref = dict(lm.named_parameters())
    for i in range(2):
        np.testing.assert_array_equal(got[f"backbone_m.blocks.{i}.attn.c_attn.weight"].detach().numpy(),
                                      ref[f"transformer.h.{i}.attn.c_attn.weight"].detach().numpy())
    np.testing.assert_array_equal(got["backbone_t.wpe.weight"].detach().numpy(),
                                  ref["transformer.wpe.weight"].detach().numpy())
    assert len(det.model_.backbone_t.blocks) == 2 and np.isfinite(det.score_points(te)).all()


def test_run_numeric_with_duallmad(tiny_llama, tmp_path):
    from llmad.api.numeric import NumericConfig, run_numeric
    from llmad.data.timeseries import SeriesSplit

    def part(kind, seed, anomalies=()):
        return [synthetic(300, anomalies=anomalies, seed=seed, name=f"syn-1/{kind}")]

    split = SeriesSplit(part("train", 0), part("validation", 1, (60, 170)), part("test", 2, (50, 150)),
                        kind="time", description="synthetic", info={})
    cfg = NumericConfig(method="duallmad", data="csv:unused.csv", model=tiny_llama, window=32, max_steps=20,
                        batch_size=16, lr=1e-2, extra={"stage2_steps": 5}, out=str(tmp_path / "run"))
    res = run_numeric(cfg, split=split)
    t = res.metrics["test"]
    assert res.metrics["method"] == "duallmad" and 0 <= t["vus_pr"] <= 1 and "event_f1" in t["event"]
    assert (tmp_path / "run" / "detector" / "model.safetensors").is_file()


@pytest.mark.integration
def test_real_smollm2_backbone(sets):
    """The offline alias: the first layer of SmolLM2-135M (hidden 576), a few steps."""
    tr, va, te = sets
    det = _det("smollm2-135m", n_layers=1, steps=3, stage2_steps=2, batch_size=8).fit(tr, va)
    assert det.hidden_size_ == 576 and len(det.model_.backbone_t.blocks) == 1
    s = det.score_points(te)
    assert np.isfinite(s).all() and s.std() > 0


def test_max_z_score_reduce_standardises_channels(tiny_llama, sets, tmp_path):
    import llmad.detectors

    tr, va, te = sets
    det = _det(tiny_llama, steps=10, stage2=False, score_reduce="max-z").fit(tr, va)
    med, iqr = (np.asarray(v) for v in det.channel_stats_)
    assert med.shape == (3,) and (iqr > 0).all() and det.name == "duallmad-nostage2-max-z"
    err = det._channel_errors(te)
    np.testing.assert_allclose(det.score_steps(te), ((err - med) / iqr).max(-1), rtol=1e-5)
    det.save(tmp_path / "d")
    np.testing.assert_allclose(llmad.detectors.load(tmp_path / "d").score_points(te), det.score_points(te),
                               rtol=1e-5)
    with pytest.raises(LlmadError, match="score_reduce"):
        _det(tiny_llama, score_reduce="median")
