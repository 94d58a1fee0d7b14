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

    The default is the id table's last row (``ids`` has ``n_items + 1`` rows), so every id lookup reads one table
    and, with sparse id updates (``MultiTaskModel.use_sparse_ids``), a step's gradient holds only the rows it read.

    In training mode each item representation's id part is replaced by the default with probability
    ``id_dropout`` (rows, history entries and the catalogue alike, drawn independently), so the default and the
    text projection learn to stand in for an id. Evaluation and serving never drop ids.
    """

    def __init__(self, text_vectors: torch.Tensor, dim: int, dropout: float, id_dropout: float = 0.0) -> None:
        super().__init__()
        n_items, text_dim = text_vectors.shape
        self.n_items = n_items
        self.register_buffer("text", text_vectors.float(), persistent=False)  # frozen; stored beside the weights
        self.register_buffer("warm", torch.ones(n_items, dtype=torch.bool))  # items with a train interaction
        # Row n_items is the default id (zero at first). The item rows draw from the seeded generator exactly as
        # the former [n_items, dim] table did, so a seed gives the same initial model (and results) as before.
        self.ids = nn.Embedding(n_items + 1, dim, _weight=torch.zeros(n_items + 1, dim))
        with torch.no_grad():
            self.ids.weight[:n_items].normal_()  # what nn.Embedding's own initialisation drew
        self.project = nn.Linear(text_dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.id_dropout = id_dropout
        with torch.no_grad():
            self.ids.weight[:n_items].normal_(std=0.01)

    @property
    def default(self) -> torch.Tensor:
        """The id part of items without (or with a dropped) id: [dim], a view of the table's last row."""
        return self.ids.weight[self.n_items]

    @torch.no_grad()
    def set_warm(self, warm: torch.Tensor | np.ndarray) -> None:
        """Bool [n_items]: True for items with at least one train interaction; the others use the default id."""
        warm = torch.as_tensor(np.asarray(warm), dtype=torch.bool)
        if warm.shape != self.warm.shape:
            raise ValueError(f"warm must be a bool mask of shape {tuple(self.warm.shape)}, got {tuple(warm.shape)}")
        self.warm.copy_(warm)

    def id_index(self, items: torch.Tensor) -> torch.Tensor:
        """Row of ``ids`` each item reads: its own, or ``n_items`` (the default) for an item without a train
        interaction and, in training mode, with probability ``id_dropout``. Same shape as ``items``."""
        own = self.warm[items]
        if self.training and self.id_dropout > 0:
            own = own & (torch.rand(items.shape, device=items.device) >= self.id_dropout)
        return torch.where(own, items, self.n_items)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        ids = self.ids(self.id_index(items))  # [..., dim]
        if items.numel() > self.n_items:  # more rows than items: project the catalogue once, then index
            return self.dropout(ids + self.project(self.text)[items])  # [..., dim]
        return self.dropout(ids + self.project(self.text[items]))  # [..., dim]

    def all(self) -> torch.Tensor:
        items = torch.arange(self.n_items, device=self.warm.device)
        return self.dropout(self.ids(self.id_index(items)) + self.project(self.text))  # [n, dim]

    def pool(self, items: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """sum_j weights[:, j] * item(items[:, j]) without materialising [B, L, dim] (the projection is linear,
        so pooling the text vectors first and projecting once gives the same result)."""
        # items [B, L], weights [B, L] (0 on padding)
        ids = F.embedding_bag(self.id_index(items), self.ids.weight, per_sample_weights=weights, mode="sum",
                              sparse=self.ids.sparse)  # fmt: skip
        text = F.embedding_bag(items, self.text, per_sample_weights=weights, mode="sum")  # [B, text_dim]
        bias = self.project.bias * weights.sum(-1, keepdim=True)  # [B, dim]
        return self.dropout(ids + F.linear(text, self.project.weight) + bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Older run directories keep the default apart (``default``, beside an [n_items, dim] table), and the
        # oldest have neither it nor ``warm``: their model gave every item its own id, which "all warm" and an
        # (unused) zero default reproduce exactly.
        key = prefix + "ids.weight"
        if key in state_dict and state_dict[key].shape[0] == self.n_items:
            table = state_dict[key]
            default = state_dict.pop(prefix + "default", table.new_zeros(table.shape[1]))
            state_dict[key] = torch.cat([table, default[None]])
            state_dict.setdefault(prefix + "warm", torch.ones(self.n_items, dtype=torch.bool))
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
