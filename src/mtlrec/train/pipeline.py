"""From a config to training data: dataset -> split -> item texts -> language-model vectors."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mtlrec.config import Config
from mtlrec.data import Dataset, load_dataset
from mtlrec.data.splits import TRAIN, Split, leave_one_out
from mtlrec.eval.cold_start import cold_item_set, hold_out_items
from mtlrec.eval.cold_users import cold_user_set, hold_out_users
from mtlrec.text import EmbeddingCache, build_encoder, default_cache_dir, encode_cached, render_item_texts
from mtlrec.train.data import TrainingData, category_roles


@dataclass
class Prepared:
    data: TrainingData
    texts: list[str]
    encoder_name: str
    encoded: int  # texts the language model actually encoded (0 when the cache was warm)
    fingerprint: str


def set_threads(threads: int) -> int:
    """Torch CPU threads: ``threads`` if > 0, else every core this process may run on."""
    if threads <= 0:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()


def cold_items(config: Config, n_items: int) -> np.ndarray:
    """The items ``data.cold_items`` holds out of training (empty when off), int64 sorted."""
    return cold_item_set(n_items, config.data.cold_items, config.data.split_seed)


def cold_users(config: Config, n_users: int) -> np.ndarray:
    """The users ``data.cold_users`` holds out of training (empty when off), int64 sorted."""
    return cold_user_set(n_users, config.data.cold_users, config.data.split_seed)


@dataclass
class SplitData:
    """The dataset, its split (without what the cold-start protocols hold out), and what was held out."""

    dataset: Dataset
    split: Split
    roles: np.ndarray  # the items' roles for the category task
    texts: list[str]  # every item's text
    cold_items: np.ndarray  # int64 sorted (data.cold_items), empty = none
    cold_users: np.ndarray  # int64 sorted (data.cold_users), empty = none
    cold_user_split: Split | None  # the held-out users' interactions alone (None = none held out)

    def training_data(self, text_vectors: np.ndarray) -> TrainingData:
        return TrainingData.build(self.dataset, self.split, text_vectors, self.roles, self.cold_items,
                                  self.cold_users, self.cold_user_split)  # fmt: skip


def split_data(config: Config, log: Callable[[str], None] = print) -> SplitData:
    """Load the dataset, split it (PROTOCOL.md), apply the cold-start hold-outs, render every item's text."""
    dc = config.data
    dataset = load_dataset(
        dc.dataset, dc.data_dir, data_path=dc.data_path, columns=dc.columns or None,
        items_path=dc.items_path, users_path=dc.users_path, social_path=dc.social_path, on_duplicate=dc.on_duplicate,
    )  # fmt: skip
    log(dataset.summary())
    split = leave_one_out(dataset, seed=dc.split_seed)
    users = cold_users(config, dataset.n_users)
    held = None
    if len(users):  # cold-start users: all their interactions leave the split (eval/cold_users.py)
        split, held = hold_out_users(split, users)
        log(f"cold users: {len(users):,} users held out of training ({dc.cold_users:.0%}, seed {dc.split_seed})")
    cold = cold_items(config, dataset.n_items)
    if len(cold):  # the cold-start protocol: these items' train interactions are gone (eval/cold_start.py)
        split = hold_out_items(split, cold)
        log(f"cold items: {len(cold):,} items held out of training ({dc.cold_items:.0%}, seed {dc.split_seed})")
    has = bool(dataset.categories)
    roles = category_roles(dataset.n_items, dc.category_test * has, dc.category_valid * has, dc.split_seed)
    # Items whose categories are held out to evaluate the category task must not show them in their text.
    texts = render_item_texts(dataset.items, config.text.template, hide_categories=np.flatnonzero(roles != TRAIN))
    return SplitData(dataset, split, roles, texts, cold, users, held)


def load_split(config: Config, log: Callable[[str], None] = print) -> tuple[Dataset, Split, np.ndarray, list[str]]:
    """The dataset, its split, the items' roles for the category task, and every item's text (:func:`split_data`)."""
    parts = split_data(config, log)
    return parts.dataset, parts.split, parts.roles, parts.texts


def prepare(config: Config, progress: bool = True, log: Callable[[str], None] = print) -> Prepared:
    """Everything training reads: the split data and the language-model vectors of the item texts."""
    parts = split_data(config, log)
    tc = config.text
    encoder = build_encoder(tc.encoder, tc.model, device=config.train.device, dim=tc.dim)
    cache = EmbeddingCache(Path(tc.cache_dir) if tc.cache_dir else default_cache_dir())
    vectors, encoded = encode_cached(encoder, parts.texts, cache, batch_size=tc.batch_size, progress=progress)
    log(f"item texts: {len(parts.texts):,} ({encoded:,} encoded by {encoder.name}, the rest from the cache)")
    data = parts.training_data(vectors.astype(np.float32, copy=False))
    return Prepared(data, parts.texts, encoder.name, encoded, parts.dataset.fingerprint())
