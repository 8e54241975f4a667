"""The detector contract, run over every registered kind (as scikit-learn's ``check_estimator`` runs over estimators).

For each kind in ``llmad.detectors.base.KINDS``: params round-trip through the constructor; ``fit`` returns self and
sets ``threshold_`` from validation only; scores are finite and higher on an easy planted anomaly;
``predict == score >= threshold_``; ``save`` then ``llmad.detectors.load`` gives identical scores; ``detector.json``
names the registered kind. A kind registered without a case here fails ``test_every_kind_has_a_case``.
Models are tiny and built here (tiny BERT, small MOMENT and Lag-Llama, a 2-layer Llama for DualLMAD); ICL runs
the offline SmolLM2-135M.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from numeric_fixtures import synthetic, window_sets  # noqa: E402

from conftest import make_tiny_bert, synthetic_jobs  # noqa: E402

import llmad.detectors  # noqa: E402
from llmad.detectors.base import KINDS, LEGACY_CLASSES, detector_class  # noqa: E402
from llmad.metrics.classification import choose_threshold  # noqa: E402


@dataclass
class Case:
    """How to build, fit and probe one detector variant."""

    kind: str
    make: Callable[[Path], Any]  # work dir -> unfitted detector
    data: Callable[[], tuple[Any, Any, Any]]  # -> (train, validation, test)
    plant: Callable[[Any], tuple[Any, Any]]  # test -> (normal items, the same items with an obvious anomaly)
    windows: bool = False  # a WindowDetector: thresholds and scores on validation/test *points*
    fit_kw: Callable[[Path], dict[str, Any]] = lambda work: {}
    rtol: float = 0.0  # save/load score tolerance (0: identical)


# ------------------------------------------------------------------------------------------------ job tables
def job_parts():
    return synthetic_jobs(240, 0), synthetic_jobs(80, 1), synthetic_jobs(80, 2)


def planted_jobs(runtime: float):
    """Normal test jobs, and the same jobs with ``runtime`` (and CPU time) of an anomaly."""
    def plant(test: pd.DataFrame):
        normal = test[test["label"] == 0].head(8).reset_index(drop=True)
        bad = normal.copy()
        bad["runtime"] = runtime
        bad["kickstart_executables_cpu_time"] = 0.9 * runtime
        return normal, bad
    return plant


def baseline_case(method: str) -> Case:
    from llmad.detectors.baselines import BaselineDetector

    # iforest is unsupervised and train holds 40% anomalies: plant one far outside both clusters
    return Case("baseline", lambda work: BaselineDetector(method, "plain", n_estimators=30), job_parts,
                planted_jobs(20000.0 if method == "iforest" else 950.0))


def sft_case() -> Case:
    try:
        from llmad.detectors.sft.config import SFTConfig
    except ImportError:
        from llmad.detectors.sft.detector import SFTConfig

    def make(work: Path):
        bert = make_tiny_bert(work / "tiny-bert")
        cfg = SFTConfig(model=str(bert), template="compact", max_length=48, epochs=3, lr=3e-3, batch_size=16,
                        eval_batch_size=64, freeze="none", early_stopping_patience=0, progress=False,
                        logging_steps=1000, seed=0)
        return detector_class("sft")(cfg)

    return Case("sft", make, job_parts, planted_jobs(950.0),
                fit_kw=lambda work: {"output_dir": work / "fit", "printer": lambda s: None})


def nll_case() -> Case:
    from llmad.detectors.nll.config import NLLConfig
    from nll_fixtures import tiny_nll_lm

    def make(work: Path):
        lm = tiny_nll_lm(work.parent / "tiny-nll-lm")
        return detector_class("nll")(config=NLLConfig(
            model=str(lm), fields="paper", epochs=3, learning_rate=1e-2, batch_size=16, permutations=2, lora_r=0,
            threshold="validation", threshold_rows=64, progress=False))

    # label-free: train holds 40% runtime-900s anomalies, so plant a value far outside anything seen
    return Case("nll", make, job_parts, planted_jobs(20000.0), rtol=1e-5)


def stack_case() -> Case:
    from llmad.detectors.sft.config import SFTConfig

    def make(work: Path):
        bert = make_tiny_bert(work / "tiny-bert")
        cfg = SFTConfig(model=str(bert), template="compact", max_length=48, epochs=1, lr=3e-3, batch_size=32,
                        eval_batch_size=64, freeze="none", early_stopping_patience=0, progress=False,
                        logging_steps=1000, seed=0)
        return detector_class("fusion-stack")(cfg, folds=2, tree="hgb", n_estimators=50)

    return Case("fusion-stack", make, job_parts, planted_jobs(950.0),
                fit_kw=lambda work: {"output_dir": work / "fit", "printer": lambda s: None})


def proto_case() -> Case:
    def data():
        tr, va, te = job_parts()
        # meta-training needs >= 2 source workflows: the synthetic runs split into two
        tr["workflow"] = np.where(tr["run_id"].str[-1].astype(int) % 2 == 0, "synth-a", "synth-b")
        return tr, va, te

    return Case("proto", lambda work: detector_class("proto")(
        encoder=str(make_tiny_bert(work / "tiny-bert")), episodes=40, episode_jobs=64, hidden=32, dim=16), data,
        planted_jobs(950.0), rtol=1e-5)


def icl_case() -> Case:
    from llmad.detectors.icl.config import ICLConfig

    def data():  # small parts: every query is one forward pass of a 135M model on CPU
        return synthetic_jobs(120, 0), synthetic_jobs(12, 1), synthetic_jobs(12, 2)

    # nearest-neighbour demonstrations: the model only has to copy the label of near-identical jobs
    return Case("icl", lambda work: detector_class("icl")(config=ICLConfig(
        model="smollm2-135m", shots=2, select="nearest", template="compact", batch_size=8)), data,
        planted_jobs(950.0), rtol=1e-5)


# ------------------------------------------------------------------------------------------------ windows
def window_parts():
    return window_sets(length=32, stride=16)


def planted_windows(test):
    """Clean test windows, and the same windows with a level shift of 8 (z-units) on 8 steps of every channel."""
    x = test.windows()[test.window_labels() == 0][:8]
    bad = x.copy()
    bad[:, 12:20, :] += 8.0
    return x, bad


def window_case(kind: str, make: Callable[[Path], Any], data=window_parts, rtol: float = 0.0) -> Case:
    return Case(kind, make, data, planted_windows, windows=True, rtol=rtol)


def forest_parts():
    from llmad.data.windows import ZScore, make_windows

    _, va, te = window_parts()
    # supervised: a labelled pool with anomalous windows (the clean train part has none)
    pool = make_windows([synthetic(240, anomalies=(60, 170), seed=1)], ZScore().fit([synthetic(400)]), 32, 2)
    return pool, va, te


def tiny_moment(work: Path):
    from llmad.detectors.moment import MomentDetector, build_moment, small_moment_config

    path = work / "tiny-moment"
    build_moment(small_moment_config(seq_len=32, d_model=16, n_layers=2, n_heads=2, d_ff=32)).save_pretrained(
        str(path))
    return MomentDetector(model=str(path), finetune="probe", max_steps=30, lr=1e-2, batch_size=32)


def tiny_lagllama(work: Path):
    from llmad.detectors.lagllama import LagLlamaDetector, build_small_lagllama

    lags = [0, 1, 2, 3, 6, 11, 19]
    xh, _ = window_parts()[0].windows_with_history(max(lags) + 16)
    ckpt = build_small_lagllama(work / "lag-llama.ckpt", context_length=16, n_layer=1, n_head=2, n_embd_per_head=8,
                                lags_seq=lags, train_windows=xh, steps=5, batch_size=16, lr=3e-3)
    return LagLlamaDetector(model=str(ckpt))


def tiny_duallmad(work: Path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmad.detectors.duallmad import DualLMADDetector

    path = work.parent / "tiny-duallmad-llama"
    if not (path / "config.json").is_file():
        torch.manual_seed(7)
        LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=2, vocab_size=64, max_position_embeddings=64)
                         ).save_pretrained(str(path))
    return DualLMADDetector(backbone=str(path), steps=40, stage2_steps=10, batch_size=16, lr=1e-2, device="cpu")


def tiny_window_nll(work: Path):
    from llmad.detectors.nll.config import NLLConfig
    from llmad.detectors.nll.detector import WindowNLLDetector
    from nll_fixtures import tiny_nll_lm

    lm = tiny_nll_lm(work.parent / "tiny-nll-lm")
    return WindowNLLDetector(config=NLLConfig(model=str(lm), template="window", epochs=20, learning_rate=1e-2,
                                              batch_size=16, permutations=1, lora_r=0, threshold_rows=32,
                                              progress=False))


def window_cases() -> dict[str, list[tuple[str, Case]]]:
    from llmad.detectors.windows import ForestDetector, IForestDetector, LSTMAEDetector

    return {
        "window-iforest": [("iforest", window_case("window-iforest", lambda w: IForestDetector(n_estimators=50)))],
        "window-forest": [(m, window_case("window-forest", lambda w, m=m: ForestDetector(m, n_estimators=30),
                                          data=forest_parts)) for m in ("rf", "hgb")],
        "lstm-ae": [("lstm-ae", window_case("lstm-ae", lambda w: LSTMAEDetector(
            hidden=8, epochs=10, max_steps=60, batch_size=16, lr=1e-2), rtol=1e-5))],
        "moment": [("probe", window_case("moment", tiny_moment, rtol=1e-4))],
        "lagllama": [("tiny", window_case("lagllama", tiny_lagllama, rtol=1e-4))],
        "duallmad": [("tiny-llama", window_case("duallmad", tiny_duallmad, rtol=1e-5))],
        "window-nll": [("tiny", window_case("window-nll", tiny_window_nll, rtol=1e-5))],
    }


def all_cases() -> dict[str, list[tuple[str, Case]]]:
    return {"baseline": [(m, baseline_case(m)) for m in ("rf", "hgb", "iforest", "knn")],
            "sft": [("tiny-bert", sft_case())], "fusion-stack": [("tiny-bert", stack_case())],
            "icl": [("smollm2-nearest", icl_case())], "nll": [("tiny-llama", nll_case())],
            "proto": [("tiny-bert", proto_case())], **window_cases()}


CASES = all_cases()
IDS = [f"{kind}-{variant}" for kind in KINDS for variant, _ in CASES.get(kind, [])]
BY_ID = {f"{kind}-{variant}": case for kind, cases in CASES.items() for variant, case in cases}


def test_every_kind_has_a_case():
    missing = [k for k in KINDS if not CASES.get(k)]
    assert not missing, f"registered detector kinds without a contract case in {__file__}: {missing}"
    assert set(CASES) <= set(KINDS), f"cases for unregistered kinds: {sorted(set(CASES) - set(KINDS))}"
    for kind in KINDS:
        assert detector_class(kind).kind == kind, f"{KINDS[kind]}.kind must be {kind!r}"
    assert set(LEGACY_CLASSES.values()) <= set(KINDS)


# ------------------------------------------------------------------------------------------------ fitted once
class Fitted:
    """One fitted detector per case (fitting is the slow part), shared by the checks below."""

    def __init__(self, case: Case, work: Path):
        self.case, self.work = case, work
        self._cache: dict[tuple[int, int], np.ndarray] = {}
        self.train, self.validation, self.test = case.data()
        self.unfitted = case.make(work)
        self.det = self.unfitted.fit(self.train, self.validation, **case.fit_kw(work))

    def scores(self, det, items) -> np.ndarray:
        """Per-item (per-point for windows) scores; the fitted detector's are computed once per part."""
        key = (id(det), id(items))
        if det is not self.det or key not in self._cache:
            s = np.asarray(det.score_points(items) if self.case.windows else det.score(items), dtype=float)
            if det is not self.det:
                return s
            self._cache[key] = s
        return self._cache[key]

    def labels(self, items) -> np.ndarray:
        return items.point_labels() if self.case.windows else items["label"].to_numpy()


