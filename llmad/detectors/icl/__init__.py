"""In-context-learning detector on a decoder LLM: ``config`` (options), ``demos`` (which demonstrations), ``prompt``
(assembly), ``scoring`` (label words, generation, calibration), ``tuning`` (LoRA), ``detector`` (``ICLDetector``)."""
