"""User-facing errors: one line naming the file, row/field and what was expected; the CLI exits 2."""
from __future__ import annotations

import warnings


class LlmadError(Exception):
    """An error caused by input or configuration, shown to the user as one line (exit code 2)."""


class DataError(LlmadError):
    """Bad or missing data: names the file, row and field where known."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None,
                 field: str | None = None):
        where = ", ".join(p for p in (
            f"file {file}" if file else "",
            f"row {row}" if row is not None else "",
            f"field {field!r}" if field else "") if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.file, self.row, self.field = file, row, field


class ModelNotFoundError(LlmadError):
    """A model id/path could not be resolved (offline hub, typo)."""


class LlmadWarning(UserWarning):
    """Suspicious-but-usable input, shown as ``warning [<name>]: <message>`` and counted (``llmad data info``)."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name, self.message = name, message

    def __str__(self) -> str:
        return f"[{self.name}] {self.message}"


def warn(name: str, message: str) -> LlmadWarning:
    """Issue a named warning (``name`` is a short kebab-case class, e.g. ``duplicate-job-id``) and return it."""
    w = LlmadWarning(name, message)
    warnings.warn(w, stacklevel=2)
    return w
