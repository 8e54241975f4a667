"""Encoder fine-tuning (SFT) detector."""
