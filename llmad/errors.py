"""User-facing errors: one line naming the file, row/field and what was expected; the CLI exits 2."""
from __future__ import annotations


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
