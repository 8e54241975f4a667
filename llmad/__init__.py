"""llmad: anomaly detection for workflow jobs and service metrics with language models."""
__version__ = "0.1.0"
