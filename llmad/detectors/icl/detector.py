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
"""
from __future__ import annotations

import inspect
import json
import logging
import math
import re
import uuid
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from llmad.detectors.base import Detector
from llmad.errors import LlmadError

log = logging.getLogger(__name__)

SELECTIONS = ("random", "balanced", "negative", "positive", "nearest")
ORDERS = ("shuffled", "fixed")
MODES = ("score", "generate", "cot")
CALIBRATIONS = ("none", "content-free")
THRESHOLDS = ("validation", "argmax")
TRAIN_DEMOS = ("fixed", "resample")


@dataclass
class ICLConfig:
    """Options of ``llmad icl`` (one field per CLI option)."""

    model: str = "smollm2-135m"
    shots: int = 4
    select: str = "balanced"
    order: str = "shuffled"
    stats: bool = False
    mode: str = "score"
    calibrate: str = "none"
    template: str = "paper"  # job template (prompts/job/<name>.j2 or a path)
    label_words: tuple[str, str] = ("Normal", "Abnormal")
    case_variants: bool = False  # also score "normal"/"abnormal" (more label sequences, slower)
    threshold: str = "validation"  # validation | argmax (score mode; generate/cot use the parsed label)
    load_in_4bit: bool = False
    lora_r: int = 0
    lora_alpha: int | None = None
    train_examples: int = 64
    train_steps: int | None = None  # None: one pass over train_examples
    train_batch_size: int = 4
    learning_rate: float = 2e-4
    train_shots: int | None = None  # demonstrations in tuning prompts; None: the same as ``shots``
    # fixed: every tuning prompt has the run's demonstrations; resample: each tuning prompt draws its own
    # (0..train_shots of them, with ``select``, from train rows that are not tuning examples), so that one
    # adapter serves zero-, one- and few-shot prompts alike.
    train_demos: str = "fixed"
    train_budget_s: float | None = None  # stop tuning after this many seconds (the steps done are recorded)
    # LoRA on the last N decoder layers only (None: all): the backward pass then stops there, which makes a
    # CPU tuning step about twice as cheap on a 30-layer model.
    lora_layers: int | None = None
    batch_size: int = 8
    use_cache: bool = True
    max_new_tokens: int = 8
    cot_max_new_tokens: int = 160
    max_prompt_tokens: int | None = None  # None: the model's context window
    seed: int = 0
    trust_remote_code: bool = False

    def validate(self) -> "ICLConfig":
        """Check option values; raise LlmadError with the allowed values."""
        for name, allowed in (("select", SELECTIONS), ("order", ORDERS), ("mode", MODES),
                              ("calibrate", CALIBRATIONS), ("threshold", THRESHOLDS),
                              ("train_demos", TRAIN_DEMOS)):
            if getattr(self, name) not in allowed:
                raise LlmadError(f"--{name} {getattr(self, name)!r}: expected one of {', '.join(allowed)}")
        if self.shots < 0:
            raise LlmadError("--shots must be >= 0")
        if self.lora_r < 0 or self.train_examples < 0:
            raise LlmadError("--lora and --train-examples must be >= 0")
        if len(self.label_words) != 2 or not all(str(w).strip() for w in self.label_words):
            raise LlmadError("label words: expected two non-empty words (normal, abnormal)")
        if self.label_words[0].strip().lower() == self.label_words[1].strip().lower():
            raise LlmadError("label words must differ")
        if self.calibrate != "none" and self.mode != "score":
            raise LlmadError("--calibrate content-free corrects label probabilities: use it with --mode score")
        if self.calibrate != "none" and self.select == "nearest" and self.shots > 0:
            raise LlmadError("--calibrate content-free needs one prompt for all jobs; --select nearest builds one "
                             "per job (use random, balanced, negative or positive)")
        self.label_words = tuple(str(w).strip() for w in self.label_words)  # type: ignore[assignment]
        return self


# ---------------------------------------------------------------- demonstrations and statistics

def select_demonstrations(train: pd.DataFrame, k: int, how: str, seed: int = 0) -> pd.DataFrame:
    """K train rows for a fixed prompt: random | balanced (half each class) | negative | positive."""
    rng = np.random.default_rng(seed)
    if k == 0 or len(train) == 0:
        return train.iloc[:0]
    normal = np.flatnonzero(train["label"].to_numpy() == 0)
    abnormal = np.flatnonzero(train["label"].to_numpy() == 1)

    def take(idx: np.ndarray, n: int, what: str) -> np.ndarray:
        if n > len(idx):
            raise LlmadError(f"--select {how}: {n} {what} demonstrations requested, the train part has {len(idx)}")
        return rng.choice(idx, size=n, replace=False)

    if how == "random":
        chosen = take(np.arange(len(train)), k, "")
    elif how == "negative":
        chosen = take(normal, k, "normal")
    elif how == "positive":
        chosen = take(abnormal, k, "abnormal")
    elif how == "balanced":
        n_ab = k // 2
        # Normal first so that the fixed order alternates classes from a predictable start.
        chosen = np.concatenate([take(normal, k - n_ab, "normal"), take(abnormal, n_ab, "abnormal")])
        if n_ab:
            inter = np.empty(k, dtype=int)
            nn = chosen[:k - n_ab]
            aa = chosen[k - n_ab:]
            inter[0:2 * n_ab:2] = nn[:n_ab]
            inter[1:2 * n_ab:2] = aa
            inter[2 * n_ab:] = nn[n_ab:]
            chosen = inter
    else:
        raise LlmadError(f"unknown selection {how!r}")
    return train.iloc[chosen]


def order_demonstrations(demos: pd.DataFrame, order: str, seed: int = 0) -> pd.DataFrame:
    """Shuffle the demonstrations (seeded) or keep the selection order."""
    if order == "shuffled" and len(demos) > 1:
        return demos.iloc[np.random.default_rng(seed + 1).permutation(len(demos))]
    return demos


def feature_matrix(jobs: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    """log1p of the numeric features, missing as -1 (the nearest-neighbour space)."""
    cols = [pd.to_numeric(jobs[f], errors="coerce") if f in jobs else pd.Series(np.nan, index=jobs.index)
            for f in features]
    x = np.column_stack([c.to_numpy(dtype=float) for c in cols]) if cols else np.zeros((len(jobs), 0))
    x = np.sign(x) * np.log1p(np.abs(x))
    return np.where(np.isfinite(x), x, -1.0)


def class_statistics(train: pd.DataFrame, features: Sequence[str], label_words: Sequence[str]) -> list[dict]:
    """Per-class count, mean and std of each feature on the train part (for the stats prompt)."""
    out = []
    for cls, word in ((0, label_words[0]), (1, label_words[1])):
        part = train[train["label"] == cls]
        feats = []
        for f in features:
            v = pd.to_numeric(part[f], errors="coerce") if f in part else pd.Series(dtype=float)
            feats.append({"name": f, "mean": float(v.mean()) if v.notna().any() else float("nan"),
                          "std": float(v.std()) if v.notna().sum() > 1 else float("nan")})
        out.append({"label": word, "count": int(len(part)), "features": feats})
    return out


# ---------------------------------------------------------------- parsing generated text

def parse_label(text: str, label_words: Sequence[str] = ("Normal", "Abnormal"), cot: bool = False) -> int | None:
    """1 abnormal, 0 normal, None when the text states no label (CoT: the final 'Answer:' wins)."""
    normal, abnormal = (re.escape(w.lower()) for w in label_words)
    ab = rf"(?:{abnormal}|anomalous|anomaly|not\s+normal)"
    lab = rf"(?P<ab>{ab})|(?P<no>{normal}|not\s+(?:anomalous|{abnormal}))"
    low = text.lower()
    if cot:
        answers = list(re.finditer(rf"answer\W*\s*(?:{lab})", low))
        if answers:
            return 1 if answers[-1].group("ab") else 0
    hits = list(re.finditer(rf"\b(?:{lab})\b", low))
    if not hits:
        return None
    hit = hits[-1] if cot else hits[0]
    return 1 if hit.group("ab") else 0


# ---------------------------------------------------------------- KV cache helpers

def _base_model(model: Any) -> Any:
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def cache_kwarg(model: Any) -> str:
    """The forward/generate keyword for a KV cache: ``cache`` in recent transformers, ``past_key_values`` before."""
    params = inspect.signature(_base_model(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def model_cache(output: Any) -> Any:
    """The KV cache a forward pass returned (``cache`` or ``past_key_values``)."""
    c = getattr(output, "cache", None)
    return c if c is not None else getattr(output, "past_key_values", None)


def cache_tensors(cache: Any) -> list[tuple[Any, Any]]:
    """Per-layer (keys, values) of a DynamicCache."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def build_cache(kv: list[tuple[Any, Any]], batch: int) -> Any:
    """A DynamicCache over ``kv`` broadcast to ``batch`` rows without copying; updates concatenate into new tensors."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    def grow(t):
        return t if t.shape[0] == batch else t.expand(batch, *t.shape[1:])

    cache = DynamicCache()
    # Filling the layers directly skips the copy DynamicCache(ddp_cache_data=...) makes: the first update's
    # concatenation is then the only copy of the prefix per batch.
    layers = []
    for k, v in kv:
        layer = DynamicLayer()
        layer.lazy_initialization(k, v)
        layer.keys, layer.values = grow(k), grow(v)
        layers.append(layer)
    cache.layers = layers
    return cache


# ---------------------------------------------------------------- prompt frame

@dataclass
class PromptFrame:
    """A prompt cut where the per-job text goes: prefix + [demos_i + middle] + query + suffix."""

    prefix: str
    middle: str
    suffix: str
    chat: bool


@dataclass
class _Prepared:
    """Token ids of one prompt group sharing a prefix."""

    prefix_ids: list[int]
    rows: list[int]
    seqs: list[list[int]]
    prefix_text: str = ""
    bodies: list[str] = field(default_factory=list)


@dataclass
class ICLDetector(Detector):
    """Detector contract over an ICL prompt; see the module docstring."""

    config: ICLConfig = field(default_factory=ICLConfig)
    name: str = "icl"

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
        from llmad.data.flowbench import PAPER_FEATURES

        return list(PAPER_FEATURES)

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
        self._prefix_cache = {}
        self._variants = None
        self.label_variants()  # fails early on unusable label words; counts odd tokenizations
        k = cfg.shots
        if cfg.select == "nearest":
            self.demos_ = train.iloc[:0]
            x = feature_matrix(train, self.features)
            mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-6
            self.pool_ = {"x": (x - mu) / sd, "mu": mu, "sd": sd, "texts": self.render(train),
                          "labels": train["label"].to_numpy().astype(int)}
        else:
            demos = select_demonstrations(train, k, cfg.select, cfg.seed)
            demos = order_demonstrations(demos, cfg.order, cfg.seed)
            self.demos_ = pd.DataFrame({"text": self.render(demos), "label": demos["label"].astype(int).to_numpy(),
                                        "job_id": demos["job_id"].astype(str).to_numpy() if "job_id" in demos
                                        else [""] * len(demos)})
        self.stats_ = class_statistics(train, self.features, cfg.label_words) if cfg.stats else None
        if cfg.lora_r > 0:
            self._tune(train)
        self.calibration_ = self._calibrate() if cfg.calibrate == "content-free" else None
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

    # ------------------------------------------------------------ prompt building
    def _system_text(self, cot: bool) -> str:
        from llmad.render import render_file

        normal, abnormal = self.config.label_words
        text = render_file("task", kind="icl", normal=normal, abnormal=abnormal, cot=cot).strip()
        if self.stats_:
            text += "\n\n" + render_file("stats", kind="icl", classes=self.stats_).strip()
        return text

    def demos_text(self, demos: Sequence[tuple[str, int]]) -> str:
        """Render (text, label) demonstrations with prompts/icl/demos.j2."""
        from llmad.render import render_file

        words = self.config.label_words
        return render_file("demos", kind="icl", demos=[{"text": t, "label": words[int(y)]} for t, y in demos])

    def frame(self, shared_demos: Sequence[tuple[str, int]] | None, per_query_demos: bool = False,
              mode: str | None = None) -> PromptFrame:
        """Build the prompt around sentinels and cut it where the per-job part goes."""
        from llmad.render import render_file

        mode = mode or self.config.mode
        cot = mode == "cot"
        q_sent = f"\u27e6Q{uuid.uuid4().hex}\u27e7"
        d_sent = f"\u27e6D{uuid.uuid4().hex}\u27e7"
        query_block = render_file("query", kind="icl", query=q_sent).rstrip()
        if per_query_demos:
            user = d_sent + query_block
        else:
            user = (self.demos_text(shared_demos or [])) + query_block
        system = self._system_text(cot)
        cue = "Reasoning:" if cot else "Answer:"
        tok = self.lm_.tokenizer
        chat = bool(getattr(tok, "chat_template", None))
        if chat:
            msgs = [{"role": "system", "content": system}, {"role": "user", "content": user}]
            try:
                text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            except Exception:
                # Some chat templates (Mistral, Llama-2 variants) reject a system turn: fold it into the user turn.
                msgs = [{"role": "user", "content": system + "\n\n" + user}]
                text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            text = text + cue
        else:
            text = system + "\n\n" + user + "\n" + cue
        first = d_sent if per_query_demos else q_sent
        if text.count(first) != 1 or text.count(q_sent) != 1:
            raise LlmadError("the ICL prompt template must contain the query exactly once")
        prefix, rest = text.split(first)
        middle = ""
        if per_query_demos:
            middle, rest = rest.split(q_sent)
        return PromptFrame(prefix=prefix, middle=middle, suffix=rest, chat=chat)

    def _encode(self, text: str, first: bool) -> list[int]:
        tok = self.lm_.tokenizer
        chat = bool(getattr(tok, "chat_template", None))
        # The chat template writes its own special tokens; plain prompts get the tokenizer's BOS once, at the start.
        return list(tok(text, add_special_tokens=(first and not chat))["input_ids"])

    def _neighbours(self, jobs: pd.DataFrame, k: int, exclude_self: bool = False) -> list[list[tuple[str, int]]]:
        from sklearn.neighbors import NearestNeighbors

        pool = self.pool_
        x = (feature_matrix(jobs, self.features) - pool["mu"]) / pool["sd"]
        n = min(len(pool["x"]), k + int(exclude_self))
        if n == 0:
            return [[] for _ in range(len(jobs))]
        nn = NearestNeighbors(n_neighbors=n).fit(pool["x"])
        _, idx = nn.kneighbors(x)
        out = []
        rng = np.random.default_rng(self.config.seed + 2)
        for row in idx:
            row = list(row[1:] if exclude_self else row)[:k]
            # Nearest last, right before the query (KATE's finding); shuffled mixes them.
            row = row[::-1] if self.config.order == "fixed" else list(rng.permutation(row))
            out.append([(pool["texts"][j], int(pool["labels"][j])) for j in row])
        return out

    def _budget(self, mode: str) -> int:
        from llmad.models.causal_lm import context_window

        window = self.config.max_prompt_tokens or context_window(self.lm_.model)
        if mode == "score":
            extra = max((len(v) for _, v in self.label_variants()), default=1)
        else:
            extra = self.config.cot_max_new_tokens if mode == "cot" else self.config.max_new_tokens
        return window - extra

    def prepare(self, texts: Sequence[str], mode: str | None = None,
                own_demos: list[list[tuple[str, int]]] | None = None) -> tuple[list[_Prepared], list[int]]:
        """Group queries by the prompt prefix they get; drop demonstrations that do not fit (never the query).

        Returns the groups and, per query, the number of demonstrations kept (-1: the query alone does not fit).
        """
        mode = mode or self.config.mode
        budget = self._budget(mode)
        per_query = own_demos is not None
        shared = [] if per_query else list(zip(self.demos_["text"], self.demos_["label"]))
        groups: dict[int, _Prepared] = {}
        kept = []
        for i, q in enumerate(texts):
            demos_i = own_demos[i] if per_query else shared
            chosen = None
            for k in range(len(demos_i), -1, -1):
                key = ("own", mode) if per_query else ("shared", mode, k)
                prefix_ids, fr = self._prefix(key, shared[:k] if not per_query else None, per_query, mode)
                body = (self.demos_text(demos_i[:k]) + fr.middle if per_query else "") + q + fr.suffix
                seq = self._encode(body, first=False)
                if len(prefix_ids) + len(seq) <= budget:
                    chosen = (k, key, prefix_ids, seq, fr.prefix, body)
                    break
            if chosen is None:
                kept.append(-1)
                self._count("queries_too_long")
                warnings.warn(f"job {i}: the query alone ({len(seq)} tokens) does not fit the context window; "
                              f"it is scored as undecided, not truncated", stacklevel=2)
                continue
            k, key, prefix_ids, seq, prefix_text, body = chosen
            if k < len(demos_i):
                self._count("demonstrations_dropped", len(demos_i) - k)
                self._count("queries_with_dropped_demonstrations")
                warnings.warn(f"job {i}: {len(demos_i) - k} of {len(demos_i)} demonstrations dropped to fit the "
                              f"context window ({budget} tokens)", stacklevel=2)
            kept.append(k)
            g = groups.setdefault(k if not per_query else 0, _Prepared(prefix_ids, [], [], prefix_text))
            g.rows.append(i)
            g.seqs.append(seq)
            g.bodies.append(body)
        return list(groups.values()), kept

    def _prefix(self, key: Any, shared: list | None, per_query: bool, mode: str) -> tuple[list[int], PromptFrame]:
        hit = self._prefix_cache.get(("ids",) + key)
        if hit is None:
            fr = self.frame(shared, per_query_demos=per_query, mode=mode)
            hit = (self._encode(fr.prefix, first=True), fr)
            self._prefix_cache[("ids",) + key] = hit
        return hit

    # ------------------------------------------------------------ label words
    def label_variants(self) -> list[tuple[int, list[int]]]:
        """(class, token ids) for every tokenization of each label word (with/without a leading space)."""
        if self._variants is not None:
            return self._variants
        tok = self.lm_.tokenizer
        out: list[tuple[int, list[int]]] = []
        seen: dict[tuple[int, ...], int] = {}
        for cls, word in enumerate(self.config.label_words):
            forms = [word, " " + word]
            if self.config.case_variants:
                forms += [word.lower(), " " + word.lower()]
            for f in forms:
                ids = tuple(tok(f, add_special_tokens=False)["input_ids"])
                if not ids or ids in seen:
                    if ids in seen and seen[ids] != cls:
                        raise LlmadError(f"label words {self.config.label_words} tokenize identically ({list(ids)})")
                    continue
                unk = getattr(tok, "unk_token_id", None)
                if unk is not None and unk in ids and len(set(ids)) == 1:
                    continue
                seen[ids] = cls
                out.append((cls, list(ids)))
        if {c for c, _ in out} != {0, 1}:
            raise LlmadError(f"label words {self.config.label_words} have no usable tokenization for this model")
        self.counters_["label_variants"] = len(out)
        self.counters_["multi_token_label_variants"] = sum(len(v) > 1 for _, v in out)
        self._variants = out
        return out

    # ------------------------------------------------------------ forward passes
    def _torch_prefix_cache(self, prefix_ids: list[int]) -> list[tuple[Any, Any]]:
        """Per-layer (keys, values) of the prefix, computed once per distinct prefix and kept."""
        import torch

        key = ("kv", tuple(prefix_ids))
        if key not in self._prefix_cache:
            model = self.lm_.model
            with torch.no_grad():
                ids = torch.tensor([prefix_ids], device=self._device())
                out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
            self._prefix_cache[key] = cache_tensors(model_cache(out))
        return self._prefix_cache[key]

    def _device(self):
        return next(self.lm_.model.parameters()).device

    def label_logprobs(self, groups: list[_Prepared], n: int, use_cache: bool | None = None) -> np.ndarray:
        """[n, 2] log P(label | prompt), each the log-sum over that label's tokenization variants."""
        import torch

        use_cache = self.config.use_cache if use_cache is None else use_cache
        variants = self.label_variants()
        out = np.full((n, 2), np.nan)
        bs = max(1, self.config.batch_size)
        model = self.lm_.model
        dev = self._device()
        # Multi-token variants share paths (the variant minus its last token). The first path is appended to every
        # query of the batch and scored in the same forward pass (causal attention: the appended tokens cannot
        # change the logits before them), so the common case (one path, e.g. "Ab"+"normal") costs m extra tokens
        # per row and no second pass or cache copy. Further paths (case variants) continue from the returned
        # cache with the inline tokens masked out.
        paths = sorted({tuple(v[:-1]) for _, v in variants if len(v) > 1}, key=lambda p: (len(p), p))
        inline = list(paths[0]) if paths else []
        rest = paths[1:]
        m0 = len(inline)
        keep_kw = {"logits_to_keep": m0 + 1} if "logits_to_keep" in inspect.signature(
            _base_model(model).forward).parameters else {}
        pad = self.lm_.tokenizer.pad_token_id or 0
        for g in groups:
            p_len = len(g.prefix_ids)
            # Batches of similar lengths waste less compute on padding.
            order = sorted(range(len(g.rows)), key=lambda i: len(g.seqs[i]))
            for s in range(0, len(order), bs):
                rows = [g.rows[i] for i in order[s:s + bs]]
                seqs = [g.seqs[i] for i in order[s:s + bs]]
                b = len(rows)
                body = seqs if use_cache else [g.prefix_ids + q for q in seqs]
                width = max(len(q) for q in body)
                # Left padding: every row ends at column width-1, so the label logits sit in the last columns and
                # the inline path appends without gaps. Padded positions are masked out.
                ids = torch.full((b, width + m0), pad, dtype=torch.long, device=dev)
                mask = torch.zeros((b, width + m0), dtype=torch.long, device=dev)
                for r, q in enumerate(body):
                    ids[r, width - len(q):width] = torch.tensor(q, device=dev)
                    mask[r, width - len(q):] = 1
                if m0:
                    ids[:, width:] = torch.tensor(inline, device=dev)
                pos = (mask.cumsum(1) - 1).clamp(min=0)
                with torch.no_grad():
                    if use_cache:
                        cache = build_cache(self._torch_prefix_cache(g.prefix_ids), b)
                        full_mask = torch.cat([torch.ones((b, p_len), dtype=torch.long, device=dev), mask], 1)
                        res = model(input_ids=ids, attention_mask=full_mask, position_ids=pos + p_len,
                                    use_cache=bool(rest), **keep_kw, **{cache_kwarg(model): cache})
                    else:
                        full_mask = mask
                        res = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=bool(rest),
                                    **keep_kw)
                    lps = torch.log_softmax(res.logits[:, -(m0 + 1):].float(), dim=-1)
                    lp1 = lps[:, 0]
                    per_variant = {vi: lp1[:, v[0]].clone() for vi, (_, v) in enumerate(variants)}
                    for vi, (_, v) in enumerate(variants):
                        if len(v) > 1 and list(v[:-1]) == inline:
                            for j in range(m0):
                                per_variant[vi] = per_variant[vi] + lps[:, j + 1, v[j + 1]]
                    if rest:
                        end = full_mask.sum(1) - m0  # true length of each row (prefix + query)
                        base_mask = full_mask.clone()
                        base_mask[:, base_mask.shape[1] - m0:] = 0  # the inline tokens are not part of the prompt
                        kv = cache_tensors(model_cache(res))
                    for path in rest:
                        m = len(path)
                        # The stored tensors are only read: each update concatenates into new ones.
                        cache2 = build_cache(kv, b)
                        ext = torch.tensor(path, device=dev).unsqueeze(0).expand(b, -1)
                        mask2 = torch.cat([base_mask, torch.ones((b, m), dtype=torch.long, device=dev)], 1)
                        pos2 = end.unsqueeze(1) + torch.arange(m, device=dev).unsqueeze(0)
                        r2 = model(input_ids=ext, attention_mask=mask2, position_ids=pos2, use_cache=True,
                                   **{cache_kwarg(model): cache2})
                        lp2 = torch.log_softmax(r2.logits.float(), dim=-1)
                        for vi, (_, v) in enumerate(variants):
                            if len(v) > 1 and tuple(v[:-1]) == path:
                                for j in range(m):
                                    per_variant[vi] = per_variant[vi] + lp2[:, j, v[j + 1]]
                    for cls in (0, 1):
                        stack = torch.stack([per_variant[vi] for vi, (c, _) in enumerate(variants) if c == cls], 0)
                        out[rows, cls] = torch.logsumexp(stack, 0).cpu().numpy()
        return out

    # ------------------------------------------------------------ scoring
    def _queries(self, items: Any) -> tuple[list[str], list[list[tuple[str, int]]] | None]:
        if isinstance(items, pd.DataFrame):
            texts = self.render(items)
            own = None
            if self.config.select == "nearest" and self.config.shots > 0:
                own = self._neighbours(items, self.config.shots)
            return texts, own
        texts = [str(t) for t in items]
        if self.config.select == "nearest" and self.config.shots > 0:
            raise LlmadError("--select nearest needs job rows (features), not pre-rendered texts")
        return texts, None

    def score_details(self, items: Any, use_cache: bool | None = None, mode: str | None = None) -> pd.DataFrame:
        """Per job: score, P(abnormal), label mass, demonstrations kept, and generated text / reasoning."""
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
            lp = self.label_logprobs(groups, n, use_cache=use_cache)
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
        gen = self.generate(groups, n, mode=mode, use_cache=use_cache)
        parsed = [parse_label(t, self.config.label_words, cot=(mode == "cot")) if t is not None else None
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

    # ------------------------------------------------------------ generation
    def generate(self, groups: list[_Prepared], n: int, mode: str = "generate",
                 use_cache: bool | None = None) -> list[str | None]:
        """Greedy completion of each prompt (the prefix cache is copied into each call)."""
        import torch

        use_cache = self.config.use_cache if use_cache is None else use_cache
        tok = self.lm_.tokenizer
        model = self.lm_.model
        dev = self._device()
        max_new = self.config.cot_max_new_tokens if mode == "cot" else self.config.max_new_tokens
        out: list[str | None] = [None] * n
        for g in groups:
            for r, q in zip(g.rows, g.seqs):
                ids = torch.tensor([g.prefix_ids + q], device=dev)
                kw: dict[str, Any] = {}
                if use_cache:
                    kw[cache_kwarg(model)] = build_cache(self._torch_prefix_cache(g.prefix_ids), 1)
                with torch.no_grad():
                    res = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                                         do_sample=False, pad_token_id=tok.pad_token_id, **kw)
                out[r] = tok.decode(res[0, ids.shape[1]:], skip_special_tokens=True)
        return out

    # ------------------------------------------------------------ calibration
    def content_free_texts(self) -> dict[str, str]:
        """Content-free queries: an empty job and a job whose features are all "N/A"."""
        from llmad.render import render_one

        na = {f: "N/A" for f in self.features}
        na.update({"label": 0, "job_id": "N/A", "workflow": "N/A", "run_id": "N/A", "anomaly_type": "N/A",
                   "job_type": "N/A", "host": "N/A", "transformation": "N/A"})
        try:
            na_text = render_one(na, template=self.config.template, features=self.features)
        except Exception:
            na_text = " ".join(f"{f} is N/A" for f in self.features)
        return {"empty": "", "na": na_text}

    def _calibrate(self) -> dict[str, Any]:
        """Contextual calibration: the prompt's label prior from content-free queries."""
        cf = self.content_free_texts()
        names = list(cf)
        saved = self.calibration_
        self.calibration_ = None
        groups, _ = self.prepare([cf[k] for k in names], mode="score", own_demos=None)
        lp = self.label_logprobs(groups, len(names))
        self.calibration_ = saved
        p = np.exp(lp - np.logaddexp(lp[:, :1], lp[:, 1:]))  # normalised over the two labels
        prior = p.mean(axis=0)
        ratio = float(np.log(prior[1]) - np.log(prior[0]))
        gaps = {}
        for i, k in enumerate(names):
            before = float(p[i, 1] - p[i, 0])
            z = float(lp[i, 1] - lp[i, 0]) - ratio
            pa = 1 / (1 + math.exp(-z))
            gaps[k] = {"abnormal_minus_normal_before": before, "abnormal_minus_normal_after": float(2 * pa - 1)}
        return {"log_prior_ratio": ratio, "prior": {"normal": float(prior[0]), "abnormal": float(prior[1])},
                "gap": gaps, "queries": cf}

    # ------------------------------------------------------------ LoRA tuning
    def tuning_examples(self, train: pd.DataFrame) -> pd.DataFrame:
        """Prompt -> label completions from the train part (balanced, demonstrations excluded, seeded)."""
        cfg = self.config
        pool = train
        if self.demos_ is not None and len(self.demos_) and "job_id" in train:
            pool = train[~train["job_id"].astype(str).isin(set(self.demos_["job_id"]))]
        rng = np.random.default_rng(cfg.seed + 3)
        n = min(cfg.train_examples, len(pool))
        idx_n = np.flatnonzero(pool["label"].to_numpy() == 0)
        idx_a = np.flatnonzero(pool["label"].to_numpy() == 1)
        n_a = min(len(idx_a), n // 2)
        n_n = min(len(idx_n), n - n_a)
        chosen = np.concatenate([rng.choice(idx_n, n_n, replace=False), rng.choice(idx_a, n_a, replace=False)])
        rng.shuffle(chosen)
        rows = pool.iloc[chosen]
        texts = self.render(rows)
        own = None
        if cfg.select == "nearest" and cfg.shots > 0:
            own = self._neighbours(rows, cfg.shots, exclude_self=True)
        elif cfg.train_demos == "resample":
            rest = pool.iloc[np.setdiff1d(np.arange(len(pool)), chosen)].reset_index(drop=True)
            own = self._resampled_demos(rest, len(rows), rng)
        groups, kept = self.prepare(texts, mode="score", own_demos=own)
        prompts: list[str | None] = [None] * len(texts)
        for g in groups:
            for r, body in zip(g.rows, g.bodies):
                prompts[r] = g.prefix_text + body
        words = cfg.label_words
        keep = [i for i, p in enumerate(prompts) if p is not None]
        job_ids = rows["job_id"].astype(str).to_numpy() if "job_id" in rows else np.array([""] * len(rows))
        return pd.DataFrame({"job_id": job_ids[keep], "prompt": [prompts[i] for i in keep],
                             "completion": [" " + words[int(y)] for y in rows["label"].to_numpy()[keep]],
                             "label": rows["label"].to_numpy()[keep].astype(int)})

    def _resampled_demos(self, pool: pd.DataFrame, n: int, rng: np.random.Generator) -> list[list[tuple[str, int]]]:
        """Per tuning prompt, its own 0..train_shots demonstrations drawn from ``pool`` with ``select``."""
        cfg = self.config
        kmax = cfg.train_shots if cfg.train_shots is not None else cfg.shots
        picks = []
        for _ in range(n):
            k = int(rng.integers(0, kmax + 1))
            try:
                d = select_demonstrations(pool, k, cfg.select, seed=int(rng.integers(2**31)))
            except LlmadError:  # a class too small for k: fewer demonstrations rather than none at all
                d = select_demonstrations(pool, min(k, len(pool)), "random", seed=int(rng.integers(2**31)))
            picks.append(list(d.index))
        needed = pd.Index(sorted({i for p in picks for i in p}))
        texts = dict(zip(needed, self.render(pool.loc[needed]))) if len(needed) else {}
        labels = pool["label"].astype(int)
        return [[(texts[i], int(labels.loc[i])) for i in p] for p in picks]

    def _tune(self, train: pd.DataFrame) -> None:
        """LoRA on prompt -> label completions with trl's SFTTrainer (completion-only loss)."""
        import tempfile

        from datasets import Dataset
        from peft import LoraConfig
        from trl import SFTConfig, SFTTrainer

        from llmad.models.causal_lm import context_window
        from llmad.models.resolve import pick_device_dtype, time_budget_callback

        cfg = self.config
        saved_demos = self.demos_
        if cfg.train_shots is not None and cfg.select != "nearest" and cfg.train_demos == "fixed":
            self.demos_ = saved_demos.iloc[:cfg.train_shots]
        self._prefix_cache = {}
        try:
            ex = self.tuning_examples(train)
        finally:
            self.demos_ = saved_demos
            self._prefix_cache = {}
        if len(ex) == 0:
            raise LlmadError("no tuning examples: the train part is empty")
        tok = self.lm_.tokenizer
        lens = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in ex["prompt"]]
        prompt_tokens = {"mean": float(np.mean(lens)), "min": int(np.min(lens)), "max": int(np.max(lens)),
                         "total": int(np.sum(lens))}
        device, _, flags = pick_device_dtype()
        model = self.lm_.model
        from peft import PeftModel

        n_layers = next((v for a in ("num_hidden_layers", "n_layer") if isinstance(
            v := getattr(_base_model(model).config, a, None), int)), None)
        layers = None
        if cfg.lora_layers and n_layers and cfg.lora_layers < n_layers:
            layers = list(range(n_layers - cfg.lora_layers, n_layers))
        targets: Any = "all-linear"
        if layers:
            # peft takes a layer subset only with explicit module names: every linear layer but the output head.
            targets = sorted({n.rsplit(".", 1)[-1] for n, mod in _base_model(model).named_modules()
                              if type(mod).__name__ in ("Linear", "Conv1D") and not n.endswith("lm_head")})
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_r, lora_dropout=0.05,
                          target_modules=targets, task_type="CAUSAL_LM", layers_to_transform=layers)
        # A model that already carries a trainable adapter (a saved one, reloaded) keeps training it: tuning can
        # then run in several short rounds.
        continuing = isinstance(model, PeftModel)
        steps = cfg.train_steps if cfg.train_steps else max(1, math.ceil(len(ex) / cfg.train_batch_size))
        with tempfile.TemporaryDirectory(prefix="llmad-icl-lora-") as tmp:
            args = SFTConfig(output_dir=tmp, max_steps=steps, per_device_train_batch_size=cfg.train_batch_size,
                             learning_rate=cfg.learning_rate, lr_scheduler_type="constant", warmup_steps=0,
                             logging_steps=max(1, steps // 10), save_strategy="no", report_to=[],
                             completion_only_loss=True, max_length=context_window(model), seed=cfg.seed,
                             bf16=flags["bf16"] and device == "cuda", fp16=flags["fp16"] and device == "cuda",
                             dataloader_num_workers=0, disable_tqdm=True, use_cpu=(device == "cpu"),
                             gradient_checkpointing=False)
            ds = Dataset.from_pandas(ex[["prompt", "completion"]], preserve_index=False)
            callbacks = [time_budget_callback(cfg.train_budget_s)] if cfg.train_budget_s else None
            trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=self.lm_.tokenizer,
                                 peft_config=None if continuing else lora, callbacks=callbacks)
            result = trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        self.lm_.model = trainer.model
        self.lm_.model.eval()
        done = int(trainer.state.global_step)
        seen = min(len(ex), done * cfg.train_batch_size)
        self.tuning_ = {"examples": int(len(ex)), "positives": int(ex["label"].sum()), "steps": done,
                        "planned_steps": int(steps), "examples_seen": int(seen),  # the trainer's sampler picks which
                        "train_loss": float(result.training_loss), "losses": losses,
                        "base_4bit": bool(cfg.load_in_4bit), "lora_r": cfg.lora_r,
                        "train_shots": cfg.train_shots if cfg.train_shots is not None else cfg.shots,
                        "train_demos": cfg.train_demos, "prompt_tokens": prompt_tokens,
                        "lora_layers": layers, "continued": continuing}
        self._prefix_cache = {}

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
        """Config, demonstrations, calibration, threshold (JSON) and the LoRA adapter (safetensors)."""
        from llmad.io import write_json

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {"config": asdict(self.config), "threshold": self.threshold_, "calibration": self.calibration_,
                 "stats": self.stats_, "tuning": self.tuning_,
                 "demonstrations": [] if self.demos_ is None else self.demos_.to_dict(orient="records")}
        if self.pool_ is not None:
            from safetensors.numpy import save_file

            save_file({"x": self.pool_["x"], "mu": self.pool_["mu"], "sd": self.pool_["sd"],
                       "labels": self.pool_["labels"].astype(np.int64)}, str(path / "pool.safetensors"))
            state["pool_texts"] = self.pool_["texts"]
        if self.tuning_ is not None and hasattr(self.lm_.model, "save_pretrained") and hasattr(self.lm_.model,
                                                                                                "peft_config"):
            self.lm_.model.save_pretrained(str(path / "adapter"))
        write_json(path / "icl.json", state)

    @classmethod
    def load(cls, path: str | Path, lm: Any = None) -> "ICLDetector":
        """Rebuild a detector saved by ``save`` (reloads the base model and the adapter)."""
        path = Path(path)
        state = json.loads((path / "icl.json").read_text())
        cfg_d = state["config"]
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
        det.demos_ = pd.DataFrame(state["demonstrations"], columns=["text", "label", "job_id"])
        if (path / "pool.safetensors").is_file():
            from safetensors.numpy import load_file

            arr = load_file(str(path / "pool.safetensors"))
            det.pool_ = {**arr, "texts": state["pool_texts"]}
        return det


