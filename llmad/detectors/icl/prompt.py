"""ICL prompt assembly: the task description (+ class statistics), demonstrations, the query and the answer cue,
as a chat turn when the tokenizer has a chat template, cut into a shared prefix and a per-job part.

The prompt is rendered once around sentinel strings and split where the per-job text goes (``PromptFrame``), so
the prefix (task + shared demonstrations) is tokenized once and its KV cache reused for every query. Job values
are data: they are concatenated as strings, never evaluated as template code.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Sequence

from llmad.errors import LlmadError, warn


@dataclass
class PromptFrame:
    """A prompt cut where the per-job text goes: prefix + [demos_i + middle] + query + suffix."""

    prefix: str
    middle: str
    suffix: str
    chat: bool


@dataclass
class PromptGroup:
    """Token ids of one prompt group sharing a prefix."""

    prefix_ids: list[int]
    rows: list[int]
    seqs: list[list[int]]
    prefix_text: str = ""
    bodies: list[str] = field(default_factory=list)


class PromptBuilder:
    """Prompt building, mixed into ``ICLDetector``: uses its ``config``, ``lm_``, ``demos_``, ``stats_``,
    ``_prefix_cache``, ``_count`` and ``label_variants``."""

    def _system_text(self, cot: bool) -> str:
        from llmad.render import render_file

        normal, abnormal = self.config.label_words
        text = render_file("task", kind="icl", normal=normal, abnormal=abnormal, cot=cot).strip()
        if self.stats_:
            text += "\n\n" + render_file("stats", kind="icl", classes=self.stats_).strip()
        return text

    def demos_text(self, demos: Sequence[tuple], cot: bool = False) -> str:
        """Render (text, label[, rationale]) demonstrations with prompts/icl/demos.j2; the rationale only in cot
        prompts."""
        from llmad.render import render_file

        words = self.config.label_words
        items = []
        for d in demos:
            reason = d[2] if cot and len(d) > 2 and isinstance(d[2], str) and d[2] else None
            items.append({"text": d[0], "label": words[int(d[1])], "reason": reason})
        return render_file("demos", kind="icl", demos=items)

    def shared_demos(self) -> list[tuple]:
        """The fixed demonstrations as (text, label[, rationale]) tuples."""
        d = self.demos_
        if d is None or len(d) == 0:
            return []
        cols = [d["text"], d["label"]] + ([d["reason"]] if "reason" in d else [])
        return list(zip(*cols))

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
            user = (self.demos_text(shared_demos or [], cot=cot)) + query_block
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

    def _budget(self, mode: str) -> int:
        from llmad.models.causal_lm import context_window

        window = self.config.max_prompt_tokens or context_window(self.lm_.model)
        if mode == "score":
            extra = max((len(v) for _, v in self.label_variants()), default=1)
        else:
            extra = self.config.max_new_tokens
            if mode == "cot":  # room for the forced answer step too: "\nAnswer:" (cot.FORCED_CUE) + a label word
                cue = len(self.lm_.tokenizer("\nAnswer:", add_special_tokens=False)["input_ids"])
                extra = self.config.cot_max_new_tokens + cue + max((len(v) for _, v in self.label_variants()),
                                                                   default=1)
        return window - extra

    def prepare(self, texts: Sequence[str], mode: str | None = None,
                own_demos: list[list[tuple[str, int]]] | None = None) -> tuple[list[PromptGroup], list[int]]:
        """Group queries by the prompt prefix they get; drop demonstrations that do not fit (never the query).

        Returns the groups and, per query, the number of demonstrations kept (-1: the query alone does not fit).
        """
        mode = mode or self.config.mode
        budget = self._budget(mode)
        per_query = own_demos is not None
        shared = [] if per_query else self.shared_demos()
        groups: dict[int, PromptGroup] = {}
        kept = []
        for i, q in enumerate(texts):
            demos_i = own_demos[i] if per_query else shared
            chosen = None
            for k in range(len(demos_i), -1, -1):
                key = ("own", mode) if per_query else ("shared", mode, k)
                prefix_ids, fr = self._prefix(key, shared[:k] if not per_query else None, per_query, mode)
                own_text = self.demos_text(demos_i[:k], cot=mode == "cot") + fr.middle if per_query else ""
                body = own_text + q + fr.suffix
                seq = self._encode(body, first=False)
                if len(prefix_ids) + len(seq) <= budget:
                    chosen = (k, key, prefix_ids, seq, fr.prefix, body)
                    break
            if chosen is None:
                kept.append(-1)
                self._count("queries_too_long")
                warn("context-overflow", f"job {i}: the query alone ({len(seq)} tokens) does not fit the context "
                                         f"window; it is scored as undecided, not truncated")
                continue
            k, key, prefix_ids, seq, prefix_text, body = chosen
            if k < len(demos_i):
                self._count("demonstrations_dropped", len(demos_i) - k)
                self._count("queries_with_dropped_demonstrations")
                warn("context-overflow", f"job {i}: {len(demos_i) - k} of {len(demos_i)} demonstrations dropped to "
                                         f"fit the context window ({budget} tokens)")
            kept.append(k)
            g = groups.setdefault(k if not per_query else 0, PromptGroup(prefix_ids, [], [], prefix_text))
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
