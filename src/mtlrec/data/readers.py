"""Vectorised table readers whose errors cite the file, the line (or Parquet row), the field and a fix.

Everything runs column-wise in pandas' C parser or pyarrow, so a 25M-row ratings file costs no Python loop. The
happy path reads numbers directly as float64; only when that fails is the file read again as text to find the
first bad value, so locating errors costs nothing on good input.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mtlrec.data.validate import Table, drop_trailing_blank_rows, require_values, to_number
from mtlrec.errors import ConfigError, DataError

PARQUET_SUFFIXES = (".parquet", ".pq")
# Rows of a Parquet file converted at a time: one batch's Python strings exist at once, never the whole file's.
PARQUET_BATCH = 1 << 20
_FIELDS_RE = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
_QUOTE_RE = re.compile(r"EOF inside string starting at row (\d+)")


def check_file(path: str | Path, *, dataset: str | None = None) -> Path:
    """The path as a Path, or a DataError when it is missing, a folder or empty."""
    p = Path(path)
    fix = f"run `mtlrec data download {dataset}` or pass --data-dir" if dataset else "check the path"
    if not p.exists():
        raise DataError("file not found", path=p, hint=fix)
    if p.is_dir():
        raise DataError("is a folder, not a file", path=p, hint="pass the path of the table file itself")
    if p.stat().st_size == 0:
        raise DataError("file is empty", path=p, hint=f"it holds no rows; {fix}")
    return p


def is_parquet(path: str | Path) -> bool:
    return Path(path).suffix.lower() in PARQUET_SUFFIXES


def check_options(sep: str, encoding: str) -> None:
    """ConfigError unless ``sep`` is a separator pandas' C parser takes and ``encoding`` a known text encoding."""
    if not isinstance(sep, str) or (len(sep) != 1 and sep != r"\s+") or sep in "\r\n" or not sep.isascii():
        raise ConfigError(f"sep: a one-character ASCII field separator (',', '\\t', ';', '|'), not {sep!r}")
    try:
        "x".encode(encoding).decode(encoding)  # a LookupError for unknown names and for rot13, base64 & co.
    except (LookupError, TypeError, ValueError):  # ValueError: a NUL in the name; UnicodeError is one too
        raise ConfigError(
            f"encoding: {encoding!r} is not a text encoding Python knows; use e.g. 'utf-8', 'latin-1' or 'cp1252'"
        ) from None


def read_header(path: str | Path, *, sep: str = ",", encoding: str = "utf-8", dataset: str | None = None) -> list[str]:
    """Column names of a CSV header line or a Parquet schema; a name given twice is a DataError."""
    check_options(sep, encoding)
    p = check_file(path, dataset=dataset)
    if is_parquet(p):
        names = list(_parquet_schema(p).names)
        _check_repeated_names(p, names, None)
        return names
    # The first line as it is: pandas would rename a repeated "rating" to "rating.1" and read only the first one.
    first = _read_csv(p, sep=sep, encoding=encoding, header=None, nrows=1, dtype=str)
    raw = first.iloc[0].tolist() if len(first) else []
    _check_repeated_names(p, [n for n in raw if isinstance(n, str)], 1)
    return [str(c) for c in _read_csv(p, sep=sep, encoding=encoding, nrows=0).columns]