_FITTED: dict[str, Fitted] = {}


@pytest.fixture
def fitted(request, tmp_path_factory) -> Fitted:
    cid = request.param
    if cid not in _FITTED:
        _FITTED[cid] = Fitted(BY_ID[cid], tmp_path_factory.mktemp(cid.replace("/", "_")))
    return _FITTED[cid]


def _params():
    return pytest.mark.parametrize("fitted", IDS, indirect=True)


# ------------------------------------------------------------------------------------------------ the contract
@pytest.mark.parametrize("cid", IDS)
def test_params_round_trip_through_the_constructor(cid, tmp_path):
    det = BY_ID[cid].make(tmp_path)
    params = det.get_params()
    again = type(det)(**params)
    assert again.get_params() == params
    assert not any(k.endswith("_") for k in params), "fitted state leaked into get_params"


@_params()
def test_fit_returns_self_and_thresholds_on_validation_only(fitted):
    assert fitted.det is fitted.unfitted
    val_scores = fitted.scores(fitted.det, fitted.validation)
    assert fitted.det.threshold_ == choose_threshold(fitted.labels(fitted.validation), val_scores)
    before = fitted.det.threshold_
    fitted.scores(fitted.det, fitted.test)  # scoring test data never moves the threshold
    assert fitted.det.threshold_ == before


