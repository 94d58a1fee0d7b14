"""Input encoders: items from id + language-model text vector, users from id + their recent history."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ItemEncoder(nn.Module):
    """item = trainable id embedding + learned projection of the frozen text embedding."""

    def __init__(self, text_vectors: torch.Tensor, dim: int, dropout: float) -> None:
        super().__init__()
        n_items, text_dim = text_vectors.shape
        self.register_buffer("text", text_vectors.float(), persistent=False)  # frozen; stored beside the weights
        self.ids = nn.Embedding(n_items, dim)
        self.project = nn.Linear(text_dim, dim)
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.ids.weight, std=0.01)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        if items.numel() > self.ids.num_embeddings:  # more rows than items: project the catalogue once, then index
            return self.all()[items]  # [..., dim]
        return self.dropout(self.ids(items) + self.project(self.text[items]))  # [..., dim]

    def all(self) -> torch.Tensor:
        return self.dropout(self.ids.weight + self.project(self.text))  # [n_items, dim]

    def pool(self, items: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """sum_j weights[:, j] * item(items[:, j]) without materialising [B, L, dim] (the projection is linear,
        so pooling the text vectors first and projecting once gives the same result)."""
        # items [B, L], weights [B, L] (0 on padding)
        ids = F.embedding_bag(items, self.ids.weight, per_sample_weights=weights, mode="sum")  # [B, dim]
        text = F.embedding_bag(items, self.text, per_sample_weights=weights, mode="sum")  # [B, text_dim]
        bias = self.project.bias * weights.sum(-1, keepdim=True)  # [B, dim]
        return self.dropout(ids + F.linear(text, self.project.weight) + bias)


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