def read_table(
    path: str | Path,
    *,
    names: Sequence[str] | None = None,
    columns: Mapping[str, str] | None = None,
    required: Sequence[str] = (),
    optional: Sequence[str] = (),
    floats: Sequence[str] = (),
    ints: Sequence[str] = (),
    nullable: Sequence[str] = (),
    sep: str = ",",
    encoding: str = "utf-8",
    quoted: bool = True,
    double_colon: bool = False,
    dataset: str | None = None,
    ids: Sequence[str] = (),
) -> Table:
    """Read a delimited or Parquet table into columns named ``required + optional`` (those present).

    ``names`` gives the columns of a headerless file; otherwise the header is read and ``columns`` maps our name to
    the file's header name (identity by default). ``floats``/``ints`` must be finite numbers on every row unless
    also in ``nullable``; every other column is text, and ``required`` text columns may not be empty.
    ``double_colon`` reads GroupLens ``a::b::c`` files with the C parser by splitting on ':' and dropping the empty
    fields in between, which is many times faster than pandas' regex separator.
    ``ids``: text columns whose values repeat over many rows (user and item ids); from Parquet they are read in
    streaming batches into pandas Categoricals (each id stored once, 4 bytes a row).
    """
    check_options(sep, encoding)
    p = check_file(path, dataset=dataset)
    mapping = dict(columns or {})
    if names is None:
        header = read_header(p, sep=sep, encoding=encoding)
        file_names = list(header)
        # One mapping serves every table: a table whose header uses our own name for a column still reads.
        mapping = {c: n for c, n in mapping.items() if n in header or c not in header}
        _require_columns(p, header, required, mapping)
        keep = [c for c in (*required, *optional) if mapping.get(c, c) in header]
        first_line: int | None = 2
    else:
        file_names, keep, first_line = list(names), [*required, *[c for c in optional if c in names]], 1
    numeric = {mapping.get(c, c) for c in (*floats, *ints) if c in keep}
    if is_parquet(p):
        compact = {mapping.get(c, c) for c in ids if c in keep}
        frame, first_line = _read_parquet(p, [mapping.get(c, c) for c in keep], numeric, compact), None
    else:
        frame = _read_delimited(
            p,
            file_names,
            numeric,
            header=names is None,
            sep=sep,
            encoding=encoding,
            quoted=quoted,
            double_colon=double_colon,
        )
    frame = frame[[mapping.get(c, c) for c in keep]]
    frame.columns = keep
    table = Table(frame, p, first_line, {c: mapping.get(c, c) for c in keep})
    drop_trailing_blank_rows(table)
    if len(table.frame) == 0:
        raise table.error("no data rows", row=0, hint="the file holds no rows below its header; add some")
    for col in keep:
        if col in floats or col in ints:
            to_number(table, col, integer=col in ints, allow_missing=col in nullable)
        elif col in required:
            require_values(table, col)
    return table


# -- internals ------------------------------------------------------------------------------------------------------
def _read_csv(
    path: Path,
    *,
    sep: str,
    encoding: str,
    quoted: bool = True,
    fields_per_column: int = 1,
    labels: Sequence[str] = (),
    **kw,
) -> pd.DataFrame:
    """pandas' C parser with its errors turned into DataErrors that cite the line (``labels``: the file's fields)."""
    try:
        return pd.read_csv(
            path,
            sep=sep,
            encoding=encoding,
            engine="c",
            quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE,
            keep_default_na=False,
            na_values=[""],
            skip_blank_lines=False,
            **kw,
        )
    except UnicodeError as e:  # UnicodeDecodeError, or e.g. "UTF-16 stream does not start with BOM"
        line, column, bad = _locate_decode_error(path, encoding, sep)
        label = labels[column] if column < len(labels) else None
        raise DataError(
            f"not valid {encoding} text" + (f" (byte 0x{bad[:1].hex()})" if bad else ""),
            path=path,
            line=line,
            field=label,
            hint="re-save the file as UTF-8 or pass the file's encoding, e.g. encoding='latin-1'",
        ) from e
    except pd.errors.EmptyDataError as e:
        raise DataError("file is empty", path=path, hint="it holds no header and no rows") from e
    except pd.errors.ParserError as e:
        text = str(e)
        if m := _FIELDS_RE.search(text):
            want, line, saw = (int(g) for g in m.groups())
            if fields_per_column > 1:  # count '::'-separated fields, not ':'-separated ones
                want, saw = (want + 1) // 2, (saw + 1) // 2
            raise DataError(
                f"expected {want} fields, found {saw}",
                path=path,
                line=line,
                hint=f"check the separator {sep * fields_per_column!r} and quoting on that line",
            ) from e
        if m := _QUOTE_RE.search(text):
            raise DataError(
                "a quoted field is never closed",
                path=path,
                line=int(m.group(1)) + 1,
                hint='close the quote or escape quotes inside fields as ""',
            ) from e
        raise DataError(f"cannot parse the file: {text}", path=path, hint="check the separator and quoting") from e


