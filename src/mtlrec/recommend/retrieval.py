"""Candidate retrieval for large catalogues: a FAISS index over the items' two-tower vectors returns a few hundred
candidates per user, and only those go through the multi-task model.

The two towers are the model's own: the ``next_item`` task's projections when the model has that task (a two-tower
retrieval head trained with a sampled softmax), else the dot-product part of the ``interest`` head, ``<user, item>``.
Inner product is the metric. ``flat`` is exact (every item scored, by FAISS's BLAS); ``hnsw`` is approximate (a graph,
sub-linear in the catalogue). ``benchmarks/retrieval.py`` measures how often the candidate path returns the items
full ranking would."""

from __future__ import annotations

import numpy as np
import torch

from mtlrec.errors import ConfigError, MtlrecError
from mtlrec.models.model import MultiTaskModel

INDEX_KINDS = ("flat", "hnsw")
HNSW_LINKS = 32  # graph degree: recall vs memory
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 256  # candidates examined per query: recall vs time


def import_faiss():  # type: ignore[no-untyped-def]
    try:
        import faiss
    except ImportError:
        raise MtlrecError("candidate retrieval needs FAISS: pip install 'mtlrec[faiss]' (faiss-cpu)") from None
    return faiss


def _towers(model: MultiTaskModel) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """The (user, item) projections of the two towers; None: the identity (the interest head's ``<user, item>``)."""
    if "next_item" in model.heads:
        return model.heads["next_item"].user, model.heads["next_item"].item
    if "interest" in model.heads:
        return None
    raise ConfigError("candidate retrieval needs a two-tower score: the model has neither a next_item nor an "
                      "interest task")  # fmt: skip


@torch.no_grad()
def user_vectors(model: MultiTaskModel, user: torch.Tensor) -> np.ndarray:
    """float32 [B, d]: user representations [B, dim] through the user tower."""
    towers = _towers(model)
    return np.ascontiguousarray((user if towers is None else towers[0](user)).float().numpy())


@torch.no_grad()
def item_vectors(model: MultiTaskModel, items: torch.Tensor) -> np.ndarray:
    """float32 [n, d]: item representations [n, dim] through the item tower."""
    towers = _towers(model)
    return np.ascontiguousarray((items if towers is None else towers[1](items)).float().numpy())


class CandidateIndex:
    """FAISS inner-product index over item vectors [n_items, d]; ``search`` gives each user's best items."""

    def __init__(self, item_vectors: np.ndarray, kind: str = "hnsw") -> None:
        if kind not in INDEX_KINDS:
            raise ConfigError(f"candidate index must be one of {', '.join(INDEX_KINDS)}, got '{kind}'")
        faiss = import_faiss()
        dim = item_vectors.shape[1]
        if kind == "flat":
            self.index = faiss.IndexFlatIP(dim)
        else:
            self.index = faiss.IndexHNSWFlat(dim, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            self.index.hnsw.efSearch = HNSW_EF_SEARCH
        self.index.add(np.ascontiguousarray(item_vectors, dtype=np.float32))
        self.kind, self.n_items = kind, len(item_vectors)

    def search(self, user_vectors: np.ndarray, count: int) -> np.ndarray:
        """int64 [B, count] item indexes, best first; -1 where the index found fewer."""
        count = min(count, self.n_items)
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(HNSW_EF_SEARCH, count)
        _, found = self.index.search(np.ascontiguousarray(user_vectors, dtype=np.float32), count)
        return found
