"""Label-free detection by language-model likelihood (AnoLLM style): ``config`` (options, threshold rules),
``serialize`` (rows -> text with value spans), ``lm`` (fine-tuning, batched value-token NLL), ``detector``
(``NLLDetector`` for jobs, ``WindowNLLDetector`` for metric windows)."""