def _read_delimited(
    path: Path,
    file_names: list[str],
    numeric: set[str],
    *,
    header: bool,
    sep: str,
    encoding: str,
    quoted: bool,
    double_colon: bool,
) -> pd.DataFrame:
    names, per = file_names, 1
    if double_colon:  # "a::b::c" split on ':' is "a", "", "b", "", "c": name the empty gaps and check them
        sep, per = ":", 2
        names = [file_names[0]]
        for k, name in enumerate(file_names[1:]):
            names += [f"__gap{k}__", name]
    kw = dict(
        sep=sep, encoding=encoding, quoted=quoted, fields_per_column=per, labels=names, header=0 if header else None
    )
    if not header:
        kw["names"] = names
    gaps = {n: "float32" for n in names if n.startswith("__gap")}  # cheapest dtype for always-empty fields
    try:
        frame = _read_csv(path, dtype={n: ("float64" if n in numeric else "str") for n in names} | gaps, **kw)
    except ValueError:  # a number column holds text: read it as text so _to_number can point at the bad line
        frame = _read_csv(path, dtype={n: "str" for n in names}, **kw)
    if gaps:
        filled = frame[list(gaps)].notna().to_numpy().any(axis=1)
        if filled.any():
            raise DataError(
                "fields must be separated by '::'",
                path=path,
                line=int(np.flatnonzero(filled)[0]) + 1,
                hint="a single ':' inside a value is not supported in GroupLens '::' files",
            )
    return frame


def _parquet_schema(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path)
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise DataError(
            f"not a readable Parquet file ({e})",
            path=path,
            hint="write it with pandas.DataFrame.to_parquet or pass a CSV file",
        ) from e


def _read_parquet(path: Path, columns: list[str], numeric: set[str], ids: set[str] = frozenset()) -> pd.DataFrame:
    """The columns of a Parquet file, scanned in record batches of PARQUET_BATCH rows (pyarrow datasets). An ``ids``
    column becomes a Categorical built batch by batch: each batch's distinct ids are looked up in (or added to)
    the id map of the batches before, so a 10^7-row file costs 4 bytes a row, not a Python string a row."""
    import pyarrow.dataset as pads

    parts: dict[str, list] = {name: [] for name in columns}
    id_maps: dict[str, dict[str, int]] = {name: {} for name in ids}  # id -> code, in order of first appearance
    try:
        for batch in pads.dataset(path, format="parquet").to_batches(columns=columns, batch_size=PARQUET_BATCH):
            frame = batch.to_pandas()
            for name in columns:
                col = _parquet_column(frame[name], name in numeric, path, name)
                if name not in ids:
                    parts[name].append(col)
                    continue
                codes, uniques = pd.factorize(col)
                known = id_maps[name]
                lookup = np.fromiter((known.setdefault(u, len(known)) for u in uniques), np.int32, len(uniques))
                parts[name].append(np.where(codes >= 0, lookup[np.maximum(codes, 0)], -1).astype(np.int32))
    except DataError:
        raise
    except Exception as e:  # a damaged file fails only when its pages are read (OSError, ArrowInvalid, ...)
        raise DataError(
            f"not a readable Parquet file ({e})",
            path=path,
            hint="it is damaged or cut short, or holds values pandas cannot read (dates before year 1); write it "
            "again with pandas.DataFrame.to_parquet",
        ) from e
    out: dict[str, object] = {}
    for name in columns:
        if name in ids:
            codes = np.concatenate(parts[name]) if parts[name] else np.zeros(0, dtype=np.int32)
            out[name] = pd.Categorical.from_codes(codes, categories=pd.Index(list(id_maps[name]), dtype=object))
        else:
            out[name] = pd.concat(parts[name], ignore_index=True) if parts[name] else pd.Series([], dtype=object)
    return pd.DataFrame(out)