@_params()
def test_scores_finite_and_higher_on_a_planted_anomaly(fitted):
    s = fitted.scores(fitted.det, fitted.test)
    assert np.isfinite(s).all() and s.std() > 0
    normal, bad = fitted.case.plant(fitted.test)
    sn, sb = np.asarray(fitted.det.score(normal)), np.asarray(fitted.det.score(bad))
    assert np.isfinite(sn).all() and np.isfinite(sb).all()
    assert sb.mean() > sn.mean(), f"planted anomalies scored {sb.mean():.4g}, normal items {sn.mean():.4g}"


@_params()
def test_predict_is_score_at_or_above_threshold(fitted):
    det, test = fitted.det, fitted.test
    s = fitted.scores(det, test) if not fitted.case.windows else np.asarray(det.score(test))
    np.testing.assert_array_equal(det.predict(test), (s >= det.threshold_).astype(int))
    if fitted.case.windows:
        np.testing.assert_array_equal(det.predict_points(test),
                                      (det.score_points(test) >= det.threshold_).astype(int))


@_params()
def test_save_then_load_gives_identical_scores_and_a_registered_kind(fitted):
    path = fitted.work / "saved"
    fitted.det.save(path)
    meta = json.loads((path / "detector.json").read_text())
    assert meta["kind"] == fitted.case.kind and meta["kind"] in KINDS
    again = llmad.detectors.load(path)
    assert type(again) is type(fitted.det) and again.threshold_ == fitted.det.threshold_
    a, b = fitted.scores(again, fitted.test), fitted.scores(fitted.det, fitted.test)
    if fitted.case.rtol:
        np.testing.assert_allclose(a, b, rtol=fitted.case.rtol, atol=1e-7)
    else:
        np.testing.assert_array_equal(a, b)


def test_legacy_window_files_with_class_still_load(tmp_path):
    from llmad.detectors.windows import IForestDetector

    tr, va, te = window_parts()
    det = IForestDetector(n_estimators=10).fit(tr, va)
    det.save(tmp_path / "d")
    meta = json.loads((tmp_path / "d" / "detector.json").read_text())
    legacy = {"class": "IForestDetector", **{k: v for k, v in meta.items() if k != "kind"}}
    (tmp_path / "d" / "detector.json").write_text(json.dumps(legacy))
    again = llmad.detectors.load(tmp_path / "d")
    np.testing.assert_array_equal(again.score_points(te), det.score_points(te))
    assert llmad.detectors.load_detector is llmad.detectors.load
