"""Shared layers over a (user, item) pair. Each architecture maps the pair to one feature tensor per task."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from mtlrec.registry import Registry

ARCHITECTURES: Registry[type[nn.Module]] = Registry("architecture")


def mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU(inplace=True), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class PairInput(nn.Module):
    """First layer over [user, item, user * item], split by block: W [u; i; u*i] = W_u u + W_i i + W_x (u*i).

    User and item may broadcast (user [B, 1, d] against item [1, n, d] when scoring a whole catalogue), so the
    user and item parts are computed once per user and once per item, never per pair.
    """

    def __init__(self, dim: int, out: int, dropout: float) -> None:
        super().__init__()
        self.user = nn.Linear(dim, out)
        self.item = nn.Linear(dim, out, bias=False)
        self.cross = nn.Linear(dim, out, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        h = self.cross(user * item) + self.user(user) + self.item(item)  # [..., out]
        return self.dropout(torch.relu_(h))


@ARCHITECTURES.register("shared-bottom")
class SharedBottom(nn.Module):
    """One MLP over the (user, item) pair that every task's head reads (Caruana, 1997)."""

    def __init__(self, dim: int, hidden: tuple[int, ...], dropout: float, tasks: list[str]) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("model.hidden needs at least one layer size")
        self.tasks = tasks
        self.input = PairInput(dim, hidden[0], dropout)
        self.layers = mlp(list(hidden), dropout)
        self.out_dim = hidden[-1]

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> dict[str, torch.Tensor]:
        shared = self.layers(self.input(user, item))  # [..., out_dim]
        return dict.fromkeys(self.tasks, shared)

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())
