"""NLL detector test helpers: a tiny byte-level BPE tokenizer trained here on serialized jobs and a tiny Llama
over it (a few hundred tokens instead of SmolLM2's 49k: fine-tuning takes seconds), saved as a model folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def tiny_texts() -> list[str]:
    """Serialized job-like text covering digits, suffixes and the field names the tests use."""
    rng = np.random.default_rng(0)
    words = ["wms", "queue", "runtime", "post", "stage-in", "stage-out", "in-bytes", "out-bytes", "cpu", "task",
             "missing", "individuals", "a", "b", "c", "f0", "f1", "f2", "mean", "max", "k", "M", "G"]
    out = []
    for _ in range(300):
        parts = [f"{w} {rng.choice(['', '-'])}{rng.integers(0, 2000) / rng.choice([1, 10, 100]):g}"
                 for w in rng.choice(words, 6)]
        out.append(", ".join(parts))
    return out


def tiny_nll_lm(path: Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """A random ``layers``-layer Llama with a tiny byte-level BPE tokenizer, saved under ``path`` (with it)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    if (path / "config.json").is_file():
        return path
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(tiny_texts(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=512, bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                      pad_token_id=fast.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    fast.save_pretrained(path)
    return path
