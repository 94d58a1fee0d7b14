"""Errors a user can act on: each names where the problem is and what to do about it."""

from __future__ import annotations

from pathlib import Path


class MtlrecError(Exception):
    """Base class for errors the CLI reports in one line (exit status 2), without a traceback."""


class ConfigError(MtlrecError):
    """A configuration key is unknown, mistyped or out of range."""


class DataError(MtlrecError):
    """Bad input data. The message names the file, the line (1-based, as an editor shows it), the field and a fix."""

    def __init__(
        self,
        problem: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.path, self.line, self.field, self.problem, self.hint = path, line, field, problem, hint
        where = ""
        if path is not None:
            where = str(path)
            if line is not None:
                where += f", line {line}"
        if field is not None:
            where += f"{', ' if where else ''}field '{field}'"
        message = f"{where}: {problem}" if where else problem
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class ArtifactError(MtlrecError):
    """A run directory is missing a file or holds weights that do not fit its config."""
