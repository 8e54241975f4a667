"""Commands for compare (filled in by its issue)."""
from llmad.cli import app  # noqa: F401
