"""User towers, chosen by ``model.user_tower``: ``pool`` (recency-weighted pooling, :class:`UserEncoder`) or
``transformer`` (a causal self-attention encoder over the history, after SASRec: Kang & McAuley, "Self-Attentive
Sequential Recommendation", ICDM 2018).

A tower maps ``(users [B], history [B, L], mask [B, L], items: ItemEncoder)`` to ``[B, dim]``. The history is
oldest first and left-padded (``train.data.histories``), so its most recent item is always in the last slot.
Contract: a tower has an ``ids`` embedding and is additive in it, user = ids(user) + f(history), which is what
lets a new user be represented from their history alone (``MultiTaskModel.cold_user_repr``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mtlrec.config import ModelConfig
from mtlrec.errors import ConfigError
from mtlrec.models.inputs import ItemEncoder, UserEncoder
from mtlrec.registry import Registry

UserTower = Callable[[ModelConfig, int], nn.Module]  # (model config, n_users) -> tower module
USER_TOWERS: Registry[UserTower] = Registry("user tower")


@USER_TOWERS.register("pool")
def pool_tower(config: ModelConfig, n_users: int) -> nn.Module:
    return UserEncoder(n_users, config.dim, config.history_len)


@USER_TOWERS.register("transformer")
def transformer_tower(config: ModelConfig, n_users: int) -> nn.Module:
    if config.tower_layers < 1 or config.tower_heads < 1 or config.dim % config.tower_heads:
        raise ConfigError(f"model.tower_heads ({config.tower_heads}) must divide model.dim ({config.dim}) and "
                          f"model.tower_layers ({config.tower_layers}) must be at least 1")  # fmt: skip
    return TransformerTower(n_users, config.dim, config.history_len, config.tower_layers, config.tower_heads,
                            config.dropout)  # fmt: skip


class CausalBlock(nn.Module):
    """Pre-norm self-attention block of SASRec (Kang & McAuley 2018): x + Dropout(Attention(LN(x))), then
    x + Dropout(FFN(LN(x))) with a point-wise FFN of width ``dim``. As in the paper, dropout acts on sub-layer
    outputs (and the inputs), not on attention weights."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, see: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """``see`` [B, 1, L, L] True where a slot may attend; ``last_only`` returns the last slot only: [B, 1, d]."""
        batch, length, dim = x.shape  # x [B, L, d]
        qkv = self.qkv(self.norm1(x)).view(batch, length, 3, self.heads, dim // self.heads)  # [B, L, 3, H, d/H]
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, H, L, d/H]
        if last_only:  # the queries of earlier slots are never read after the last block
            q, see, x = q[:, :, -1:], see[:, :, -1:], x[:, -1:]  # [B, H, 1, d/H], [B, 1, 1, L], [B, 1, d]
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=see)  # [B, H, Lq, d/H]
        x = x + self.dropout(self.out(att.transpose(1, 2).reshape(batch, -1, dim)))  # [B, Lq, d]
        return x + self.dropout(self.ff(self.norm2(x)))  # [B, Lq, d]


class TransformerTower(nn.Module):
    """user = id embedding + the causal transformer's output at the most recent history item (SASRec,
    Kang & McAuley 2018).

    Inputs per slot: the item (ItemEncoder: id embedding + projected language-model vector) plus a learned
    position embedding counted from the most recent item (slot L-1 is position 0), so left-padding never shifts
    positions, and leading columns that are padding in every row can be dropped exactly.

    "The representation at each step predicts the next item" holds row by row: every training row's history
    ends right before its target (``train.data.train_positive_rows``), so the output at the last step of that
    history is trained to score the item that follows it, and each observed interaction is one such step.
    Because the encoder is causal, the output at slot t equals the one a history truncated after t gives for
    the same slot inputs (tested in ``tests/test_towers.py``); so only the last slot is computed in the last
    block. The causal and key-padding masks are merged into one: no slot sees a later slot or padding, but
    every slot sees itself, so a padded slot (which would see nothing) stays finite on every attention backend
    (a fully masked softmax is NaN in the plain formula).

    A user without history gets a learned ``empty`` vector (+ the id embedding) in place of the encoder output.
    """

    def __init__(self, n_users: int, dim: int, history_len: int, layers: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ids = nn.Embedding(n_users, dim)
        self.positions = nn.Embedding(history_len, dim)  # row 0 = the most recent item
        self.empty = nn.Parameter(torch.zeros(dim))
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(CausalBlock(dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        for weight in (self.ids.weight, self.positions.weight, self.empty):
            nn.init.normal_(weight, std=0.01)

    def forward(
        self, users: torch.Tensor, history: torch.Tensor, mask: torch.Tensor, items: ItemEncoder
    ) -> torch.Tensor:
        # users [B], history [B, L] item indexes oldest first (left-padded), mask [B, L]
        first = int(mask.any(0).int().argmax()) if bool(mask.any()) else history.shape[1] - 1  # drop all-pad columns
        history, mask = history[:, first:], mask[:, first:]  # [B, L'] (positions count from the end: unchanged)
        last = self.steps(self.inputs(history, items), mask, last_only=True)[:, -1]  # [B, dim] most recent slot
        last = torch.where(mask.any(-1, keepdim=True), last, self.empty)  # [B, dim] empty history -> learned vector
        return self.ids(users) + last  # [B, dim]

    def inputs(self, history: torch.Tensor, items: ItemEncoder) -> torch.Tensor:
        """Item + position embedding per slot: [B, L, dim]."""
        position = self.positions.weight[: history.shape[1]].flip(0)  # [L, dim] slot j gets position L-1-j
        return self.dropout(items(history) + position)  # [B, L, dim]

    def steps(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """The encoder's output at every slot [B, L, dim] (or the last one only, [B, 1, dim]) from inputs x."""
        length = x.shape[1]  # x [B, L, dim], mask [B, L]
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()  # [L, L] True = may see
        itself = torch.eye(length, dtype=torch.bool, device=x.device)  # [L, L]
        see = ((causal & mask[:, None, :]) | itself)[:, None]  # [B, 1, L, L] broadcast over heads
        for depth, block in enumerate(self.blocks):
            x = block(x, see, last_only=last_only and depth == len(self.blocks) - 1)  # [B, L or 1, dim]
        return self.norm(x)  # [B, L or 1, dim]
