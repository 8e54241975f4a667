"""Sentences -> token ids -> padded batches -> P(anomalous): shared by training, scoring and the fast backends."""
from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np

# The longest budget ``encode_auto`` picks (BERT-family position embeddings stop at 512).
MAX_BUDGET = 512


class EncodedDataset:
    """Token ids + labels as a map-style dataset for ``Trainer`` (padding happens per batch in the collator)."""

    def __init__(self, input_ids: list[list[int]], labels: Sequence[int]):
        self.input_ids, self.labels = input_ids, [int(y) for y in labels]

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ids = self.input_ids[i]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": self.labels[i]}


def collator(tokenizer: Any) -> Any:
    """The ``Trainer`` collator: pads each batch to its longest sequence."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)


def encode(tokenizer: Any, texts: Sequence[str], max_length: int | None) -> list[list[int]]:
    """Token ids per sentence (special tokens added, truncated at ``max_length``), unpadded."""
    return tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True,
                     return_attention_mask=False, return_token_type_ids=False)["input_ids"]


def encode_auto(tokenizer: Any, texts: Sequence[str]) -> tuple[list[list[int]], int]:
    """Token ids and a budget that fits all but the rarest outliers (a fixed 64 cut the context template's host
    part); one tokenization, only the few longer sentences are encoded again at the budget."""
    cap = min(int(getattr(tokenizer, "model_max_length", MAX_BUDGET) or MAX_BUDGET), MAX_BUDGET)
    ids = encode(tokenizer, texts, cap)
    if not ids:
        return ids, cap
    budget = int(min(cap, max(8, np.ceil(np.percentile([len(x) for x in ids], 99.9)))))
    long = [i for i, x in enumerate(ids) if len(x) > budget]
    for i, x in zip(long, encode(tokenizer, [texts[i] for i in long], budget) if long else []):
        ids[i] = x
    return ids, budget


def pad_batch(seqs: list[list[int]], pad_id: int):
    """(input ids, attention mask) long tensors of ``seqs`` right-padded with ``pad_id`` to the longest one."""
    import torch

    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for j, s in enumerate(seqs):
        ids[j, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[j, :len(s)] = 1
    return ids, mask


def softmax1(logits: np.ndarray) -> np.ndarray:
    """P(class 1) from 2-class logits, numerically stable."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e[:, 1] / e.sum(axis=1)


def length_order(ids: Sequence[Sequence[int]]) -> np.ndarray:
    """Row order by token length (stable), so batches need little padding."""
    return np.argsort([len(x) for x in ids], kind="stable")


def scoring_autocast(device: str) -> Any:
    """bf16 (fp16 on older GPUs) autocast on CUDA; nothing elsewhere (CPU scoring stays fp32)."""
    import torch

    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return contextlib.nullcontext()


def score_ids(model: Any, ids: list[list[int]], pad_id: int, batch_size: int, device: str) -> np.ndarray:
    """P(anomalous) per token-id row: length-sorted batches, dynamic padding, no grad; input order kept."""
    import torch

    order = length_order(ids)
    out = np.empty(len(ids), dtype=np.float64)
    with torch.inference_mode(), scoring_autocast(device):
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            x, m = pad_batch([ids[j] for j in idx], pad_id)
            logits = model(input_ids=x.to(device), attention_mask=m.to(device)).logits.float().cpu().numpy()
            out[idx] = softmax1(logits.astype(np.float64))
    return out


def mean_pooled(base: Any, ids: list[list[int]], pad_id: int, batch_size: int, device: str) -> np.ndarray:
    """Mean of the last hidden states over each row's real tokens (input order, no sorting)."""
    import torch

    rows = []
    with torch.inference_mode():
        for i in range(0, len(ids), batch_size):
            x, m = pad_batch(ids[i:i + batch_size], pad_id)
            h = base(input_ids=x.to(device), attention_mask=m.to(device)).last_hidden_state.float()
            mf = m.to(h.device).unsqueeze(-1).float()
            rows.append(((h * mf).sum(1) / mf.sum(1)).cpu().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, 0))


__all__ = ["EncodedDataset", "collator", "encode", "encode_auto", "pad_batch", "softmax1", "length_order",
           "scoring_autocast", "score_ids", "mean_pooled"]
