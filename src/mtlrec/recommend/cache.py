"""A bounded cache of known users' catalogue scores, for serving.

Exact, not approximate: a loaded run's model is frozen and a known user's history is what the run holds, so their
representation and logits over the catalogue never change while the run is loaded (a reload builds a new
Recommender, with a new cache). Serving a returning user then costs a ranking, not a pass of the network."""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch

DEFAULT_MB = 256.0  # what `mtlrec serve` keeps: ML-100K takes 13 kB a user (all of them); 100k items ~0.8 MB a user
Entry = tuple[torch.Tensor, dict[str, torch.Tensor]]  # (user representation [dim], task -> logits [n_items])


class ScoreCache:
    """Least recently used entries go first once the entries take more than ``max_mb`` MiB. Thread-safe."""

    def __init__(self, max_mb: float) -> None:
        if max_mb <= 0:
            raise ValueError(f"max_mb must be positive, got {max_mb}")
        self.max_bytes = int(max_mb * 2**20)
        self.bytes = self.hits = self.misses = 0
        self._entries: OrderedDict[int, tuple[Entry, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, user: int) -> Entry | None:
        with self._lock:
            found = self._entries.get(user)
            if found is None:
                self.misses += 1
                return None
            self._entries.move_to_end(user)
            self.hits += 1
            return found[0]

    def put(self, user: int, representation: torch.Tensor, logits: dict[str, torch.Tensor]) -> None:
        """Stores copies (rows of a batch's tensors would keep the whole batch alive)."""
        entry = (representation.clone(), {task: row.clone() for task, row in logits.items()})
        size = sum(t.numel() * t.element_size() for t in (entry[0], *entry[1].values()))
        with self._lock:
            if user in self._entries or size > self.max_bytes:
                return
            self._entries[user] = (entry, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.bytes -= dropped
