"""The registered datasets, where they live on disk, and ``load_dataset``, the one entry the trainer and CLI use.

Checksums: sha256 of ml-100k, ml-1m, ml-25m and ml-latest-small are TensorFlow Datasets'
``url_checksums/movielens.txt``; those of ml-10m and ml-32m are recorded, with the same sizes, by several
independent public projects, and each md5 is the one GroupLens publishes next to the zip (``<zip>.md5``).
lastfm-2k's sha256 is recorded by one public project only (GroupLens publishes none); a mismatch says how to
override it (``mtlrec data download lastfm-2k --sha256 ...``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from mtlrec.data.amazon import load_amazon_reviews
from mtlrec.data.dataset import Dataset
from mtlrec.data.generic import load_generic
from mtlrec.data.lastfm import FILES as LASTFM_FILES
from mtlrec.data.lastfm import load_lastfm
from mtlrec.data.movielens import load_ml1m, load_ml10m, load_ml100k, load_ml_csv
from mtlrec.errors import ConfigError, DataError
from mtlrec.registry import Registry

GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
HETREC = "https://files.grouplens.org/datasets/hetrec2011/"
GENERIC = "generic"
# Datasets read from the one file ``data_path`` names (nothing to download): name -> (loader, what the file is).
FILE_DATASETS: dict[str, tuple[Callable[[Path], Dataset], str]] = {
    "amazon-reviews": (load_amazon_reviews, "the reviews .json or .json.gz file"),
}


@dataclass(frozen=True)
class DatasetSpec:
    """A downloadable dataset: where its zip is, how to check it, and how to load the unpacked folder."""

    name: str
    folder: str  # folder under the data dir that holds the files
    loader: Callable[[Path], Dataset]
    url: str
    sha256: str | None
    files: tuple[str, ...]  # files the loader needs; their presence means "already downloaded"
    archive_folder: str  # top folder inside the zip (ml-10m unpacks to "ml-10M100K"; "" = files at the top)
    size: int | None = None  # bytes of the zip
    md5: str | None = None  # GroupLens' published md5, checked only when no sha256 is known


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def _register(spec: DatasetSpec) -> None:
    DATASETS.register(spec.name)(spec)


_DAT = ("ratings.dat", "movies.dat")
_CSV = ("ratings.csv", "movies.csv")
for _spec in (
    DatasetSpec("ml-100k", "ml-100k", load_ml100k, GROUPLENS + "ml-100k.zip",
                "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
                ("u.data", "u.item", "u.genre", "u.user"), "ml-100k", 4924029, "0e33842e24a9c977be4e0107933c0723"),
    DatasetSpec("ml-1m", "ml-1m", load_ml1m, GROUPLENS + "ml-1m.zip",
                "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
                (*_DAT, "users.dat"), "ml-1m", 5917549, "c4d9eecfca2ab87c1945afe126590906"),
    DatasetSpec("ml-10m", "ml-10m", load_ml10m, GROUPLENS + "ml-10m.zip",
                "813c411ccb6122564edfe752e7f80c4dcc5aa25fa94c93622f6877a7ba252862",
                _DAT, "ml-10M100K", 65566137, "ce571fd55effeba0271552578f2648bd"),
    DatasetSpec("ml-latest-small", "ml-latest-small", functools.partial(load_ml_csv, name="ml-latest-small"),
                GROUPLENS + "ml-latest-small.zip", "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
                _CSV, "ml-latest-small", 978202),
    DatasetSpec("ml-25m", "ml-25m", functools.partial(load_ml_csv, name="ml-25m"), GROUPLENS + "ml-25m.zip",
                "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
                _CSV, "ml-25m", 261978986, "6b51fb2759a8657d3bfcbfc42b592ada"),
    DatasetSpec("ml-32m", "ml-32m", functools.partial(load_ml_csv, name="ml-32m"), GROUPLENS + "ml-32m.zip",
                "e4a68655d7386b8f95f2f2424b2ff975dfdd15ffd59e0d864a14dca43e99d6ee",
                _CSV, "ml-32m", 238950008, "d472be332d4daa821edc399621853b57"),
    DatasetSpec("lastfm-2k", "hetrec2011-lastfm-2k", load_lastfm, HETREC + "hetrec2011-lastfm-2k.zip",
                "6738f48195667ff03caaab4d32ca9a3133d8cc026b7c3cdaf6ce1010e913c59c", LASTFM_FILES, ""),
):  # fmt: skip
    _register(_spec)


def dataset_names() -> list[str]:
    """Every name ``load_dataset`` accepts: the registered datasets, the file datasets and "generic"."""
    return [*DATASETS.names(), *FILE_DATASETS, GENERIC]


def get_spec(name: str) -> DatasetSpec:
    if name in FILE_DATASETS or name == GENERIC:
        raise ConfigError(f"dataset '{name}' is not downloadable: pass its file with --data-path")
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset '{name}'; valid names: {', '.join(dataset_names())}")
    return DATASETS.get(name)


def cache_dir() -> Path:
    """mtlrec's cache: ``$MTLREC_CACHE_DIR``, else ``$XDG_CACHE_HOME/mtlrec``, else ``~/.cache/mtlrec``."""
    if env := os.environ.get("MTLREC_CACHE_DIR"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "mtlrec"


def data_root(data_dir: str | Path | None = None) -> Path:
    """The folder holding dataset folders: ``data_dir``, else ``$MTLREC_DATA_DIR``, else ``<cache>/datasets``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if env := os.environ.get("MTLREC_DATA_DIR"):
        return Path(env).expanduser()
    return cache_dir() / "datasets"


def resolve_dataset_dir(name: str, data_dir: str | Path | None = None) -> Path:
    """Folder of dataset ``name``: ``<root>/<folder>`` (see ``data_root``); it may not exist yet.

    An explicit ``data_dir`` that itself holds the dataset's files (the folder, not its parent) is used as is.
    """
    spec = get_spec(name)
    folder = data_root(data_dir) / spec.folder
    if data_dir is not None and not folder.is_dir():
        given = Path(data_dir).expanduser()
        if all((given / f).is_file() for f in spec.files):
            return given
    return folder


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    data_path: str | Path | None = None,
    columns: Mapping[str, str] | None = None,
    items_path: str | Path | None = None,
    users_path: str | Path | None = None,
    social_path: str | Path | None = None,
    on_duplicate: str = "error",
) -> Dataset:
    """Load a registered dataset from its folder, a file dataset from ``data_path``, or (name "generic") the files
    given by ``data_path`` & co."""
    if name == GENERIC:
        if data_path is None:
            raise ConfigError("dataset 'generic' needs data_path: the interactions CSV or Parquet file (--data-path)")
        return load_generic(data_path, items_path=items_path, users_path=users_path, social_path=social_path,
                            columns=columns, on_duplicate=on_duplicate)  # fmt: skip
    if name in FILE_DATASETS:
        loader, what = FILE_DATASETS[name]
        if data_path is None:
            raise ConfigError(f"dataset '{name}' needs data_path: {what} (--data-path)")
        if any(x is not None for x in (columns, items_path, users_path, social_path)):
            raise ConfigError(f"columns, items_path, users_path and social_path are only for 'generic', not '{name}'")
        return loader(Path(data_path))
    if any(x is not None for x in (data_path, columns, items_path, users_path, social_path)):
        raise ConfigError(
            f"data_path, columns, items_path, users_path and social_path are only for 'generic' (data_path also for "
            f"{', '.join(FILE_DATASETS)}), not '{name}'"
        )
    spec = get_spec(name)
    folder = resolve_dataset_dir(name, data_dir)
    if not folder.is_dir():
        raise DataError(
            "dataset folder not found",
            path=folder,
            hint=f"run `mtlrec data download {name}`, or pass --data-dir DIR where DIR/{spec.folder} holds the files",
        )
    return spec.loader(folder)
