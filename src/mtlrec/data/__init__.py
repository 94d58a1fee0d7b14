"""Data loading: MovieLens releases, generic interaction files, the dataset registry and downloads."""

from mtlrec.data.dataset import Dataset
from mtlrec.data.download import download
from mtlrec.data.generic import load_generic
from mtlrec.data.movielens import load_ml1m, load_ml10m, load_ml100k, load_ml_csv
from mtlrec.data.sources import (
    DATASETS,
    DatasetSpec,
    cache_dir,
    data_root,
    dataset_names,
    load_dataset,
    resolve_dataset_dir,
)

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetSpec",
    "cache_dir",
    "data_root",
    "dataset_names",
    "download",
    "load_dataset",
    "load_generic",
    "load_ml100k",
    "load_ml10m",
    "load_ml1m",
    "load_ml_csv",
    "resolve_dataset_dir",
]
