"""In-context-learning detector on a decoder LLM."""
