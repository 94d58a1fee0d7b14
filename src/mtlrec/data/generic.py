"""Any interactions table (CSV, TSV or Parquet) with optional items and users tables."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from mtlrec.data.dataset import Dataset
from mtlrec.data.readers import read_header, read_table
from mtlrec.data.validate import Table, check_known, check_unique, resolve_duplicates, strip_ids
from mtlrec.errors import ConfigError

# Our column names; ``columns`` maps any of them to the header name used in the user's files.
COLUMN_NAMES = ("user_id", "item_id", "rating", "timestamp", "title", "text", "categories", "year")


def load_generic(
    path: str | Path,
    *,
    items_path: str | Path | None = None,
    users_path: str | Path | None = None,
    social_path: str | Path | None = None,
    columns: Mapping[str, str] | None = None,
    name: str | None = None,
    on_duplicate: str = "error",
    sep: str | None = None,
    encoding: str = "utf-8",
) -> Dataset:
    """Load ``user_id,item_id[,rating][,timestamp]`` interactions plus optional item and user tables.

    - ``columns``: our name -> header name, e.g. ``{"user_id": "customer", "item_id": "sku"}``.
    - No timestamp column: timestamp is the row number (file order) and ``has_timestamps`` is False.
    - No rating column: ratings are NaN and ``has_ratings`` is False.
    - Items table ``item_id,title[,text][,categories][,year]`` (categories '|'-joined); without one, items are
      the interacted ids with the id as title. Users table: ``user_id`` plus any feature columns.
    - Social table ``user_id,friend_id``: one row per directed edge (list a friendship both ways); both ends
      must be known users (the social task and ``model.friends`` read it).
    - ``on_duplicate``: a repeated (user, item) pair is an error, or keeps its ``"first"`` or ``"last"`` row.
    - ``sep``: the separator of delimited files (one character); by default tab for .tsv/.tab files, else comma.
    - ``encoding``: of delimited files (Python's names: "utf-8", "latin-1", "cp1252", ...); Parquet is UTF-8.
    - A header that names a column twice is an error (which of the two is meant is unknowable).
    - Ids (user, item, friend) are read without spaces around them, with a warning; an id of only spaces is an error.
    - Parquet: a timestamp column of a date-time type is read as Unix seconds (UTC, rounded down), like the
      numbers of the CSV files; ids of any type are read as text (1.0 reads "1").
    """
    mapping = _mapping(columns)
    kw = dict(columns=mapping, encoding=encoding)
    inter = read_table(
        path,
        required=["user_id", "item_id"],
        optional=["rating", "timestamp"],
        floats=["rating"],
        ints=["timestamp"],
        sep=_sep(path, sep),
        ids=["user_id", "item_id"],
        **kw,
    )
    strip_ids(inter, ["user_id", "item_id"])
    items = users = None
    if items_path is not None:
        items = read_table(
            items_path,
            required=["item_id", "title"],
            optional=["text", "categories", "year"],
            floats=["year"],
            nullable=["year"],
            sep=_sep(items_path, sep),
            **kw,
        )
        strip_ids(items, ["item_id"])
        check_unique(items, "item_id")
        check_known(inter, "item_id", items, "items")
    if users_path is not None:
        usep = _sep(users_path, sep)
        header = read_header(users_path, sep=usep, encoding=encoding)
        features = [c for c in header if c not in ("user_id", mapping.get("user_id"))]
        users = read_table(users_path, required=["user_id"], optional=features, sep=usep, **kw)
        strip_ids(users, ["user_id"])
        check_unique(users, "user_id")
        check_known(inter, "user_id", users, "users")

    social = None
    if social_path is not None:
        social = read_table(social_path, required=["user_id", "friend_id"], sep=_sep(social_path, sep), **kw)
        strip_ids(social, ["user_id", "friend_id"])
        known = (users if users is not None else inter).frame["user_id"]
        where = f"the users table {users.path}" if users is not None else f"the interactions {inter.path}"
        for column in ("user_id", "friend_id"):
            unknown = ~social.frame[column].isin(known).to_numpy()
            if unknown.any():
                row = int(np.flatnonzero(unknown)[0])
                raise social.error(f"{column} '{social.frame[column].iloc[row]}' is not a user in {where}", row=row,
                                   field=column, hint="remove the edge or add the user")  # fmt: skip

    frame = inter.frame
    has_timestamps, has_ratings = "timestamp" in frame, "rating" in frame
    if not has_timestamps:  # file order is the only order there is; number rows before duplicates go
        frame["timestamp"] = np.arange(len(frame), dtype=np.int64)
    if not has_ratings:
        frame["rating"] = np.nan
    inter.frame = frame[["user_id", "item_id", "rating", "timestamp"]]
    shifted = resolve_duplicates(inter, on_duplicate)

    sources = {"interactions": str(inter.path)}
    first_line: dict[str, int] = {}
    if inter.first_line is not None and not shifted:  # after dropping rows, row + first_line is no longer a line
        first_line["interactions"] = inter.first_line
    for key, table in (("items", items), ("users", users), ("social", social)):
        if table is not None:
            sources[key] = str(table.path)
            if table.first_line is not None:
                first_line[key] = table.first_line
    item_frame = _items(items) if items is not None else _items_from_ids(inter.frame["item_id"])
    user_frame = users.frame if users is not None else pd.DataFrame({"user_id": _unique_ids(inter.frame["user_id"])})
    vocab = sorted({c for cats in item_frame["categories"] for c in cats})
    return Dataset(
        name=name or Path(path).stem,
        interactions=inter.frame,
        items=item_frame,
        users=user_frame,
        social=None if social is None else social.frame[["user_id", "friend_id"]],
        categories=vocab,
        has_timestamps=has_timestamps,
        has_ratings=has_ratings,
        sources=sources,
        first_line=first_line,
    )


def _mapping(columns: Mapping[str, str] | None) -> dict[str, str]:
    mapping = dict(columns or {})
    unknown = sorted(set(mapping) - set(COLUMN_NAMES))
    if unknown:
        raise ConfigError(
            f"unknown column mapping key(s) {', '.join(unknown)}; valid keys: {', '.join(COLUMN_NAMES)} "
            "(map our name to your header name, e.g. user_id=customer)"
        )
    return mapping


def _sep(path: str | Path, sep: str | None) -> str:
    if sep is not None:
        return sep
    return "\t" if Path(path).suffix.lower() in (".tsv", ".tab") else ","


def _items(table: Table) -> pd.DataFrame:
    frame = table.frame
    n = len(frame)
    text = frame["text"].fillna("").astype(str) if "text" in frame else pd.Series([""] * n, dtype=str)
    cats = frame["categories"] if "categories" in frame else pd.Series([None] * n, dtype=object)
    # One Python step per item, not per interaction: item tables are small next to the interactions.
    categories = [[] if not isinstance(c, str) else [p.strip() for p in c.split("|") if p.strip()] for c in cats]
    year = frame["year"].to_numpy(dtype=np.float64) if "year" in frame else np.full(n, np.nan)
    return pd.DataFrame(
        {
            "item_id": frame["item_id"].to_numpy(),
            "title": frame["title"].fillna("").astype(str).to_numpy(),
            "text": text.to_numpy(),
            "categories": categories,
            "year": year,
        }
    )


def _unique_ids(ids: pd.Series) -> np.ndarray:
    """Distinct ids in order of first appearance, as plain strings (also from a Categorical column)."""
    return np.asarray(pd.unique(ids), dtype=object)


def _items_from_ids(item_ids: pd.Series) -> pd.DataFrame:
    ids = _unique_ids(item_ids)
    return pd.DataFrame(
        {"item_id": ids, "title": ids, "text": "", "categories": [[] for _ in ids], "year": np.full(len(ids), np.nan)}
    )
