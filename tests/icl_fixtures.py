"""Shared ICL test helpers: synthetic jobs, the SmolLM2 tokenizer, tiny random decoders wrapped as LoadedLM."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmad.data.flowbench import PAPER_FEATURES


def make_jobs(n: int, seed: int = 0, frac_abnormal: float = 0.4) -> pd.DataFrame:
    """Jobs with the paper's features; abnormal ones have a long runtime."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < frac_abnormal).astype(int)
    rows = {f: np.round(rng.uniform(1, 50, n), 1) for f in PAPER_FEATURES}
    rows["runtime"] = np.where(y == 1, rng.uniform(900, 2000, n), rng.uniform(10, 300, n)).round(0)
    df = pd.DataFrame(rows)
    df["label"] = y
    df["job_id"] = [f"job{seed}_{i}" for i in range(n)]
    df["anomaly_type"] = np.where(y == 1, "cpu_3", "normal")
    return df


@pytest.fixture(scope="module")
def smol_tokenizer():
    from transformers import AutoTokenizer

    from llmad.models.smollm2 import convert_smollm2

    return AutoTokenizer.from_pretrained(convert_smollm2())


def tiny_gpt2(tokenizer, n_positions: int = 1024, seed: int = 0, chat: bool = False):
    """A random 2-layer GPT-2 (no chat template unless asked) wrapped as a LoadedLM."""
    import copy

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from llmad.models.causal_lm import LoadedLM

    tok = copy.deepcopy(tokenizer)
    if not chat:
        tok.chat_template = None
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=n_positions, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = GPT2LMHeadModel(cfg).eval()
    return LoadedLM(model=model, tokenizer=tok, device="cpu", dtype=torch.float32, name="tiny-gpt2",
                    location="memory", load_in_4bit=False)


def tiny_llama(tokenizer, path: Path | None = None, seed: int = 0, chat: bool = True):
    """A random 2-layer Llama (SmolLM2's architecture, chat template kept) as a LoadedLM; ``path``: also saved
    there (model + tokenizer), so that ``load_causal_lm(path)`` re-opens the same weights."""
    import copy

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmad.models.causal_lm import LoadedLM

    tok = copy.deepcopy(tokenizer)
    if not chat:
        tok.chat_template = None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).eval()
    location = "memory"
    if path is not None:
        model.save_pretrained(path, safe_serialization=True)
        tok.save_pretrained(path)
        location = str(path)
    return LoadedLM(model=model, tokenizer=tok, device="cpu", dtype=torch.float32, name="tiny-llama",
                    location=location, load_in_4bit=False)
