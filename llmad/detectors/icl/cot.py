"""Chain-of-thought (``mode=cot``) decoding that cannot loop and always ends in an answer.

Greedy decoding of a 135M model loops ("The output is unusually large." ten times, bench/results/icl_cot.md) and
never reaches the ``Answer:`` line the prompt asks for. Three changes:

- ``RationaleGuard`` (a logits processor) forbids any n-gram of ``no_repeat_ngram`` tokens twice and applies a
  CTRL-style ``repetition_penalty``, both over the *generated* tokens only. HF's own ``no_repeat_ngram_size`` and
  ``repetition_penalty`` look at the whole sequence, prompt included: the demonstrations end in ``Answer: Normal``
  and ``Answer: Abnormal``, so the built-in n-gram ban would forbid exactly the answer line, and the built-in
  penalty would push the label words (all in the prompt) down. The label words and the ``Answer`` cue are exempt
  from the penalty, so the answer is not biased against a label the rationale already named.
- ``AnswerStop`` (a stopping criterion) ends generation once the text holds ``Answer: <label>``, or once the model
  starts a new example (a ``Job:`` line) instead of answering.
- The forced answer step: every rationale is cut where its label would start (after its own ``Answer:``, else after
  an appended ``\\nAnswer:``) and the two label words are scored there, as ``mode=score`` scores them. A row whose
  model wrote no answer gets the more likely label (``answer_source=forced``); every row gets ``p_abnormal``, the
  two-label probability at the answer position (a ranking score beside the 0/1 decision).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import numpy as np

from llmad.detectors.icl.prompt import PromptGroup
from llmad.detectors.icl.scoring import build_cache, cache_kwarg

FORCED_CUE = "\nAnswer:"
# A small model that is done reasoning often starts the next example instead of its answer line (a "Job:" line, as
# prompts/icl/demos.j2 and query.j2 write them): the rationale ends there and the forced answer step takes over.
NEW_EXAMPLE = re.compile(r"\n\s*(?:job\s*:|labeled examples\s*:|classify this job)", re.IGNORECASE)
ANSWER_SOURCES = ("generated", "forced", "none")


def answer_pattern(label_words: Sequence[str] = ("Normal", "Abnormal")) -> re.Pattern:
    """Regex of an explicit answer line (``Answer: Abnormal``, ``answer is normal``), any case; groups ``ab`` /
    ``no`` say which label, ``label`` where it starts."""
    normal, abnormal = (re.escape(w) for w in label_words)
    ab = rf"(?:{abnormal}|anomalous|not\s+normal)"
    no = rf"(?:{normal}|not\s+(?:anomalous|{abnormal}))"
    return re.compile(rf"answer(?:\s+is)?\W*?\s*(?P<label>(?P<ab>{ab})|(?P<no>{no}))", re.IGNORECASE)


def parse_answer(text: str, label_words: Sequence[str] = ("Normal", "Abnormal")) -> tuple[int | None, int]:
    """(1 abnormal / 0 normal / None, where the label starts) of the last explicit ``Answer:`` line in ``text``."""
    hits = list(answer_pattern(label_words).finditer(text))
    if not hits:
        return None, -1
    last = hits[-1]
    return (1 if last.group("ab") else 0), last.start("label")


def answer_cut(text: str, label_words: Sequence[str] = ("Normal", "Abnormal")) -> tuple[str, int | None]:
    """(the rationale up to where its label is scored, the label the model wrote or None): cut before the written
    label, else the rationale (up to a new example) with ``\\nAnswer:`` appended (not twice when it already ends with
    ``Answer:``)."""
    end, answered = rationale_end(text, label_words)
    text = text[:end]
    if answered:
        label, start = parse_answer(text, label_words)
        return text[:start].rstrip(), label
    body = text.rstrip()
    if re.search(r"answer\s*:?$", body.lower()):
        return body if body.endswith(":") else body + ":", None
    return body + FORCED_CUE, None


def rationale_end(text: str, label_words: Sequence[str] = ("Normal", "Abnormal")) -> tuple[int, bool]:
    """(where the rationale ends, whether it ends with its own answer): after the first ``Answer: <label>``, else
    where the model starts a new example, else the whole text."""
    answer = answer_pattern(label_words).search(text)
    new = NEW_EXAMPLE.search(text)
    if answer and (new is None or answer.start() < new.start()):
        return answer.end(), True
    return (new.start(), False) if new else (len(text), False)


def rationale_text(text: str, label_words: Sequence[str] = ("Normal", "Abnormal")) -> str:
    """The generated text up to the end of its answer line or the start of a new example (what the stop rule
    keeps), stripped."""
    return text[:rationale_end(text, label_words)[0]].strip()


class AnswerStop:
    """Stopping criterion: stop once the generated text (after ``prompt_len`` tokens) holds ``Answer: <label>`` or
    starts a new example."""

    def __init__(self, tokenizer: Any, prompt_len: int, label_words: Sequence[str]):
        self.tok, self.prompt_len, self.pattern = tokenizer, prompt_len, answer_pattern(label_words)

    def __call__(self, input_ids: Any, scores: Any = None, **kw: Any) -> Any:
        import torch

        texts = [self.tok.decode(row[self.prompt_len:], skip_special_tokens=True) for row in input_ids]
        done = [bool(self.pattern.search(t) or NEW_EXAMPLE.search(t)) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class RationaleGuard:
    """Logits processor over the generated tokens only: no n-gram of ``ngram`` tokens twice (0: off) and the
    CTRL repetition penalty (positive logits divided, negative multiplied; 1: off) on tokens already generated,
    ``exempt`` ones (label words, the answer cue) excepted."""

    def __init__(self, prompt_len: int, penalty: float = 1.0, ngram: int = 0, exempt: Sequence[int] = ()):
        self.prompt_len, self.penalty, self.ngram = prompt_len, float(penalty), int(ngram)
        self.exempt = set(int(t) for t in exempt)

    def banned(self, gen: list[int]) -> set[int]:
        """Next tokens that would repeat an n-gram already in ``gen``."""
        n = self.ngram
        if n <= 0 or len(gen) < n:
            return set()
        if n == 1:
            return set(gen)
        tail = gen[len(gen) - n + 1:]
        return {gen[i + n - 1] for i in range(len(gen) - n + 1) if gen[i:i + n - 1] == tail}

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        scores = scores.clone()
        for b, row in enumerate(input_ids):
            gen = row[self.prompt_len:].tolist()
            if not gen:
                continue
            if self.penalty != 1.0:
                used = sorted(set(gen) - self.exempt)
                if used:
                    idx = torch.tensor(used, device=scores.device)
                    s = scores[b, idx]
                    scores[b, idx] = torch.where(s > 0, s / self.penalty, s * self.penalty)
            ban = self.banned(gen)
            if ban:
                scores[b, torch.tensor(sorted(ban), device=scores.device)] = float("-inf")
        return scores


class ChainOfThought:
    """CoT decoding, mixed into ``ICLDetector``: uses its ``config``, ``lm_``, ``label_variants``,
    ``label_logprobs``, ``_torch_prefix_cache``, ``_device`` and ``_count``."""

    def exempt_token_ids(self) -> list[int]:
        """Token ids the repetition penalty spares: every label-word variant and the answer cue."""
        tok = self.lm_.tokenizer
        ids = {t for _, v in self.label_variants() for t in v}
        for cue in ("Answer", " Answer", "Answer:", " Answer:", ":", FORCED_CUE):
            ids.update(tok(cue, add_special_tokens=False)["input_ids"])
        return sorted(ids)

    def reason(self, groups: list[PromptGroup], n: int, use_cache: bool | None = None,
               progress: Callable[[int], None] | None = None) -> list[str | None]:
        """Greedy rationale per prompt under ``RationaleGuard`` and ``AnswerStop`` (None: the query did not fit)."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        cfg = self.config
        use_cache = cfg.use_cache if use_cache is None else use_cache
        tok = self.lm_.tokenizer
        model = self.lm_.model
        dev = self._device()
        exempt = self.exempt_token_ids()
        out: list[str | None] = [None] * n
        for g in groups:
            for r, q in zip(g.rows, g.seqs):
                ids = torch.tensor([g.prefix_ids + q], device=dev)
                p_len = ids.shape[1]
                kw: dict[str, Any] = {}
                if use_cache:
                    kw[cache_kwarg(model)] = build_cache(self._torch_prefix_cache(g.prefix_ids), 1)
                guard = RationaleGuard(p_len, cfg.repetition_penalty, cfg.no_repeat_ngram, exempt)
                stop = AnswerStop(tok, p_len, cfg.label_words)
                with torch.no_grad():
                    res = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                         max_new_tokens=cfg.cot_max_new_tokens, do_sample=False,
                                         pad_token_id=tok.pad_token_id, logits_processor=LogitsProcessorList([guard]),
                                         stopping_criteria=StoppingCriteriaList([stop]), **kw)
                new = res.shape[1] - p_len
                if new >= cfg.cot_max_new_tokens:
                    self._count("cot_max_new_tokens_reached")
                out[r] = tok.decode(res[0, p_len:], skip_special_tokens=True)
                if progress is not None:
                    progress(1)
        return out

    def answer(self, groups: list[PromptGroup], texts: list[str | None], n: int,
               use_cache: bool | None = None) -> dict[str, Any]:
        """The forced answer step: label-word scores at the answer position of each rationale; per row the answer
        (written, else the more likely label), its source, ``p_abnormal`` and the rationale."""
        words = self.config.label_words
        tok = self.lm_.tokenizer
        parsed = np.full(n, -1, dtype=int)
        source = np.array(["none"] * n, dtype=object)
        rationale = ["" if t is None else rationale_text(t, words) for t in texts]
        written: dict[int, int | None] = {}
        cut_groups = []
        for g in groups:
            rows, seqs = [], []
            for r, q in zip(g.rows, g.seqs):
                if texts[r] is None:
                    continue
                cut, label = answer_cut(texts[r], words)
                written[r] = label
                rows.append(r)
                seqs.append(q + list(tok(cut, add_special_tokens=False)["input_ids"]))
            if rows:
                cut_groups.append(PromptGroup(g.prefix_ids, rows, seqs, g.prefix_text))
        lp = self.label_logprobs(cut_groups, n, use_cache=use_cache) if cut_groups else np.full((n, 2), np.nan)
        with np.errstate(invalid="ignore"):
            p_ab = 1 / (1 + np.exp(-(lp[:, 1] - lp[:, 0])))
        for r, label in written.items():
            if label is not None:
                parsed[r], source[r] = label, "generated"
            elif np.isfinite(p_ab[r]):
                parsed[r], source[r] = int(p_ab[r] > 0.5), "forced"
        self._count("cot_answers_generated", int(np.sum(source == "generated")))
        self._count("cot_answers_forced", int(np.sum(source == "forced")))
        return {"parsed": parsed, "answer_source": source, "p_abnormal": p_ab, "rationale": rationale,
                "answer": [words[p] if p >= 0 else "" for p in parsed]}