def _parquet_column(col: pd.Series, numeric: bool, path: Path, name: str) -> pd.Series:
    """One batch's column: numbers as stored (date-times as Unix seconds), everything else as text."""
    if numeric:
        if isinstance(col.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(col):
            return _unix_seconds(col)
        if pd.api.types.is_bool_dtype(col):  # refused, as "true" in a CSV file is
            raise DataError("a true/false column where numbers are expected", path=path, field=name,
                            hint="store numbers (e.g. 1.0 and 0.0 for a rating) if that is what it means")  # fmt: skip
        return col
    if isinstance(col.dtype, pd.CategoricalDtype) or not pd.api.types.is_string_dtype(col):
        try:
            return _as_text(col, path, name)
        except (ValueError, TypeError, OverflowError, NotImplementedError) as e:  # dates beyond pandas' range...
            raise DataError(
                f"cannot read the {col.dtype} column as text ({e})",
                path=path,
                field=name,
                hint="store ids and labels as strings or integers",
            ) from e
    return col


def _unix_seconds(col: pd.Series) -> pd.Series:
    """A Parquet timestamp column as Unix seconds (float, NaN where missing): the unit the CSV files use."""
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        col = col.dt.tz_convert("UTC").dt.tz_localize(None)
    ticks = col.to_numpy().view(np.int64)  # in the column's own unit (s, ms, us or ns): no overflow
    per_second = int(np.timedelta64(1, "s") // np.timedelta64(1, np.datetime_data(col.dtype)[0]))
    seconds = (ticks // per_second).astype(np.float64)
    return pd.Series(np.where(col.isna().to_numpy(), np.nan, seconds), index=col.index)


def _as_text(col: pd.Series, path: Path | None = None, name: str | None = None) -> pd.Series:
    """Ids and labels as text, missing values kept missing; ids stored as 1.0 read "1", like the CSV files."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        col = col.astype(object)
    if pd.api.types.is_float_dtype(col):
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            whole = (np.abs(values) < 2.0**53) & (values % 1 == 0)  # whole numbers a float holds exactly
        text = col.astype(str).where(~whole, col.where(whole).astype("Int64").astype(str))
        return text.mask(col.isna())
    if col.dtype == object and col.map(lambda v: isinstance(v, bytes)).any():
        col = col.map(lambda v: _decode(v, path, name, col) if isinstance(v, bytes) else v)
    return col.astype(str).mask(col.isna())


def _decode(value: bytes, path: Path | None, name: str | None, col: pd.Series) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        row = int(np.flatnonzero(col.map(lambda v: v is value).to_numpy())[0])
        raise DataError(
            f"binary value {value[:20]!r} is not UTF-8 text (row {row + 1})",
            path=path,
            field=name,
            hint="store ids and labels as strings or integers",
        ) from None


def _check_repeated_names(path: Path, names: list[str], line: int | None) -> None:
    seen: dict[str, int] = {}
    for k, name in enumerate(names):
        if name in seen:
            where = "the header" if line is not None else "the Parquet schema"
            raise DataError(
                f"column '{name}' appears twice in {where} (fields {seen[name] + 1} and {k + 1})",
                path=path,
                line=line,
                field=name,
                hint="rename or delete one of the two columns",
            )
        seen[name] = k


def _require_columns(path: Path, header: list[str], required: Sequence[str], mapping: Mapping[str, str]) -> None:
    for col in required:
        name = mapping.get(col, col)
        if name not in header:
            what = f"column '{name}'" + (f" (for {col})" if name != col else "")
            raise DataError(
                f"{what} not found; the header has: {', '.join(header)}",
                path=path,
                line=1,
                field=name,
                hint=f"rename the column or map it, e.g. columns={{'{col}': '<header name>'}}",
            )


def _locate_decode_error(path: Path, encoding: str, sep: str, block: int = 1 << 20) -> tuple[int | None, int, bytes]:
    """(1-based line, 0-based field index, offending bytes) of the first undecodable byte; (None, 0, b"") when the
    decoder fails without a position (a UTF-16 file without its byte-order mark).

    Blocks are cut after a newline byte, which never sits inside a multi-byte character in ASCII-compatible
    encodings, so each block decodes on its own and error offsets stay exact. Other encodings (UTF-16, EBCDIC)
    decode the whole file.
    """
    encoder = codecs.getincrementalencoder(encoding)()
    encoder.encode("x")  # past any byte-order mark
    if encoder.encode("\n") != b"\n":
        data = path.read_bytes()
        try:
            data.decode(encoding)
        except UnicodeDecodeError as e:
            before = data[: e.start].decode(encoding, errors="replace")
            return before.count("\n") + 1, before.rsplit("\n", 1)[-1].count(sep), data[e.start : e.end]
        except UnicodeError:
            pass
        return None, 0, b""
    line, carry = 1, b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(block)
            data = carry + chunk
            cut = len(data) if not chunk else data.rfind(b"\n") + 1  # at the end, the unterminated last line
            data, carry = data[:cut], data[cut:]
            try:
                data.decode(encoding)
            except UnicodeDecodeError as e:
                start = data.rfind(b"\n", 0, e.start) + 1
                column = data.count(sep.encode(), start, e.start)
                return line + data.count(b"\n", 0, e.start), column, data[e.start : e.end]
            except UnicodeError:
                return None, 0, b""
            line += data.count(b"\n")
            if not chunk:
                return None, 0, b""
