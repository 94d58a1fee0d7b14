"""Input encoders: items from id + language-model text vector, users from id + their recent history."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class ItemEncoder(nn.Module):
    """item = id embedding + learned projection of the frozen text embedding.

    The id part is inductive: an item without a train interaction (``warm`` False) reads one learned ``default``
    id vector instead of its own row (which nothing trained), so a cold item is represented by its text alone
    (plus that shared default). ``warm`` is a persistent buffer (saved in ``model.safetensors``); it is all True
    until :meth:`set_warm` is given the items that have a train interaction (``Split.trained_items``).

    In training mode each item representation's id part is replaced by the default with probability
    ``id_dropout`` (rows, history entries and the catalogue alike, drawn independently), so the default and the
    text projection learn to stand in for an id. Evaluation and serving never drop ids.
    """

    def __init__(self, text_vectors: torch.Tensor, dim: int, dropout: float, id_dropout: float = 0.0) -> None:
        super().__init__()
        n_items, text_dim = text_vectors.shape
        self.register_buffer("text", text_vectors.float(), persistent=False)  # frozen; stored beside the weights
        self.register_buffer("warm", torch.ones(n_items, dtype=torch.bool))  # items with a train interaction
        self.ids = nn.Embedding(n_items, dim)
        self.default = nn.Parameter(torch.zeros(dim))  # the id part of items without (or with a dropped) id
        self.project = nn.Linear(text_dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.id_dropout = id_dropout
        nn.init.normal_(self.ids.weight, std=0.01)

    @torch.no_grad()
    def set_warm(self, warm: torch.Tensor | np.ndarray) -> None:
        """Bool [n_items]: True for items with at least one train interaction; the others use the default id."""
        warm = torch.as_tensor(np.asarray(warm), dtype=torch.bool)
        if warm.shape != self.warm.shape:
            raise ValueError(f"warm must be a bool mask of shape {tuple(self.warm.shape)}, got {tuple(warm.shape)}")
        self.warm.copy_(warm)

    def id_index(self, items: torch.Tensor) -> torch.Tensor:
        """Row of :meth:`id_table` each item reads: its own, or ``n_items`` (the default) for an item without a
        train interaction and, in training mode, with probability ``id_dropout``. Same shape as ``items``."""
        own = self.warm[items]
        if self.training and self.id_dropout > 0:
            own = own & (torch.rand(items.shape, device=items.device) >= self.id_dropout)
        return torch.where(own, items, self.ids.num_embeddings)

    def id_table(self) -> torch.Tensor:
        return torch.cat([self.ids.weight, self.default[None]])  # [n_items + 1, dim], last row = default

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        ids = F.embedding(self.id_index(items), self.id_table())  # [..., dim]
        if items.numel() > self.ids.num_embeddings:  # more rows than items: project the catalogue once, then index
            return self.dropout(ids + self.project(self.text)[items])  # [..., dim]
        return self.dropout(ids + self.project(self.text[items]))  # [..., dim]

    def all(self) -> torch.Tensor:
        items = torch.arange(self.ids.num_embeddings, device=self.warm.device)
        return self.dropout(F.embedding(self.id_index(items), self.id_table()) + self.project(self.text))  # [n, dim]

    def pool(self, items: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """sum_j weights[:, j] * item(items[:, j]) without materialising [B, L, dim] (the projection is linear,
        so pooling the text vectors first and projecting once gives the same result)."""
        # items [B, L], weights [B, L] (0 on padding)
        ids = F.embedding_bag(self.id_index(items), self.id_table(), per_sample_weights=weights, mode="sum")  # [B, d]
        text = F.embedding_bag(items, self.text, per_sample_weights=weights, mode="sum")  # [B, text_dim]
        bias = self.project.bias * weights.sum(-1, keepdim=True)  # [B, dim]
        return self.dropout(ids + F.linear(text, self.project.weight) + bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Run directories written before the inductive id part have neither key: their model gave every item its
        # own id, which "all warm" and an (unused) zero default reproduce exactly.
        if prefix + "ids.weight" in state_dict:
            n_items, dim = state_dict[prefix + "ids.weight"].shape
            state_dict.setdefault(prefix + "warm", torch.ones(n_items, dtype=torch.bool))
            state_dict.setdefault(prefix + "default", torch.zeros(dim))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class UserEncoder(nn.Module):
    """user = id embedding + recency-weighted mean of the representations of the user's latest history items.

    Only interactions before the prediction point are in the history. The pooling weights are one learned
    logit per recency slot (most recent first), softmax-normalised over the slots a user actually has.
    """

    def __init__(self, n_users: int, dim: int, history_len: int) -> None:
        super().__init__()
        self.ids = nn.Embedding(n_users, dim)
        self.recency = nn.Parameter(torch.zeros(history_len))
        nn.init.normal_(self.ids.weight, std=0.01)

    def forward(
        self, users: torch.Tensor, history: torch.Tensor, mask: torch.Tensor, items: ItemEncoder
    ) -> torch.Tensor:
        # users [B], history [B, L] item indexes oldest first, mask [B, L]
        logits = self.recency.flip(0).expand_as(mask).masked_fill(~mask, float("-inf"))  # [B, L]
        weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # rows without history -> all zeros
        return self.ids(users) + items.pool(history, weights)  # [B, dim]
