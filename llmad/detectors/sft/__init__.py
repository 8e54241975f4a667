"""Encoder fine-tuning (SFT) detector: ``config`` (SFTConfig), ``model`` (load, freeze, LoRA, model folders),
``batching`` (token ids, padded batches), ``training`` (Trainer, loss, checkpoints), ``detector`` (SFTDetector),
``fast`` (faster scoring backends for streaming)."""
