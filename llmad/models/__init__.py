"""Model resolution (aliases, hub ids, paths), device/precision choice, causal-LM loading and SmolLM2 conversion."""
