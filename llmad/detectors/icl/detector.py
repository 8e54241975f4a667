"""In-context learning (ICL) with decoder LLMs: zero/one/few-shot prompts, label-word scoring, generation,
chain-of-thought, contextual calibration, LoRA tuning (trl SFTTrainer) and a prefix KV cache.

Follows the ICL part of LLM_AD (Jin et al., "Large Language Models for Anomaly Detection in Computational
Workflows", SC'24): a "system administration bot" task description, K labeled demonstrations, optional per-class
feature statistics, the query; optionally LoRA-tuned on prompt -> label completions. Where llmad differs:
- ``mode=score`` (default) does not parse free text: it compares the log-probabilities of the label words (every
  tokenization variant, summed over their tokens) and returns ``log P(Abnormal) - log P(Normal)`` as the score,
  thresholded on validation (the paper's protocol, the model's own argmax, is reported beside it).
- ``calibrate=content-free`` is contextual calibration (Zhao et al., ICML'21): the label probabilities of
  content-free queries (an empty job, a job of "N/A" values) estimate the prompt's prior, which is divided out.
- The task description and demonstrations are identical for every query, so their KV cache is computed once and
  reused for every batch of queries (``use_cache``); scores equal the naive re-encoding path (tested to 1e-4).
Job field values are data: they are rendered by the sandboxed job templates and concatenated as strings, never
evaluated as template code.

The pieces: ``config`` (options), ``demos`` (which demonstrations), ``prompt`` (assembly, prefix cut),
``scoring`` (forward passes, generation, calibration), ``cot`` (chain-of-thought decoding that ends in an answer),
``tuning`` (LoRA); this module holds the detector contract.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmad.detectors.base import Detector, read_detector_json, write_detector_json
from llmad.detectors.icl.config import ICLConfig
from llmad.detectors.icl.cot import ChainOfThought
from llmad.detectors.icl.demos import (class_statistics, demo_reasons, nearest_demos, nearest_pool,
                                       order_demonstrations, select_demonstrations, typical_values)
from llmad.detectors.icl.prompt import PromptBuilder
from llmad.detectors.icl.scoring import LabelScorer, parse_label
from llmad.detectors.icl.tuning import LoraTuner
from llmad.errors import LlmadError

FORMAT_VERSION = 1
DEMO_COLUMNS = ["text", "label", "job_id"]


@dataclass
class ICLDetector(PromptBuilder, LabelScorer, ChainOfThought, LoraTuner, Detector):
    """Detector contract over an ICL prompt; see the module docstring."""

    config: ICLConfig = field(default_factory=ICLConfig)
    name: str = "icl"
    kind = "icl"  # registry kind (a class attribute, not a dataclass field)
    # Called with the number of prompts scored after each batch (progress bars); set by the caller, never saved.
    on_scored = None

    def __post_init__(self) -> None:
        self.threshold_ = None
        self.lm_ = None
        self.demos_: pd.DataFrame | None = None
        self.stats_: list[dict] | None = None
        self.calibration_: dict[str, Any] | None = None
        self.pool_: dict[str, Any] | None = None
        self.tuning_: dict[str, Any] | None = None
        self.counters_: dict[str, int] = {}
        self._prefix_cache: dict[Any, Any] = {}
        self._variants: list[tuple[int, list[int]]] | None = None

    # ------------------------------------------------------------ model and texts
    @property
    def features(self) -> list[str]:
        """Numeric job features for demonstration statistics and nearest neighbours (a jobs: table's own ones)."""
        from llmad.data.flowbench import PAPER_FEATURES

        return list(getattr(self, "_features", None) or PAPER_FEATURES)

    def load_model(self, lm: Any = None) -> Any:
        """Load (or take) the decoder; a LoadedLM may be passed in (tests build tiny models)."""
        if lm is not None:
            self.lm_ = lm
        if self.lm_ is None:
            from llmad.models.causal_lm import load_causal_lm

            self.lm_ = load_causal_lm(self.config.model, load_in_4bit=self.config.load_in_4bit,
                                      trust_remote_code=self.config.trust_remote_code)
        if not self.lm_.has_chat_template:
            self._count("no_chat_template_prompts", 0)
        return self.lm_

    def render(self, jobs: pd.DataFrame) -> list[str]:
        """Jobs -> sentences with the configured job template (values are data)."""
        from llmad.render import render_jobs

        if len(jobs) == 0:
            return []
        return render_jobs(jobs, template=self.config.template)

    def _count(self, key: str, n: int = 1) -> None:
        self.counters_[key] = self.counters_.get(key, 0) + n

    # ------------------------------------------------------------ fit
    def fit(self, train: pd.DataFrame, validation: pd.DataFrame | None = None, lm: Any = None) -> "ICLDetector":
        """Pick demonstrations (train only), compute stats, LoRA-tune if asked, calibrate, set the threshold."""
        cfg = self.config.validate()
        if "label" not in train:
            raise LlmadError("the train part has no 'label' column")
        self.load_model(lm)
        feats = train.attrs.get("features")
        self._features = [f for f in feats if pd.api.types.is_numeric_dtype(train[f])] if feats else None
        self._prefix_cache = {}
        self._variants = None
        self.label_variants()  # fails early on unusable label words; counts odd tokenizations
        k = cfg.shots
        # CoT demonstrations carry a rationale from their own values (demos.demo_reasons says why).
        typical = typical_values(train, self.features) if cfg.mode == "cot" else None
        if cfg.select == "nearest":
            self.demos_ = train.iloc[:0]
            # Tuning draws its own neighbours even at shots 0: cot prompts need every pool row's rationale then.
            tunes = cfg.train_demos == "resample"
            reasons = demo_reasons(train, self.features, typical) if typical is not None and (k or tunes) else None
            self.pool_ = nearest_pool(train, self.features, self.render(train), reasons)
        else:
            demos = select_demonstrations(train, k, cfg.select, cfg.seed)
            demos = order_demonstrations(demos, cfg.order, cfg.seed)
            self.demos_ = pd.DataFrame({"text": self.render(demos), "label": demos["label"].astype(int).to_numpy(),
                                        "job_id": demos["job_id"].astype(str).to_numpy() if "job_id" in demos
                                        else [""] * len(demos)})
            if typical is not None:
                self.demos_["reason"] = demo_reasons(demos, self.features, typical)
        self.stats_ = class_statistics(train, self.features, cfg.label_words) if cfg.stats else None
        if cfg.lora_r > 0:
            self.tune(train)
        self.calibration_ = self.calibrate() if cfg.calibrate == "content-free" else None
        if cfg.mode == "score":
            if cfg.threshold == "argmax" or validation is None or len(validation) == 0:
                self.threshold_ = 0.0
            else:
                val_scores = self.score(validation)
                self.set_threshold(val_scores, validation["label"].to_numpy().astype(int))
        else:
            # Generated answers are already labels: abnormal scores 1, normal 0, unparseable 0.5 (counted).
            self.threshold_ = 1.0
        return self

    def neighbours(self, jobs: pd.DataFrame, k: int, exclude_self: bool = False) -> list[list[tuple[str, int]]]:
        """Per job, its ``k`` nearest train rows as (text, label) demonstrations (``select=nearest``)."""
        return nearest_demos(self.pool_, jobs, self.features, k, self.config.order, self.config.seed, exclude_self)

    # ------------------------------------------------------------ scoring
    def _queries(self, items: Any) -> tuple[list[str], list[list[tuple[str, int]]] | None]:
        if isinstance(items, pd.DataFrame):
            texts = self.render(items)
            own = None
            if self.config.select == "nearest" and self.config.shots > 0:
                own = self.neighbours(items, self.config.shots)
            return texts, own
        texts = [str(t) for t in items]
        if self.config.select == "nearest" and self.config.shots > 0:
            raise LlmadError("--select nearest needs job rows (features), not pre-rendered texts")
        return texts, None

    def score_details(self, items: Any, use_cache: bool | None = None, mode: str | None = None) -> pd.DataFrame:
        """Per job: score, P(abnormal), label mass, demonstrations kept; generate: the text; cot: the rationale, the
        answer, its source (generated | forced | none) and P(abnormal) at the answer position."""
        if self.lm_ is None:
            raise RuntimeError("ICLDetector is not fitted: call fit() first")
        mode = mode or self.config.mode
        texts, own = self._queries(items)
        n = len(texts)
        if n == 0:
            return pd.DataFrame(columns=["score", "p_abnormal", "label_mass", "demos_kept"])
        groups, kept = self.prepare(texts, mode=mode, own_demos=own)
        kept_arr = np.asarray(kept)
        if mode == "score":
            lp = self.label_logprobs(groups, n, use_cache=use_cache, progress=self.on_scored)
            raw = lp[:, 1] - lp[:, 0]
            shift = self.calibration_["log_prior_ratio"] if self.calibration_ else 0.0
            score = raw - shift
            # Queries that could not be scored are undecided (logit 0), never a crash.
            score = np.where(np.isfinite(score), score, 0.0)
            ok = np.isfinite(lp).all(axis=1)
            mass = np.full(n, np.nan)
            mass[ok] = np.exp(np.logaddexp(lp[ok, 0], lp[ok, 1]))
            df = pd.DataFrame({"score": score, "raw_logit": raw, "p_abnormal": 1 / (1 + np.exp(-score)),
                               "label_mass": mass, "demos_kept": kept_arr})
            self._count("scored", n)
            return df
        if mode == "cot":
            gen = self.reason(groups, n, use_cache=use_cache, progress=self.on_scored)
            ans = self.answer(groups, gen, n, use_cache=use_cache)
            parsed = ans["parsed"]
            self._count("generated", n)
            self._count("unparseable", int(np.sum(parsed < 0)))
            # The decision is the answer (threshold 1.0, as generate mode); p_abnormal ranks the rows.
            return pd.DataFrame({"score": np.where(parsed < 0, 0.5, parsed).astype(float), "parsed": parsed,
                                 "answer": ans["answer"], "answer_source": ans["answer_source"],
                                 "p_abnormal": ans["p_abnormal"], "rationale": ans["rationale"],
                                 "demos_kept": kept_arr})
        gen = self.generate(groups, n, mode=mode, use_cache=use_cache, progress=self.on_scored)
        parsed = [parse_label(t, self.config.label_words) if t is not None else None
                  for t in gen]
        unparsed = sum(p is None for p in parsed)
        self._count("generated", n)
        self._count("unparseable", unparsed)
        score = np.array([0.5 if p is None else float(p) for p in parsed])
        return pd.DataFrame({"score": score, "parsed": [-1 if p is None else p for p in parsed],
                             "generation": [t or "" for t in gen], "demos_kept": kept_arr})

    def score(self, items: Any) -> np.ndarray:
        """Anomaly scores: calibrated log-odds of the abnormal label word (score mode) or parsed labels."""
        return self.score_details(items)["score"].to_numpy(dtype=float)

    # ------------------------------------------------------------ persistence
    def info(self) -> dict[str, Any]:
        """What the run did: counters, calibration, tuning, the demonstrations used."""
        return {"counters": dict(self.counters_), "calibration": self.calibration_, "tuning": self.tuning_,
                "demonstrations": [] if self.demos_ is None else self.demos_.to_dict(orient="records"),
                "chat_template": bool(self.lm_ and self.lm_.has_chat_template),
                "label_variants": [] if self.lm_ is None else
                [{"label": self.config.label_words[c], "token_ids": v,
                  "tokens": self.lm_.tokenizer.convert_ids_to_tokens(v)} for c, v in self.label_variants()],
                "threshold": self.threshold_}

    def save(self, path: str | Path) -> None:
        """``detector.json`` (kind, config, threshold, calibration, label variants ...), ``demonstrations.json``,
        the nearest-neighbour pool (``pool.safetensors`` + ``pool.json``) and the LoRA ``adapter/`` when tuned.

        Each file is written atomically and ``detector.json`` last, so its presence means the folder is complete.
        Other files in ``path`` are kept (benchmarks keep their scores beside the model)."""
        import shutil

        from llmad.io import atomic_dir, atomic_path, write_json

        if self.lm_ is None:
            raise RuntimeError("ICLDetector is not fitted: call fit() first")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "detector.json").unlink(missing_ok=True)  # the folder is incomplete until the end
        write_json(path / "demonstrations.json",
                   [] if self.demos_ is None else self.demos_.to_dict(orient="records"))
        files = {"demonstrations": "demonstrations.json"}
        if self.pool_ is not None:
            from safetensors.numpy import save_file

            with atomic_path(path / "pool.safetensors") as tmp:
                save_file({"x": self.pool_["x"], "mu": self.pool_["mu"], "sd": self.pool_["sd"],
                           "labels": self.pool_["labels"].astype(np.int64)}, str(tmp))
            write_json(path / "pool.json", {"texts": self.pool_["texts"],
                                            **({"reasons": self.pool_["reasons"]} if "reasons" in self.pool_ else {})})
            files["pool"] = "pool.safetensors"
        else:
            for stale in ("pool.safetensors", "pool.json"):
                (path / stale).unlink(missing_ok=True)
        model = self.lm_.model
        if self.tuning_ is not None and hasattr(model, "save_pretrained") and hasattr(model, "peft_config"):
            with atomic_dir(path / "adapter") as tmp:
                model.save_pretrained(str(tmp))
            files["adapter"] = "adapter"
        elif (path / "adapter").is_dir():
            shutil.rmtree(path / "adapter")  # an older save's adapter must not be applied to this model
        info = self.info()
        write_detector_json(path, "icl", {
            "format": FORMAT_VERSION, "config": asdict(self.config), "threshold": self.threshold_,
            "calibration": self.calibration_, "stats": self.stats_, "tuning": self.tuning_,
            "label_variants": info["label_variants"], "chat_template": info["chat_template"],
            "counters": info["counters"], "files": files})

    @classmethod
    def load(cls, path: str | Path, lm: Any = None) -> "ICLDetector":
        """Rebuild a detector saved by ``save``: re-opens the base model by ``config.model`` (or takes ``lm``) and
        applies the saved adapter. Also reads the older single-file layout (``icl.json``)."""
        path = Path(path)
        legacy = not (path / "detector.json").is_file() and (path / "icl.json").is_file()
        state = json.loads((path / "icl.json").read_text()) if legacy else read_detector_json(path)
        if not legacy and state.get("kind") != "icl":
            raise LlmadError(f"{path}: detector.json is of kind {state.get('kind')!r}, not icl")
        cfg_d = dict(state["config"])
        cfg_d["label_words"] = tuple(cfg_d["label_words"])
        known = {f.name for f in fields(ICLConfig)}
        det = cls(config=ICLConfig(**{k: v for k, v in cfg_d.items() if k in known}))
        det.load_model(lm)
        if (path / "adapter").is_dir():
            from peft import PeftModel

            det.lm_.model = PeftModel.from_pretrained(det.lm_.model, str(path / "adapter"))
            det.lm_.model.eval()
        det.threshold_ = state["threshold"]
        det.calibration_ = state["calibration"]
        det.stats_ = state["stats"]
        det.tuning_ = state["tuning"]
        demos = state["demonstrations"] if legacy else json.loads((path / "demonstrations.json").read_text())
        det.demos_ = pd.DataFrame(demos, columns=DEMO_COLUMNS + (["reason"] if demos and "reason" in demos[0] else []))
        if (path / "pool.safetensors").is_file():
            from safetensors.numpy import load_file

            arr = load_file(str(path / "pool.safetensors"))
            pool_json = {"texts": state["pool_texts"]} if legacy else json.loads((path / "pool.json").read_text())
            det.pool_ = {**arr, **pool_json}
        return det
