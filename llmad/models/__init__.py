"""Model resolution (``resolve``: alias | hub id | path, device, precision), SmolLM2 GGUF conversion (``smollm2``),
causal-LM loading (``causal_lm``), Trainer callbacks (``callbacks``) and offline file locations (``packages``)."""
