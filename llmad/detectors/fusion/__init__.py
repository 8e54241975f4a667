"""Detectors that fuse the language model with the numbers: ``config`` (StackConfig, FusionConfig), ``stack``
(StackDetector: a tree over features + a cross-fitted LM score)."""
