"""Item (and other row) texts from a Python format-string template, without junk where fields are empty.

Clean-up rules, applied in this order to each rendered row (a field is *empty* when its value is missing,
NaN, an empty or blank string, or an empty list):

1. **Segments.** The template is cut into sentence-like segments after each ``.``, ``!``, ``?`` or ``;``
   followed by whitespace, and at line breaks. A segment that holds fields, all of them empty, is dropped
   whole, with its literal words: ``"Genres: {categories}. "`` disappears when there are no categories.
   Segments without fields are always kept.
2. **Brackets.** Inside a kept segment, a ``(...)`` or ``[...]`` group whose fields are all empty is dropped
   with the space before it: ``"{title} ({year})"`` gives ``"Heat"`` when the year is unknown.
3. **Separators.** An empty field takes one ``,``/``;``/``|``/`` - `` separator with it: the one before it,
   or the one after it when none is before: ``"{title}, {year} - {director}"`` gives ``"Heat - Mann"``.
4. **Punctuation and spaces.** A literal ``.`` right after a value that already ends in ``.``, ``!`` or ``?``
   is dropped (no ``"..")``); whitespace runs become one space (the text is one line); spaces before
   ``.,;:!?)]`` go; leading punctuation and trailing ``,;:|-`` go (in the template's words, never in values).

Values: lists join with ``", "``; whole floats print as integers (``1995.0`` -> ``"1995"``); strings are
stripped. A format spec or conversion in the template (``{year:.0f}``, ``{title!r}``) applies to the raw value.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mtlrec.errors import ConfigError

__all__ = ["DEFAULT_ITEM_TEMPLATE", "render_item_texts", "render_texts", "template_fields"]

DEFAULT_ITEM_TEMPLATE = "{title} ({year}). Genres: {categories}. {text}"

_FORMATTER = string.Formatter()
_SEGMENT_END = re.compile(r"(?<=[.!?;])\s+|\n+")
# Markers in a row's skeleton: \x00 an empty field, \x01<n>\x02 the n-th non-empty value (literals hold none).
_EMPTY_BRACKETS = re.compile(r"\s*(?:\((?:[^()\[\]\x01]*)\)|\[(?:[^()\[\]\x01]*)\])")
_SEP_AFTER_EMPTY = re.compile(r"\x00\s*(?:[,;|]|\s-)\s*")
_SEP_BEFORE_EMPTY = re.compile(r"\s*(?:[,;|]|\s-)\s*\x00")
_VALUE = re.compile(r"\x01(\d+)\x02(\.?)")


@dataclass(frozen=True)
class _Field:
    expr: str  # as written, e.g. "categories[0]"
    base: str  # the column, e.g. "categories"
    spec: str
    conversion: str | None


_Piece = str | _Field  # a template is a list of literal strings and fields


def template_fields(template: str) -> list[str]:
    """Column names a template uses, in order of first use; a malformed template raises ``ConfigError``."""
    names: list[str] = []
    for piece in _parse(template):
        if isinstance(piece, _Field) and piece.base not in names:
            names.append(piece.base)
    return names


def _parse(template: str) -> list[_Piece]:
    pieces: list[_Piece] = []
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise ConfigError(f"text template {template!r} is not a valid format string: {exc}") from None
    for literal, expr, spec, conversion in parsed:
        if literal:
            pieces.append(literal)
        if expr is None:
            continue
        base = re.match(r"[^.\[]*", expr).group(0)  # type: ignore[union-attr]  # always matches
        if not base or base.isdigit():
            raise ConfigError(f"text template {template!r} has a positional field '{{{expr}}}'; name a column")
        if spec and "{" in spec:
            raise ConfigError(f"text template {template!r}: nested fields in format specs are not supported")
        pieces.append(_Field(expr, base, spec or "", conversion))
    return pieces


def _segments(pieces: list[_Piece]) -> list[list[_Piece]]:
    """Cut after sentence ends in literals; the terminator and the whitespace after it stay with the left side."""
    segments: list[list[_Piece]] = [[]]
    for piece in pieces:
        if isinstance(piece, _Field):
            segments[-1].append(piece)
            continue
        start = 0
        for match in _SEGMENT_END.finditer(piece):
            segments[-1].append(piece[start : match.end()])
            segments.append([])
            start = match.end()
        if piece[start:]:
            segments[-1].append(piece[start:])
    return [s for s in segments if s]


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray, pd.Series)):
        return all(_is_empty(v) for v in value)
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _plain(value: Any) -> str:
    """Default text of a non-empty value."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray, pd.Series)):
        return ", ".join(_plain(v) for v in value if not _is_empty(v))
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value).strip()


def _render_field(field: _Field, row: dict[str, Any], template: str) -> str:
    value = row[field.base]
    if _is_empty(value):
        return ""
    if field.expr != field.base:
        try:
            value = _FORMATTER.get_field(field.expr, (), {field.base: value})[0]
        except (LookupError, AttributeError, TypeError):
            return ""  # e.g. "{categories[1]}" on an item with one category: nothing to say
        if _is_empty(value):
            return ""
    if not field.spec and not field.conversion:
        return _plain(value)
    try:
        return format(_FORMATTER.convert_field(value, field.conversion), field.spec).strip()
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"text template {template!r}: cannot format '{{{field.expr}}}' = {value!r}: {exc}") from None


