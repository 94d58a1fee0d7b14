"""The multi-task network: input encoders -> shared architecture -> one head per task, logits out."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from torch import nn

from mtlrec.config import ModelConfig
from mtlrec.models.architectures import ARCHITECTURES
from mtlrec.models.inputs import ItemEncoder
from mtlrec.models.social import FriendAttention, SocialInputs
from mtlrec.models.towers import USER_TOWERS
from mtlrec.models.tuned_text import TextTuning, TunedItemEncoder
from mtlrec.tasks.base import Features, HeadDims, Task


class MultiTaskModel(nn.Module):
    def __init__(
        self,
        config: ModelConfig,
        tasks: dict[str, Task],
        n_users: int,
        text_vectors: torch.Tensor,
        n_categories: int,
        social: SocialInputs | None = None,
        tuning: TextTuning | None = None,
    ) -> None:
        """``social``: the friend graph, required when ``config.friends`` > 0 (attention over friends).
        ``tuning``: a language model with LoRA adapters that re-encodes the item texts (``text.lora``); None: the
        ``text_vectors`` stay frozen."""
        super().__init__()
        self.history_len = config.history_len
        if tuning is None:
            self.item_encoder = ItemEncoder(text_vectors, config.dim, config.dropout, config.id_dropout)
        elif config.friends > 0:
            raise ValueError("a fine-tuned language model (text.lora) does not work with model.friends > 0 yet")
        else:
            self.item_encoder = TunedItemEncoder(text_vectors, config.dim, config.dropout, config.id_dropout, tuning)
        self.user_encoder = USER_TOWERS.get(config.user_tower)(config, n_users)  # the user tower, by name
        if config.friends > 0 and social is None:
            raise ValueError("model.friends > 0 needs the social graph (SocialInputs)")
        self.social = FriendAttention(social, text_vectors, config.dim) if config.friends > 0 else None
        self.body = ARCHITECTURES.get(config.arch)(config, list(tasks))
        dims = HeadDims(dim=config.dim, shared=self.body.out_dim, n_categories=n_categories)
        self.heads = nn.ModuleDict({name: task.build_head(dims) for name, task in tasks.items()})
        # users with a train interaction (all until told, see set_warm_users): the mean id of a new user is theirs
        self.register_buffer("user_warm", torch.ones(n_users, dtype=torch.bool))

    def set_warm_users(self, warm: torch.Tensor | np.ndarray) -> None:
        """Which users have a train interaction (bool [n_users]); the others' id rows are untrained (users held out
        by ``data.cold_users``) and stay out of the mean id that :meth:`cold_user_repr` gives a new user."""
        warm = torch.as_tensor(np.asarray(warm), dtype=torch.bool)
        if warm.shape != self.user_warm.shape:
            shape = tuple(self.user_warm.shape)
            raise ValueError(f"warm must be a bool mask of shape {shape}, got {tuple(warm.shape)}")
        self.user_warm.copy_(warm)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # A model saved before ``user_warm`` existed trained every user: all warm reproduces its mean id exactly.
        state_dict.setdefault(prefix + "user_warm", torch.ones_like(self.user_warm))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def device(self) -> torch.device:
        return self.user_warm.device

    def here(self, tensor: torch.Tensor) -> torch.Tensor:
        """An input (indexes, masks: built on the CPU) on this model's device; from pinned memory and without
        waiting on CUDA, so the copy overlaps the work already queued."""
        if tensor.device == self.device:
            return tensor
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def user_repr(self, users: torch.Tensor, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # users [B], history [B, L] item indexes, mask [B, L]; on any device (moved to the model's)
        users, history, mask = self.here(users), self.here(history), self.here(mask)
        user = self.user_encoder(users, history, mask, self.item_encoder)  # [B, dim]
        if self.social is not None:
            user = self.social(users, user, self.user_encoder.ids, self.item_encoder)  # [B, dim]
        return user

    def cold_user_repr(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """A user the model never saw, from their history alone (e.g. a few liked items): the tower's output with
        the mean trained id embedding (over the users with a train interaction, ``user_warm``) in place of an own
        one. Every tower is additive in the id (user = id embedding + f(history), see models/towers.py), so
        swapping the id part is exact. No friends are read."""
        history, mask = self.here(history), self.here(mask)
        anchor = torch.zeros(history.shape[0], dtype=torch.long, device=history.device)  # [B] any user row
        ids = self.user_encoder.ids
        user = self.user_encoder(anchor, history, mask, self.item_encoder)  # [B, dim]
        warm = ids.weight[self.user_warm] if bool(self.user_warm.any()) else ids.weight
        return user - ids(anchor) + warm.mean(0)  # [B, dim]

    def _heads(self, user: torch.Tensor, item: torch.Tensor, tasks: list[str]) -> dict[str, torch.Tensor]:
        shared = self.body(user, item)  # task -> [..., out_dim]
        return {t: self.heads[t](Features(item=item, user=user, shared=shared[t])) for t in tasks}

    def pair_logits(self, user: torch.Tensor, items: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits for rows of (user representation [R, dim], item index [R]): task -> [R] (or [R, n_classes])."""
        return self._heads(user, self.item_encoder(self.here(items)), list(self.heads))

    def forward(
        self, users: torch.Tensor, items: torch.Tensor, history: torch.Tensor, mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Logits for rows of (user, item, history): task -> [R] (or [R, n_classes])."""
        return self.pair_logits(self.user_repr(users, history, mask), items)

    def score_items(
        self, users: torch.Tensor | None, history: torch.Tensor, mask: torch.Tensor, tasks: list[str]
    ) -> dict[str, torch.Tensor]:
        """Logits of ``tasks`` for every item of the catalogue for each user: task -> [B, n_items]. ``users``
        None: new users known by their history only (:meth:`cold_user_repr`)."""
        user = self.cold_user_repr(history, mask) if users is None else self.user_repr(users, history, mask)
        return self.catalogue_logits(user, tasks)

    def catalogue_logits(
        self, user: torch.Tensor, tasks: list[str], items: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Logits of ``tasks`` for user representations [B, dim] against every item: task -> [B, n_items].
        ``items``: the catalogue's representations [n_items, dim] when already computed (a frozen model being
        served computes them once), else ``item_encoder.all()``."""
        item = self.item_encoder.all() if items is None else items  # [n_items, dim]
        return self._heads(user[:, None, :], item[None, :, :], tasks)  # broadcast to [B, n_items, ...]

    def item_logits(self, task: str, items: torch.Tensor) -> torch.Tensor:
        """Logits of an item-level task (its head reads the item representation only): [n, ...]."""
        return self.heads[task](Features(item=self.item_encoder(self.here(items))))

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return self.body.last_shared_parameters()

    def id_tables(self) -> list[nn.Embedding]:
        """The user and item id embeddings: rows grow with the world, a step reads a few of them."""
        return [self.user_encoder.ids, self.item_encoder.ids]

    def use_sparse_ids(self, sparse: bool = True) -> None:
        """Make the id tables' gradients sparse (only the rows a step read; a sparse-aware optimizer must step
        them, see ``train.sparse_ids``) or dense again."""
        for table in self.id_tables():
            table.sparse = sparse

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every task's loss reaches: encoders and shared layers (what gradient methods act on); a
        fine-tuned language model's adapters among them, its frozen weights not."""
        social = [] if self.social is None else list(self.social.parameters())
        every = [*self.item_encoder.parameters(), *self.user_encoder.parameters(), *social,
                 *self.body.shared_parameters()]  # fmt: skip
        return [p for p in every if p.requires_grad]

    def language_model_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters of a fine-tuned language model (its LoRA adapters, ``text.lora``), which have
        their own learning rate; empty when the language model is frozen."""
        if not isinstance(self.item_encoder, TunedItemEncoder):
            return []
        return [p for p in self.item_encoder.language_model.parameters() if p.requires_grad]

    def training_state(self) -> dict[str, Any]:
        """Training state that is not in ``state_dict`` (a fine-tuned language model's memory bank and draws,
        ``TunedItemEncoder.training_state``); empty for a frozen one."""
        if isinstance(self.item_encoder, TunedItemEncoder):
            return {"text": self.item_encoder.training_state()}
        return {}

    def load_training_state(self, state: dict[str, Any]) -> None:
        if "text" in state:
            self.item_encoder.load_training_state(state["text"])

    def reading(self, items: torch.Tensor) -> contextlib.AbstractContextManager[None]:
        """The scope of one training step that reads ``items`` (item indexes, any shape): a fine-tuned language
        model encodes each of their texts once for it (``TunedItemEncoder.reading``); a frozen one needs nothing."""
        if isinstance(self.item_encoder, TunedItemEncoder):
            return self.item_encoder.reading(items)
        return contextlib.nullcontext()

    def user_logits(self, task: str, user: torch.Tensor) -> torch.Tensor:
        """Logits of a user-level task (its head reads the user representation [n, dim] only): [n, ...]. There is
        no item: ``item`` is an empty [n, 0] slice, so a head that reads it fails instead of reading the user."""
        return self.heads[task](Features(item=user[..., :0], user=user))