# ---------------------------------------------------------------- end-to-end run (CLI and bench)

@dataclass
class ICLRun:
    """What ``llmad icl`` needs besides the detector options: data, split, subsampling, output."""

    data: str = "flowbench:1000genome"
    data_dir: str | None = None
    split: str = "run"
    test_workflow: str | None = None
    seed: int = 0
    limit: int | None = None  # test rows (seeded subsample)
    val_limit: int | None = 200  # validation rows scored for the threshold
    out: str | None = None


def _subsample(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    if n is None or len(df) <= n:
        return df.reset_index(drop=True)
    return df.sample(n=n, random_state=seed).reset_index(drop=True)


def run_icl(cfg: ICLConfig, run: ICLRun, printer: Any = print, lm: Any = None,
            split: Any = None) -> dict[str, Any]:
    """Load data, split, fit (demonstrations, LoRA, calibration, threshold), score the test part, write the run."""
    import time

    from llmad.data.flowbench import load_jobs
    from llmad.data.splits import make_split
    from llmad.metrics.classification import classification_report
    from llmad.rundir import default_out, write_run

    cfg.validate()
    if split is None:
        jobs = load_jobs(run.data, data_dir=run.data_dir)
        split = make_split(jobs, kind=run.split, seed=run.seed, test_workflow=run.test_workflow,
                           data_dir=run.data_dir)
    test = _subsample(split.test, run.limit, run.seed)
    val = _subsample(split.validation, run.val_limit, run.seed) if cfg.mode == "score" else split.validation.iloc[:0]
    det = ICLDetector(config=cfg)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        det.fit(split.train, val, lm=lm)
        fit_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        details = det.score_details(test)
        score_s = time.perf_counter() - t1
    dropped_warnings = sum("demonstrations dropped" in str(w.message) for w in caught)
    for w in caught[:3]:
        printer(f"warning: {w.message}")
    y = test["label"].to_numpy().astype(int)
    scores = details["score"].to_numpy(dtype=float)
    types = test["anomaly_type"].astype(str).to_numpy() if "anomaly_type" in test else None
    metrics = classification_report(y, scores=scores, threshold=det.threshold_, anomaly_types=types)
    if cfg.mode == "score":
        argmax = classification_report(y, predictions=(scores >= 0).astype(int))
        metrics["argmax"] = {k: argmax[k] for k in ("accuracy", "precision", "recall", "f1")}
        metrics["mean_label_mass"] = float(details["label_mass"].mean())
    else:
        parsed = details["parsed"].to_numpy()
        metrics["parse_rate"] = float(np.mean(parsed >= 0))
        metrics["unparseable"] = int(np.sum(parsed < 0))
        ok = parsed >= 0
        metrics["accuracy_on_parsed"] = float(np.mean(parsed[ok] == y[ok])) if ok.any() else float("nan")
    metrics.update({"fit_seconds": fit_s, "score_seconds": score_s,
                    "prompts_per_second": len(test) / score_s if score_s > 0 else float("nan"),
                    "test_rows": int(len(test)), "validation_rows": int(len(val)),
                    "split": split.kind, "split_description": split.description,
                    "dropped_demonstration_warnings": dropped_warnings, **det.info()})
    preds = pd.DataFrame({c: test[c].to_numpy() for c in ("workflow", "run_id", "job_id", "label", "anomaly_type")
                          if c in test})
    preds["score"] = scores
    preds["prediction"] = (scores >= det.threshold_).astype(int)
    for c in details.columns:
        if c != "score":
            preds[c] = details[c].to_numpy()
    out = Path(run.out) if run.out else default_out("icl", f"{cfg.model.replace('/', '_')}-{cfg.shots}shot")
    summary = (f"icl {cfg.model} shots={cfg.shots} select={cfg.select} mode={cfg.mode} calibrate={cfg.calibrate} "
               f"lora={cfg.lora_r}: test n={len(test)} accuracy={metrics['accuracy']:.3f} f1={metrics['f1']:.3f}"
               + (f" argmax-accuracy={metrics['argmax']['accuracy']:.3f}" if "argmax" in metrics else "")
               + (f" parse-rate={metrics['parse_rate']:.3f}" if "parse_rate" in metrics else "")
               + f" ({metrics['prompts_per_second']:.2f} prompts/s) -> {out}")
    write_run(out, config={"icl": asdict(cfg), "run": asdict(run), "split_info": split.info}, metrics=metrics,
              predictions=preds, summary=None)
    if cfg.mode == "cot":
        from llmad.io import atomic_write_text

        lines = [json.dumps({"job_id": str(j), "label": int(lab), "parsed": int(p), "reasoning": g})
                 for j, lab, p, g in zip(preds.get("job_id", range(len(preds))), preds["label"], preds["parsed"],
                                         preds["generation"])]
        atomic_write_text(out / "reasoning.jsonl", "\n".join(lines) + "\n")
    printer(summary)
    return {"metrics": metrics, "out": str(out), "detector": det, "predictions": preds}
