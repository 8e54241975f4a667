"""ICL scoring: label-word log-probabilities over every tokenization variant (with the prefix KV cache),
greedy generation / chain-of-thought with label parsing, and contextual calibration (Zhao et al., ICML'21).

``mode=score`` compares the log-probabilities of the label words (summed over their tokens, log-summed over their
variants) and returns ``log P(Abnormal) - log P(Normal)``; the prefix cache path equals naive re-encoding (tested to
1e-4). ``calibrate=content-free`` divides out the prompt's label prior estimated on content-free queries.
"""
from __future__ import annotations

import inspect
import math
import re
from typing import Any, Callable, Sequence

import numpy as np

from llmad.detectors.icl.prompt import PromptGroup
from llmad.errors import LlmadError


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


def base_model(model: Any) -> Any:
    """The model under a peft wrapper (the model itself when not wrapped)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def cache_kwarg(model: Any) -> str:
    """The forward/generate keyword for a KV cache: ``cache`` in recent transformers, ``past_key_values`` before."""
    params = inspect.signature(base_model(model).forward).parameters
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


class LabelScorer:
    """Forward passes, mixed into ``ICLDetector``: uses its ``config``, ``lm_``, ``calibration_``, ``features``,
    ``_prefix_cache``, ``_variants``, ``counters_`` and ``prepare``."""

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

    def label_logprobs(self, groups: list[PromptGroup], n: int, use_cache: bool | None = None,
                       progress: Callable[[int], None] | None = None) -> np.ndarray:
        """[n, 2] log P(label | prompt), each the log-sum over that label's tokenization variants; ``progress``
        gets the number of prompts after each batch."""
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
            base_model(model).forward).parameters else {}
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
                if progress is not None:
                    progress(b)
        return out

    def generate(self, groups: list[PromptGroup], n: int, mode: str = "generate",
                 use_cache: bool | None = None, progress: Callable[[int], None] | None = None) -> list[str | None]:
        """Greedy completion of each prompt (the prefix cache is copied into each call); ``progress`` gets 1
        after each prompt."""
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
                if progress is not None:
                    progress(1)
        return out

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

    def calibrate(self) -> dict[str, Any]:
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
