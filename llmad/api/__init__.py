"""Python API: one run function per command, each returning a RunResult (metrics, predictions, details)."""
