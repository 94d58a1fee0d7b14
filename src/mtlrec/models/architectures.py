"""Shared layers over a (user, item) pair. Each architecture maps the pair to one feature tensor per task."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from mtlrec.config import ModelConfig
from mtlrec.registry import Registry

ARCHITECTURES: Registry[type[nn.Module]] = Registry("architecture")


def mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU(inplace=True), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class PairLinear(nn.Module):
    """A linear map of [user, item, user * item], split by block: W [u; i; u*i] = W_u u + W_i i + W_x (u*i).

    User and item may broadcast (user [B, 1, d] against item [1, n, d] when scoring a whole catalogue), so the
    user and item parts are computed once per user and once per item, never per pair.
    """

    def __init__(self, dim: int, out: int) -> None:
        super().__init__()
        self.user = nn.Linear(dim, out)
        self.item = nn.Linear(dim, out, bias=False)
        self.cross = nn.Linear(dim, out, bias=False)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        if is_catalogue(user, item):
            # W_x (u * i) + W_i i = (W_x diag(u) + W_i) i: one matmul per user, no [B, n, dim] product tensor
            weight = torch.addcmul(self.item.weight, self.cross.weight, user)  # [B, out, dim]
            return torch.matmul(item, weight.transpose(1, 2)).add_(self.user(user))  # [B, n, out]
        return self.cross(user * item) + self.user(user) + self.item(item)  # [..., out]


def is_catalogue(user: torch.Tensor, item: torch.Tensor) -> bool:
    """True for users [B, 1, dim] against a catalogue [1, n, dim] (how ``score_items`` broadcasts)."""
    return user.dim() == 3 and item.dim() == 3 and user.shape[1] == 1 and item.shape[0] == 1


class PairInput(PairLinear):
    """First layer over the (user, item) pair: PairLinear, then ReLU and dropout."""

    def __init__(self, dim: int, out: int, dropout: float) -> None:
        super().__init__(dim, out)
        self.dropout = nn.Dropout(dropout)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        h = super().forward(user, item)  # [..., out]
        return self.dropout(torch.relu_(h))


class PairMLP(nn.Module):
    """PairInput then an MLP over ``hidden``: the expert network of the mixture architectures (MMoE, PLE)."""

    def __init__(self, dim: int, hidden: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("model.hidden needs at least one layer size")
        self.input = PairInput(dim, hidden[0], dropout)
        self.layers = mlp(list(hidden), dropout)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return self.layers(self.input(user, item))  # [..., hidden[-1]]

    def last_layer(self) -> nn.Module:
        """The last Linear of the MLP, or the PairInput when ``hidden`` has one size (the MLP is then empty)."""
        linears = [m for m in self.layers if isinstance(m, nn.Linear)]
        return linears[-1] if linears else self.input


def mix(gate_logits: torch.Tensor, experts: list[torch.Tensor]) -> torch.Tensor:
    """Softmax-gated sum of expert outputs, accumulated one expert at a time (no [..., out, E] stack)."""
    gate = torch.softmax(gate_logits, dim=-1)  # [..., E]
    out = gate[..., :1] * experts[0]  # [..., out]
    for k in range(1, len(experts)):
        out = torch.addcmul(out, gate[..., k : k + 1], experts[k])  # [..., out]
    return out


@ARCHITECTURES.register("shared-bottom")
class SharedBottom(nn.Module):
    """One MLP over the (user, item) pair that every task's head reads (Caruana, 1997)."""

    def __init__(self, config: ModelConfig, tasks: list[str]) -> None:
        super().__init__()
        self.tasks = tasks
        self.bottom = PairMLP(config.dim, config.hidden, config.dropout)
        self.out_dim = config.hidden[-1]

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> dict[str, torch.Tensor]:
        shared = self.bottom(user, item)  # [..., out_dim]
        return dict.fromkeys(self.tasks, shared)

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return list(self.bottom.last_layer().parameters())
