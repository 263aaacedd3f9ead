"""User-facing errors: one line that says what is wrong, where, and how to fix it.

The CLI catches :class:`HamrError`, prints ``str(err)`` on one line and exits with code 2,
so nothing a user can cause by bad input ever ends in a traceback.
"""
from __future__ import annotations


class HamrError(Exception):
    """Base class of every error the CLI reports as a one-line message (exit code 2)."""


class ConfigError(HamrError):
    """A bad option, option combination, method or model name."""


class DataError(HamrError):
    """Bad input data. The message names file, line (JSON lines) or record, and field."""

    def __init__(self, message: str, *, file=None, line: int | None = None,
                 record: int | None = None, field: str | None = None, hint: str | None = None):
        self.message, self.file, self.line = message, file, line
        self.record, self.field, self.hint = record, field, hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.file is not None:
            where.append(f"{self.file}" + (f":{self.line}" if self.line is not None else ""))
        if self.record is not None:
            where.append(f"record {self.record}")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        text = (", ".join(where) + ": " if where else "") + self.message
        if self.hint:
            text += f" ({self.hint})"
        return text
