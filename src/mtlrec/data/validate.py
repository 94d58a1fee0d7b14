"""Checks on loaded tables; each failure is a DataError citing the file, the line (or Parquet row) and the field."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mtlrec.errors import ConfigError, DataError


@dataclass
class Table:
    """A table read from ``path``: row ``r`` of ``frame`` is file line ``first_line + r`` (None for Parquet)."""

    frame: pd.DataFrame
    path: Path
    first_line: int | None
    labels: dict[str, str] = field(default_factory=dict)  # frame column -> name in the file, for messages

    def error(
        self, problem: str, *, row: int | None = None, field: str | None = None, hint: str | None = None
    ) -> DataError:
        line = None
        if row is not None:
            if self.first_line is None:
                problem = f"{problem} (row {row + 1})"
            else:
                line = self.first_line + row
        label = None if field is None else self.labels.get(field, field)
        return DataError(problem, path=self.path, line=line, field=label, hint=hint)


def check_unique(table: Table, column: str, hint: str = "each id must have one row") -> None:
    """DataError naming both lines when an id occurs twice."""
    _check_repeats(table, [column], f"{column} '{{0}}' already appears on {{where}}", hint)


def check_known(table: Table, column: str, known: Table, kind: str) -> None:
    """DataError at the first row whose ``column`` value is not in ``known`` (the items or users table)."""
    unknown = ~table.frame[column].isin(known.frame[column]).to_numpy()
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        value = table.frame[column].iloc[row]
        raise table.error(
            f"{column} '{value}' is not in the {kind} table {known.path}",
            row=row,
            field=column,
            hint=f"add it to the {kind} table or remove the row",
        )


def strip_ids(table: Table, columns: Sequence[str]) -> None:
    """Ids are read without spaces around them (" u1" and "u1" are one user), with a warning naming the first line;
    an id that is only spaces is a DataError. Works on the distinct ids, so a clean column costs one hash pass."""
    for col in columns:
        values = table.frame[col]
        if isinstance(values.dtype, pd.CategoricalDtype):
            distinct = values.cat.categories.to_numpy(dtype=object)
        else:
            distinct = pd.unique(values.to_numpy(dtype=object))
        stripped = np.array([v.strip() if isinstance(v, str) else v for v in distinct], dtype=object)
        changed = distinct != stripped
        if not changed.any():
            continue
        rows = values.isin(distinct[changed]).to_numpy()
        row = int(np.flatnonzero(rows)[0])
        if (stripped[changed] == "").any():
            blank = values.isin(distinct[changed & (stripped == "")]).to_numpy()
            raise table.error("the id is only spaces", row=int(np.flatnonzero(blank)[0]), field=col,
                              hint="fill it in or delete the row")  # fmt: skip
        where = f"line {table.first_line + row}" if table.first_line is not None else f"row {row + 1}"
        warnings.warn(
            f"{table.path}: {int(rows.sum()):,} {table.labels.get(col, col)} value(s) have spaces around them (first "
            f"on {where}: {values.iloc[row]!r}); they are read without the spaces",
            stacklevel=3,
        )
        if isinstance(values.dtype, pd.CategoricalDtype):
            codes, merged = pd.factorize(stripped)  # two categories may become one
            table.frame[col] = pd.Categorical.from_codes(codes[values.cat.codes.to_numpy()], categories=merged)
        else:
            fixed = values.to_numpy(dtype=object).copy()
            fixed[rows] = [v.strip() for v in fixed[rows]]
            table.frame[col] = fixed


def resolve_duplicates(table: Table, on_duplicate: str = "error", hint: str | None = None) -> bool:
    """Handle repeated (user_id, item_id) rows; returns True when rows were dropped (so line numbers shift)."""
    if on_duplicate not in ("error", "first", "last"):
        raise ConfigError(f"on_duplicate must be 'error', 'first' or 'last', not {on_duplicate!r}")
    keys = ["user_id", "item_id"]
    if on_duplicate == "error":
        hint = hint or "remove one of the two rows (a generic dataset can keep one: --set data.on_duplicate=last)"
        _check_repeats(table, keys, "user '{0}' and item '{1}' already appear together on {where}", hint)
        return False
    dup = pd.Series(_row_keys(table.frame, keys)).duplicated(keep=on_duplicate).to_numpy()
    if not dup.any():
        return False
    table.frame = table.frame.loc[~dup].reset_index(drop=True)
    return True


# -- internals ------------------------------------------------------------------------------------------------------
def _row_keys(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """One int64 per row, equal exactly when the rows' ``columns`` are equal (factorised, so strings hash once)."""
    key = np.zeros(len(frame), dtype=np.int64)
    for col in columns:
        codes, uniques = pd.factorize(frame[col])
        key = key * (len(uniques) + 1) + codes
    return key


def _check_repeats(table: Table, columns: list[str], problem: str, hint: str) -> None:
    key = _row_keys(table.frame, columns)
    dup = pd.Series(key).duplicated().to_numpy()
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero(key == key[row])[0])
        where = f"line {table.first_line + first}" if table.first_line is not None else f"row {first + 1}"
        values = [table.frame[c].iloc[row] for c in columns]
        raise table.error(problem.format(*values, where=where), row=row, field=columns[-1], hint=hint)


def drop_trailing_blank_rows(table: Table) -> None:
    """Blank lines at the end are dropped; one in the middle is an error, since dropping it would shift lines."""
    blank = table.frame.isna().to_numpy().all(axis=1)
    if not blank.any():
        return
    filled = np.flatnonzero(~blank)
    end = int(filled[-1]) + 1 if len(filled) else 0
    if blank[:end].any():
        raise table.error(
            "blank line",
            row=int(np.flatnonzero(blank[:end])[0]),
            field=table.frame.columns[0],
            hint="delete the empty line",
        )
    table.frame = table.frame.iloc[:end]


def require_values(table: Table, col: str) -> None:
    """DataError at the first empty value of ``col``."""
    missing = table.frame[col].isna().to_numpy()
    if missing.any():
        raise table.error(
            "missing value",
            row=int(np.flatnonzero(missing)[0]),
            field=col,
            hint="every row needs this field; fill it in or delete the row",
        )


def to_number(table: Table, col: str, *, integer: bool, allow_missing: bool) -> None:
    """Turn ``col`` into float64 (int64 when ``integer``), or raise at the first non-number, NaN or infinity."""
    raw = table.frame[col]
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        values = raw.to_numpy(dtype=np.float64)
    else:
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        bad = np.isnan(values) & raw.notna().to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise table.error(
                f"'{raw.iloc[row]}' is not a number",
                row=row,
                field=col,
                hint="write a plain number (timestamps as Unix seconds), or delete the row",
            )
    nan = np.isnan(values)
    if nan.any() and not allow_missing:
        raise table.error(
            "missing or NaN value",
            row=int(np.flatnonzero(nan)[0]),
            field=col,
            hint="every row needs a number here; fill it in or delete the row",
        )
    inf = np.isinf(values)
    if inf.any():
        raise table.error(
            "infinite value",
            row=int(np.flatnonzero(inf)[0]),
            field=col,
            hint="write a finite number or delete the row",
        )
    if integer and not nan.any():
        huge = np.abs(values) >= 2.0**62
        if huge.any():
            raise table.error(
                "number too large for a 64-bit integer",
                row=int(np.flatnonzero(huge)[0]),
                field=col,
                hint="timestamps are Unix seconds; fix or delete the row",
            )
        # Integers (timestamps, ages) lose any fractional part: whole seconds are all the temporal split needs.
        values = values.astype(np.int64)
    table.frame[col] = values
