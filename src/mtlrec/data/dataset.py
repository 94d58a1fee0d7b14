"""The one in-memory shape every loader produces."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mtlrec.errors import DataError

INTERACTION_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]


@dataclass
class Dataset:
    """Users, items with text and categories, interactions and optional social edges.

    Ids are strings (the raw ids of the source files). ``interactions`` keeps source-file order, which the
    temporal split uses to break ties (PROTOCOL.md).

    - ``interactions``: ``user_id, item_id, rating`` (float, NaN when the source has none), ``timestamp``
      (int64 seconds; the row number when the source has no time), optional ``weight``.
    - ``items``: ``item_id, title, text, categories`` (list of str), ``year`` (float, NaN when unknown); every
      interacted item is in it, and it may hold items nobody interacted with (they are still ranked).
    - ``users``: ``user_id`` plus any feature columns; every interacting user is in it.
    - ``social``: ``user_id, friend_id`` (one row per direction of a friendship) or None.
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    social: pd.DataFrame | None = None
    categories: list[str] = field(default_factory=list)
    has_timestamps: bool = True
    has_ratings: bool = True
    split: str = "temporal"  # leave-one-out order: "temporal" (PROTOCOL.md) or "random" (no usable time, Last.fm)
    sources: dict[str, str] = field(default_factory=dict)  # table name -> file it came from, for messages
    first_line: dict[str, int] = field(default_factory=dict)  # table name -> file line of its first row

    def __post_init__(self) -> None:
        self.interactions = self.interactions.reset_index(drop=True)
        self.items = self.items.reset_index(drop=True)
        self.users = self.users.reset_index(drop=True)
        self._check()

    # -- checks ---------------------------------------------------------------------------------------------------
    def _check(self) -> None:
        inter = self.interactions
        missing = [c for c in INTERACTION_COLUMNS if c not in inter.columns]
        if missing:
            raise DataError(f"interactions lack columns {missing}", path=self.sources.get("interactions"))
        if len(inter) == 0:
            raise DataError("no interactions", path=self.sources.get("interactions"), hint="the file holds no rows")
        for table, key in ((self.items, "item_id"), (self.users, "user_id")):
            dup = table[key].duplicated(keep=False)
            if dup.any():
                raise DataError(
                    f"id '{table.loc[dup, key].iloc[0]}' appears more than once",
                    path=self.sources.get("items" if key == "item_id" else "users"),
                    field=key,
                    hint="each id must have one row",
                )
        for key, table_name in (("item_id", "items"), ("user_id", "users")):
            side = self.items if key == "item_id" else self.users
            unknown = ~inter[key].isin(side[key])
            if unknown.any():
                row = int(np.flatnonzero(unknown.to_numpy())[0])
                raise DataError(
                    f"{key} '{inter[key].iloc[row]}' is not in the {table_name} table "
                    f"{self.sources.get(table_name, '')}".rstrip(),
                    path=self.sources.get("interactions"),
                    line=self._line("interactions", row),
                    field=key,
                    hint=f"add it to the {table_name} table or remove the interaction",
                )

    def _line(self, table: str, row: int) -> int | None:
        first = self.first_line.get(table)
        return None if first is None else first + row

    # -- views ----------------------------------------------------------------------------------------------------
    @property
    def item_ids(self) -> list[str]:
        return self.items["item_id"].tolist()

    @property
    def user_ids(self) -> list[str]:
        return self.users["user_id"].tolist()

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_users(self) -> int:
        return len(self.users)

    def item_index(self) -> pd.Index:
        return pd.Index(self.items["item_id"])

    def user_index(self) -> pd.Index:
        return pd.Index(self.users["user_id"])

    def encoded_interactions(self) -> tuple[np.ndarray, np.ndarray]:
        """Integer user and item indexes (rows of ``users`` / ``items``) for every interaction, in source order."""
        u = self.user_index().get_indexer(self.interactions["user_id"])
        i = self.item_index().get_indexer(self.interactions["item_id"])
        return u.astype(np.int64), i.astype(np.int64)

    def friend_graph(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The social graph as CSR over user indexes: user ``u``'s friends are ``friends[offsets[u]:offsets[u+1]]``
        (sorted, each once); None when the dataset has no social edges."""
        if self.social is None:
            return None
        index = self.user_index()
        users = index.get_indexer(self.social["user_id"])
        friends = index.get_indexer(self.social["friend_id"])
        keep = (users >= 0) & (friends >= 0) & (users != friends)
        keys = np.unique(users[keep].astype(np.int64) * self.n_users + friends[keep])
        offsets = np.searchsorted(keys // self.n_users, np.arange(self.n_users + 1)).astype(np.int64)
        return offsets, keys % self.n_users

    def category_matrix(self) -> np.ndarray:
        """float32 [n_items, n_categories] multi-hot of the items' categories."""
        index = {c: k for k, c in enumerate(self.categories)}
        out = np.zeros((self.n_items, len(self.categories)), dtype=np.float32)
        for row, cats in enumerate(self.items["categories"]):
            for c in cats:
                out[row, index[c]] = 1.0
        return out

    def fingerprint(self) -> str:
        """sha256 over the loaded tables: two runs on the same data have the same fingerprint."""
        h = hashlib.sha256()
        h.update(pd.util.hash_pandas_object(self.interactions[INTERACTION_COLUMNS], index=False).to_numpy().tobytes())
        h.update("\x1f".join(self.items["item_id"]).encode())
        h.update("\x1f".join(self.users["user_id"]).encode())
        return h.hexdigest()

    def summary(self) -> str:
        social = f", {len(self.social):,} social edges" if self.social is not None else ""
        return (
            f"{self.name}: {self.n_users:,} users, {self.n_items:,} items, "
            f"{len(self.interactions):,} interactions{social}, {len(self.categories)} categories"
        )
