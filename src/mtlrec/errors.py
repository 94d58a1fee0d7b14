"""Errors a user can act on: each names where the problem is and what to do about it."""

from __future__ import annotations

from pathlib import Path

MAX_PROBLEM = 300  # characters of a problem or hint: messages quote values, never a whole MB-sized field or header
_CONTROL = {c: repr(chr(c))[1:-1] for c in (*range(32), 127)}  # "\n", "\x00", ...: a message stays one line


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` with control characters escaped (one line, no terminal escapes), cut to ``limit`` characters."""
    text = str(text).translate(_CONTROL)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


class MtlrecError(Exception):
    """Base class for errors the CLI reports in one line (exit status 2), without a traceback."""

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(one_line(str(message), 4 * MAX_PROBLEM), *args)


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
        problem = one_line(problem, MAX_PROBLEM)
        hint = None if hint is None else one_line(hint, MAX_PROBLEM)
        field = None if field is None else one_line(field, 60)
        self.path, self.line, self.field, self.problem, self.hint = path, line, field, problem, hint
        where = ""
        if path is not None:
            where = one_line(str(path))
            if line is not None:
                where += f", line {line}"
        if field is not None:
            where += f"{', ' if where else ''}field '{field}'"
        message = f"{where}: {problem}" if where else problem
        if hint:
            message += f" ({hint})"
        Exception.__init__(self, message)

    def __reduce__(self):  # pickled (worker processes) with its parts, so the message is rebuilt unchanged
        return _data_error, (self.problem, self.path, self.line, self.field, self.hint)


def _data_error(problem: str, path: str | Path | None, line: int | None, field: str | None, hint: str | None):
    return DataError(problem, path=path, line=line, field=field, hint=hint)


class ArtifactError(MtlrecError):
    """A run directory is missing a file or holds weights that do not fit its config."""