def _render_row(segments: list[list[_Piece]], row: dict[str, Any], template: str) -> str:
    values: list[str] = []
    kept: list[str] = []
    for segment in segments:
        skeleton: list[str] = []
        has_field = has_value = False
        for piece in segment:
            if isinstance(piece, str):
                # Literal text cannot hold the marker bytes; drop them so they cannot confuse the rules.
                skeleton.append(piece.translate({0: None, 1: None, 2: None, 3: None}))
                continue
            has_field = True
            text = _render_field(piece, row, template)
            if text:
                has_value = True
                skeleton.append(f"\x01{len(values)}\x02")
                values.append(text)
            else:
                skeleton.append("\x00")
        if has_field and not has_value:
            continue  # rule 1
        kept.append("".join(skeleton))
    skeleton_text = "".join(kept)
    skeleton_text = _EMPTY_BRACKETS.sub(lambda m: "" if "\x00" in m.group(0) else m.group(0), skeleton_text)
    # The separator before an empty field goes with it; \x03 marks the field as settled so that the separator
    # after it, which now joins its neighbours, stays. Only a field with no separator before loses the one after.
    skeleton_text = _SEP_BEFORE_EMPTY.sub("\x03", skeleton_text)
    skeleton_text = _SEP_AFTER_EMPTY.sub(" ", skeleton_text).replace("\x00", "").replace("\x03", "")
    # Rule 4 on the skeleton, so that values (e.g. the title "...And Justice for All") are never trimmed.
    skeleton_text = re.sub(r"\s+", " ", skeleton_text)
    skeleton_text = re.sub(r" (?=[.,;:!?)\]])", "", skeleton_text)
    skeleton_text = re.sub(r"^[\s.,;:!?|-]+|[\s,;:|-]+$", "", skeleton_text)

    def value(match: re.Match[str]) -> str:
        text = values[int(match.group(1))]
        return text if match.group(2) and text.endswith((".", "!", "?")) else text + match.group(2)

    return re.sub(r"\s+", " ", _VALUE.sub(value, skeleton_text)).strip()


def _row_set(rows: Iterable[int] | np.ndarray | None, n: int) -> np.ndarray:
    """Bool mask over ``n`` rows from positional indexes (or from a bool mask of length ``n``)."""
    mask = np.zeros(n, dtype=bool)
    if rows is None:
        return mask
    array = np.asarray(list(rows) if isinstance(rows, (set, frozenset)) else rows)
    if array.dtype == bool:
        if array.shape != (n,):
            raise ValueError(f"a boolean row mask needs {n} entries, got {array.shape}")
        return array.copy()
    array = array.astype(np.int64, copy=False).reshape(-1)
    if len(array) and (array.min() < -n or array.max() >= n):
        raise IndexError(f"row indexes must lie in [0, {n}), got {array.min()}..{array.max()}")
    mask[array] = True
    return mask


def render_texts(
    frame: pd.DataFrame,
    template: str,
    blank: dict[str, Iterable[int] | np.ndarray] | None = None,
    what: str = "item",
) -> list[str]:
    """One text per row of ``frame`` from ``template`` (any column is a field), cleaned as the module says.

    ``blank`` maps a column to the positional row indexes where that column must render as empty. An unknown
    field raises ``ConfigError`` naming it and the available ``what`` fields.
    """
    pieces = _parse(template)
    columns = [str(c) for c in frame.columns]
    for name in template_fields(template):
        if name not in columns:
            raise ConfigError(
                f"{what} text template field '{{{name}}}' is unknown; available fields: {', '.join(columns)}"
            )
    for name in blank or {}:
        if name not in columns:
            raise ConfigError(f"cannot blank unknown {what} field '{name}'; available fields: {', '.join(columns)}")
    used = template_fields(template)
    data = {name: frame[name].tolist() for name in used}
    masks = {name: _row_set(rows, len(frame)) for name, rows in (blank or {}).items() if name in used}
    segments = _segments(pieces)
    texts: list[str] = []
    for i in range(len(frame)):
        row = {name: (None if name in masks and masks[name][i] else column[i]) for name, column in data.items()}
        texts.append(_render_row(segments, row, template))
    return texts


def render_item_texts(
    items: pd.DataFrame,
    template: str = DEFAULT_ITEM_TEMPLATE,
    hide_categories: Iterable[int] | np.ndarray | None = None,
) -> list[str]:
    """One text per item row (``Dataset.items``: item_id, title, text, categories, year, ...).

    ``hide_categories`` holds positional row indexes (or a bool mask) of items rendered as if they had no
    categories, so a category classifier can be evaluated on items whose labels are not in their text.
    """
    blank: dict[str, Iterable[int] | np.ndarray] = {}
    if hide_categories is not None:
        blank["categories"] = hide_categories
    return render_texts(items, template, blank=blank, what="item")
