"""What the report shows of an SFT run besides its scores: t-SNE coordinates of test-job embeddings and the
last-layer attention over one flagged anomalous job (written into the run folder, plotted by ``plots.py``)."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmad.errors import LlmadError
from llmad.io import write_frame_csv, write_json


def write_sft_extras(run_dir: Path, seed: int, det: Any, test: pd.DataFrame, preds: pd.DataFrame, n: int = 600
                     ) -> None:
    """t-SNE coordinates of test-job embeddings and the attention of one flagged anomalous job, cached in the run."""
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    y = test["label"].to_numpy()
    # Keep anomalies visible: up to half of the sample is anomalous.
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    n_pos = min(len(pos), n // 2)
    idx = np.sort(np.concatenate([rng.choice(pos, n_pos, replace=False),
                                  rng.choice(neg, min(len(neg), n - n_pos), replace=False)]))
    texts = det.render(test.iloc[idx])
    emb = det.embed_texts(texts)
    perplexity = float(min(30, max(2, (len(idx) - 1) / 3)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(emb)
    write_frame_csv(run_dir / "tsne.csv", pd.DataFrame({
        "x": xy[:, 0], "y": xy[:, 1], "label": y[idx], "anomaly_type": test["anomaly_type"].to_numpy()[idx],
        "score": preds["score"].to_numpy()[idx]}))
    write_json(run_dir / "attention.json", sft_attention(det, test, preds))


def sft_attention(det: Any, test: pd.DataFrame, preds: pd.DataFrame) -> dict[str, Any]:
    """Last-layer attention (mean over heads) for one correctly flagged anomalous test job (else the top-scored)."""
    import torch

    hit = np.flatnonzero((preds["label"].to_numpy() == 1) & (preds["prediction"].to_numpy() == 1))
    i = int(hit[np.argmax(preds["score"].to_numpy()[hit])]) if len(hit) else int(np.argmax(preds["score"].to_numpy()))
    text = det.render(test.iloc[[i]])[0]
    model = det.model_
    enc = det.tokenizer_(text, truncation=True, max_length=det.config.max_length, return_tensors="pt")
    prev = getattr(model.config, "_attn_implementation", None)
    with contextlib.suppress(Exception):
        model.set_attn_implementation("eager")  # fused attention kernels return no weights
    try:
        with torch.inference_mode():
            out = model(**{k: v.to(det.device_) for k, v in enc.items()}, output_attentions=True)
    finally:
        if prev and prev != "eager":
            with contextlib.suppress(Exception):
                model.set_attn_implementation(prev)
    if not out.attentions:
        raise LlmadError("the SFT model returned no attention weights")
    att = out.attentions[-1][0].float().mean(0).cpu().numpy()
    tokens = det.tokenizer_.convert_ids_to_tokens(enc["input_ids"][0])
    return {"text": text, "tokens": tokens, "attention": att.round(5).tolist(), "layer": len(out.attentions) - 1,
            "label": int(preds["label"].iloc[i]), "score": float(preds["score"].iloc[i]),
            "job": str(preds["key"].iloc[i])}

