"""Decoder LLM loading for in-context learning: alias | hub id | path, 4-bit NF4, chat templates.

The SmolLM2 offline alias is converted from its GGUF by ``llmad.models.smollm2`` (through ``resolve_model``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmad.models.resolve import pick_device_dtype, resolve_model


@dataclass
class LoadedLM:
    """A causal LM, its tokenizer and where/how it runs."""

    model: Any
    tokenizer: Any
    device: str
    dtype: Any
    name: str
    location: str
    load_in_4bit: bool

    @property
    def has_chat_template(self) -> bool:
        """True when the tokenizer ships a chat template (instruct models)."""
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def context_window(self) -> int:
        """Maximum tokens the model attends to (n_positions for GPT-2, max_position_embeddings otherwise)."""
        return context_window(self.model)


def context_window(model: Any) -> int:
    """Maximum sequence length of a causal LM's config."""
    cfg = model.config
    for attr in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    return 2048


def bnb_4bit_config(compute_dtype: Any) -> Any:
    """NF4 double-quantised bitsandbytes config (QLoRA's recipe) with the given compute dtype."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def load_causal_lm(name: str, load_in_4bit: bool = False, trust_remote_code: bool = False,
                   device: str | None = None) -> LoadedLM:
    """Load a causal LM + tokenizer (alias | hub id | path), on CUDA when present, optionally 4-bit NF4."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_model(name)
    auto_device, dtype, _ = pick_device_dtype()
    device = device or auto_device
    if device == "cpu":
        dtype = torch.float32
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": dtype}
    if load_in_4bit:
        # bitsandbytes picks its CUDA kernels when the weights live on a GPU and its CPU path otherwise.
        kwargs["quantization_config"] = bnb_4bit_config(dtype)
        kwargs["device_map"] = {"": device if device != "cuda" else 0}
    tok = AutoTokenizer.from_pretrained(resolved.location, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(resolved.location, **kwargs)
    if not load_in_4bit:
        model.to(device)
    model.eval()
    if tok.pad_token_id is None:
        # GPT-2 style tokenizers have no pad token; padded positions are masked or ignored anyway.
        tok.pad_token = tok.eos_token
    if getattr(model.generation_config, "pad_token_id", None) is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return LoadedLM(model=model, tokenizer=tok, device=device, dtype=dtype, name=name,
                    location=resolved.location, load_in_4bit=load_in_4bit)


def is_4bit(model: Any) -> bool:
    """True when the model's linear layers are bitsandbytes 4-bit."""
    return bool(getattr(model, "is_loaded_in_4bit", False)) or any(
        type(m).__name__ == "Linear4bit" for m in model.modules())
