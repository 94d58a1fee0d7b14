"""Loaders for the GroupLens MovieLens releases: ml-100k, the '::' releases (ml-1m, ml-10m) and the CSV ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mtlrec.data.dataset import INTERACTION_COLUMNS, Dataset
from mtlrec.data.readers import check_file, read_table
from mtlrec.data.titles import split_title_year
from mtlrec.data.validate import Table, check_unique, resolve_duplicates

NO_GENRES = "(no genres listed)"
_DUP_HINT = "MovieLens files hold each (user, item) pair once; the file looks edited, so re-download it"

# ml-1m users.dat stores occupations as codes; its README lists their names.
ML1M_OCCUPATIONS = {
    "0": "other", "1": "academic/educator", "2": "artist", "3": "clerical/admin", "4": "college/grad student",
    "5": "customer service", "6": "doctor/health care", "7": "executive/managerial", "8": "farmer",
    "9": "homemaker", "10": "K-12 student", "11": "lawyer", "12": "programmer", "13": "retired",
    "14": "sales/marketing", "15": "scientist", "16": "self-employed", "17": "technician/engineer",
    "18": "tradesman/craftsman", "19": "unemployed", "20": "writer",
}  # fmt: skip


def load_ml100k(path: str | Path, name: str = "ml-100k") -> Dataset:
    """MovieLens 100K: ``u.data`` (tab-separated), latin-1 ``u.item`` with genre flags, ``u.genre``, ``u.user``."""
    root = Path(path)
    inter = _ratings(root / "u.data", name, sep="\t")
    genres = read_table(
        root / "u.genre",
        names=["genre", "index"],
        required=["genre", "index"],
        ints=["index"],
        sep="|",
        quoted=False,
        dataset=name,
    )
    check_unique(genres, "genre")
    fixed = ["item_id", "title", "release_date", "video_release_date", "url"]
    clash = genres.frame["genre"].isin(fixed).to_numpy()
    if clash.any():  # genres name u.item's columns: one may not take the name of a fixed column
        row = int(np.flatnonzero(clash)[0])
        raise genres.error(f"genre '{genres.frame['genre'].iloc[row]}' has the name of a u.item column", row=row,
                           field="genre", hint="rename the genre or re-download the dataset")  # fmt: skip
    genre_names = genres.frame.sort_values("index", kind="stable")["genre"].tolist()
    item_cols = [*fixed, *genre_names]
    items = read_table(
        root / "u.item",
        names=item_cols,
        required=["item_id"],
        optional=["title", *genre_names],
        ints=genre_names,
        sep="|",
        encoding="latin-1",
        quoted=False,
        dataset=name,
    )
    check_unique(items, "item_id")
    vocab = [g for g in genre_names if g != "unknown"]  # "unknown" marks a missing genre, not a category
    flags = items.frame[vocab].to_numpy()
    bad = (flags != 0) & (flags != 1)
    if bad.any():
        row, col = (int(k[0]) for k in np.nonzero(bad))
        raise items.error(
            f"genre flag {flags[row, col]} is not 0 or 1", row=row, field=vocab[col], hint="re-download the dataset"
        )
    categories = [[vocab[j] for j in np.flatnonzero(r)] for r in flags.astype(bool)]
    users = read_table(
        root / "u.user",
        names=["user_id", "age", "gender", "occupation", "zip"],
        required=["user_id"],
        optional=["age", "gender", "occupation", "zip"],
        ints=["age"],
        sep="|",
        quoted=False,
        dataset=name,
    )
    check_unique(users, "user_id")
    return _dataset(
        name, inter, _items(items.frame["item_id"], items.frame["title"], categories), users.frame, vocab, items, users
    )


def load_ml1m(path: str | Path, name: str = "ml-1m") -> Dataset:
    """MovieLens 1M: '::'-separated ``ratings.dat``, ``movies.dat`` (latin-1) and ``users.dat``."""
    root = Path(path)
    users = read_table(
        root / "users.dat",
        names=["user_id", "gender", "age", "occupation", "zip"],
        required=["user_id"],
        optional=["gender", "age", "occupation", "zip"],
        ints=["age"],
        double_colon=True,
        quoted=False,
        encoding="latin-1",
        dataset=name,
    )
    check_unique(users, "user_id")
    occupation = users.frame["occupation"]
    users.frame["occupation"] = occupation.map(ML1M_OCCUPATIONS).fillna(occupation).astype(str)
    return _load_dat(root, name, users)


def load_ml10m(path: str | Path, name: str = "ml-10m") -> Dataset:
    """MovieLens 10M (the zip's ``ml-10M100K`` folder): ``ratings.dat`` and UTF-8 ``movies.dat``; no users file."""
    return _load_dat(Path(path), name, None)


def load_ml_csv(path: str | Path, name: str = "ml-latest-small") -> Dataset:
    """The CSV releases (ml-latest-small, ml-20m, ml-25m, ml-32m): ``ratings.csv`` and ``movies.csv``."""
    root = Path(path)
    inter = _ratings(
        root / "ratings.csv",
        name,
        sep=",",
        columns={"user_id": "userId", "item_id": "movieId", "rating": "rating", "timestamp": "timestamp"},
    )
    movies = read_table(
        root / "movies.csv", columns={"item_id": "movieId"}, required=["item_id", "title", "genres"], dataset=name
    )
    check_unique(movies, "item_id")
    categories = _split_genres(movies.frame["genres"])
    items = _items(movies.frame["item_id"], movies.frame["title"], categories)
    return _dataset(name, inter, items, None, _vocab(categories), movies, None)


# -- internals ------------------------------------------------------------------------------------------------------
def _ratings(path: Path, name: str, *, sep: str, columns: dict[str, str] | None = None, **kw) -> Table:
    inter = read_table(
        path,
        names=None if columns else INTERACTION_COLUMNS,
        columns=columns,
        required=INTERACTION_COLUMNS,
        floats=["rating"],
        ints=["timestamp"],
        sep=sep,
        dataset=name,
        quoted=columns is not None,
        **kw,
    )
    resolve_duplicates(inter, "error", hint=_DUP_HINT)
    rating = inter.frame["rating"].to_numpy()
    outside = (rating < 0.5) | (rating > 5)
    if outside.any():  # every release rates 1 to 5 stars, or 0.5 to 5 in half stars
        row = int(np.flatnonzero(outside)[0])
        raise inter.error(
            f"rating {rating[row]:g} is outside 0.5..5",
            row=row,
            field="rating",
            hint="MovieLens ratings are 0.5 to 5 stars; the file looks edited, so re-download it",
        )
    return inter


def _load_dat(root: Path, name: str, users: Table | None) -> Dataset:
    inter = _ratings(root / "ratings.dat", name, sep=":", double_colon=True, encoding="latin-1")
    movies = _read_movies_dat(root / "movies.dat", name)
    check_unique(movies, "item_id")
    categories = _split_genres(movies.frame["genres"])
    items = _items(movies.frame["item_id"], movies.frame["title"], categories)
    return _dataset(name, inter, items, None if users is None else users.frame, _vocab(categories), movies, users)


def _read_movies_dat(path: Path, name: str) -> Table:
    """``MovieID::Title::Genres``; titles may hold ':' so the single-':' trick of the ratings does not apply."""
    raw = check_file(path, dataset=name).read_bytes()
    try:
        text = raw.decode("utf-8")  # ml-10m
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # ml-1m: latin-1 bytes are almost never valid UTF-8
    lines = [line.rstrip("\r") for line in text.split("\n")]  # not splitlines(): latin-1 0x85 is a line break there
    while lines and not lines[-1]:
        lines.pop()
    frame = pd.Series(lines, dtype="str").str.extract(r"^(?P<item_id>[^:]+)::(?P<title>.*)::(?P<genres>[^:]*)$")
    table = Table(frame, path, 1)
    bad = frame["item_id"].isna().to_numpy()
    if bad.any():
        raise table.error(
            "expected MovieID::Title::Genres",
            row=int(np.flatnonzero(bad)[0]),
            field="item_id",
            hint="fix the line or re-download the dataset",
        )
    return table


def _split_genres(genres: pd.Series) -> list[list[str]]:
    return [[] if not isinstance(g, str) or g in ("", NO_GENRES) else g.split("|") for g in genres]


def _vocab(categories: list[list[str]]) -> list[str]:
    return sorted({c for cats in categories for c in cats})


def _items(ids: pd.Series, raw_titles: pd.Series, categories: list[list[str]]) -> pd.DataFrame:
    title, year = split_title_year(raw_titles)
    return pd.DataFrame(
        {
            "item_id": ids.to_numpy(),
            "title": title.to_numpy(),
            "text": "",
            "categories": categories,
            "year": year.to_numpy(),
        }
    )


def _dataset(
    name: str,
    inter: Table,
    items: pd.DataFrame,
    users: pd.DataFrame | None,
    vocab: list[str],
    items_table: Table,
    users_table: Table | None,
) -> Dataset:
    if users is None:  # no users file: the users are the ids that rate, in order of first rating
        users = pd.DataFrame({"user_id": pd.unique(inter.frame["user_id"])})
    sources = {"interactions": str(inter.path), "items": str(items_table.path)}
    first_line = {"interactions": inter.first_line, "items": items_table.first_line}
    if users_table is not None:
        sources["users"], first_line["users"] = str(users_table.path), users_table.first_line
    return Dataset(
        name=name,
        interactions=inter.frame,
        items=items,
        users=users,
        categories=vocab,
        has_timestamps=True,
        has_ratings=True,
        sources=sources,
        first_line=first_line,
    )
