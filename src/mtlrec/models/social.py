"""Social-aware user representation: attention over the user's friends (``model.friends`` > 0).

user' = user + sum_k a_k V f_k,   a = softmax_k(<Q user, K f_k> / sqrt(d)) over the user's friends,

where a friend's representation f = the friend's id embedding + the mean representation of the friend's train
items (their taste). Friends' held-out (validation and test) interactions are never read. The mean item
representation is computed exactly and cheaply: the item encoder's projection is linear, so the mean of the
projected text vectors is the projection of the mean text vector, which is fixed (the text vectors are frozen)
and precomputed per user. A user without friends keeps their representation unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtlrec.data.splits import Split
from mtlrec.models.inputs import ItemEncoder

FRIEND_SEED = 0  # which friends a user with more than ``model.friends`` of them attends over


@dataclass
class SocialInputs:
    """The graph and the friends' taste items, as tensors (stored in a run directory's social.safetensors)."""

    friends: torch.Tensor  # long [n_users, K] friend user indexes (0 where padded)
    mask: torch.Tensor  # bool [n_users, K] real friends
    taste_items: torch.Tensor  # long [n_users, L] each user's most recent train items (0 where padded)
    taste_weights: torch.Tensor  # float [n_users, L] 1 / (number of taste items), 0 on padding

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.contiguous() for k, v in vars(self).items()}


def social_inputs(
    split: Split, friend_offsets: np.ndarray, friend_ids: np.ndarray, max_friends: int, taste_len: int
) -> SocialInputs:
    """Up to ``max_friends`` friends per user (a seeded choice when there are more) and each user's latest
    ``taste_len`` train items. ``friend_offsets``/``friend_ids`` are the graph in CSR form over user indexes."""
    from mtlrec.train.data import histories  # train.data imports models; import here to keep models standalone

    n_users = split.n_users
    rng = np.random.default_rng(FRIEND_SEED)
    friends = np.zeros((n_users, max_friends), dtype=np.int64)
    mask = np.zeros((n_users, max_friends), dtype=bool)
    for u in range(n_users):
        mine = friend_ids[friend_offsets[u] : friend_offsets[u + 1]]
        if len(mine) > max_friends:
            mine = np.sort(rng.choice(mine, size=max_friends, replace=False))
        friends[u, : len(mine)], mask[u, : len(mine)] = mine, True
    users = np.arange(n_users)
    items, real = histories(split, users, split.history_end("valid"), taste_len)  # train interactions only
    counts = real.sum(-1, keepdim=True).clamp_min(1)
    return SocialInputs(torch.from_numpy(friends), torch.from_numpy(mask), items, real.float() / counts)


class FriendAttention(nn.Module):
    def __init__(self, inputs: SocialInputs, text_vectors: torch.Tensor, dim: int) -> None:
        super().__init__()
        for name, value in inputs.tensors().items():
            self.register_buffer(name, value, persistent=False)  # data, stored beside the weights
        text_mean = F.embedding_bag(inputs.taste_items, text_vectors.float(), per_sample_weights=inputs.taste_weights,
                                    mode="sum")  # fmt: skip
        self.register_buffer("text_mean", text_mean, persistent=False)  # [n_users, text_dim]
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        nn.init.zeros_(self.value.weight)  # start as the plain user representation; friends are learned in

    def inputs(self) -> SocialInputs:
        return SocialInputs(self.friends, self.mask, self.taste_items, self.taste_weights)

    def friend_repr(self, friends: torch.Tensor, user_ids: nn.Embedding, items: ItemEncoder) -> torch.Tensor:
        """Id embedding + mean train-item representation of each friend: [U] -> [U, dim]."""
        weights = self.taste_weights[friends]  # [U, L]
        ids = F.embedding_bag(self.taste_items[friends], items.ids.weight, per_sample_weights=weights, mode="sum",
                              sparse=items.ids.sparse)  # fmt: skip
        text = F.linear(self.text_mean[friends], items.project.weight) + items.project.bias * weights.sum(-1, True)
        return user_ids(friends) + ids + text  # [U, dim]

    def forward(self, users: torch.Tensor, user: torch.Tensor, user_ids: nn.Embedding, items: ItemEncoder
                ) -> torch.Tensor:  # fmt: skip
        # users [B], user [B, dim]
        friends, mask = self.friends[users], self.mask[users]  # [B, K]
        if not bool(mask.any()):
            return user
        unique, inverse = torch.unique(friends[mask], return_inverse=True)  # each friend encoded once
        rep = self.friend_repr(unique, user_ids, items)  # [U, dim]
        friend = user.new_zeros(*friends.shape, user.shape[-1])  # [B, K, dim]
        friend[mask] = rep[inverse]
        logits = (self.query(user)[:, None, :] * self.key(friend)).sum(-1) / math.sqrt(user.shape[-1])  # [B, K]
        attention = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1).nan_to_num(0.0)  # [B, K]
        return user + (attention[..., None] * self.value(friend)).sum(1)  # [B, dim]
