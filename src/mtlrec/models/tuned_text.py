"""Items whose text vectors come from a language model fine-tuned with the multi-task loss (``text.lora``).

The brief's "multi-task learning inside the LLM": LoRA adapters on the language model (``text/lora.py``) get the
gradient of ``L = sum_t w_t L_t`` through the item representations, like every other shared parameter.

:class:`TunedItemEncoder` is an :class:`ItemEncoder` whose ``text`` buffer, the catalogue's vectors
[n_items, text_dim], is kept in step with the adapters:

- **training with gradient**: one step reads its items inside :meth:`TunedItemEncoder.reading` (``row_logits``
  opens it over the rows' items and histories). Their texts are re-encoded once, with gradient, and for the scope
  ``text`` is the catalogue with those rows replaced, so every read of the step (history pooling, the rows' items,
  the catalogue) sees them. With ``text.lora.items_per_step`` N > 0 only N of the step's items, drawn at random,
  are re-encoded; the others read the latest vector computed for them (a memory bank, no gradient). A read in
  training mode outside any scope opens one for its own items.
- **evaluation, serving, no gradient**: ``text`` is the whole catalogue encoded once under ``no_grad`` with the
  current adapters; it is re-encoded on first use whenever the adapters changed since (torch's version counters
  tell, see ``LoraTextModel.adapter_versions``), so validation after each epoch sees the adapters of that epoch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from mtlrec.config import Config
from mtlrec.errors import ConfigError
from mtlrec.models.inputs import ItemEncoder
from mtlrec.text.encoder import DEFAULT_MODEL, SentenceTransformerEncoder
from mtlrec.text.lora import LoraTextModel, require_peft

REFRESH_CHUNK = 4096  # items whose tokens are gathered at once when the whole catalogue is re-encoded


@dataclass
class TextTuning:
    """What a :class:`TunedItemEncoder` needs beside the ItemEncoder's arguments."""

    language_model: LoraTextModel
    tokens: dict[str, torch.Tensor]  # every item's tokenised text, padded: name -> long [n_items, length]
    batch_size: int = 128  # texts per pass of the language model
    items_per_step: int = 0  # see LoraConfig.items_per_step
    seed: int = 0  # draws the items re-encoded when items_per_step caps them


def check_tuning(config: Config) -> None:
    """Fail early (before any data is read) on settings ``text.lora`` cannot work with."""
    if config.text.lora.rank <= 0:
        return
    if config.text.encoder != "sentence-transformers":
        raise ConfigError(f"text.lora fine-tunes a language model: it needs text.encoder 'sentence-transformers', "
                          f"not '{config.text.encoder}' (text.lora.rank=0 keeps the encoder frozen)")  # fmt: skip
    if config.model.friends > 0:
        raise ConfigError("text.lora does not work with model.friends > 0 yet: friend attention reads precomputed "
                          "means of frozen text vectors; set one of them to 0")  # fmt: skip
    require_peft()


def text_tuning(config: Config, texts: list[str], device: str = "cpu") -> TextTuning:
    """The language model named by ``config.text`` with fresh LoRA adapters (initialised from their own generator
    seeded by ``train.seed``, so the rest of the model draws the same initial weights as a frozen run) and the
    tokenised ``texts`` of every item."""
    tc = config.text
    base = SentenceTransformerEncoder(tc.model or DEFAULT_MODEL, device=device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        model = LoraTextModel(base, tc.lora)
    return TextTuning(model, model.tokenize(texts), tc.batch_size, tc.lora.items_per_step, config.train.seed)


class TunedItemEncoder(ItemEncoder):
    def __init__(
        self, text_vectors: torch.Tensor, dim: int, dropout: float, id_dropout: float, tuning: TextTuning
    ) -> None:
        """``text_vectors``: the catalogue's vectors to start from (copied: they are rewritten in place here)."""
        super().__init__(text_vectors.float().clone(), dim, dropout, id_dropout)
        n_items = text_vectors.shape[0]
        for key, value in tuning.tokens.items():
            if value.shape[0] != n_items:
                raise ValueError(f"tokens '{key}' has {value.shape[0]} rows for {n_items} items")
            self.register_buffer(f"tokens_{key}", value, persistent=False)
        self.token_keys = list(tuning.tokens)
        self.language_model = tuning.language_model
        self.batch_size, self.items_per_step = tuning.batch_size, tuning.items_per_step
        self.generator = torch.Generator().manual_seed(tuning.seed)
        self._current: tuple[int, ...] | None = None  # adapter versions ``text`` was encoded at (None: not encoded)
        self._own = False  # whether every row of ``text`` comes from this language model (False: the start vectors)
        self._in_step = False

    def tokens(self, items: torch.Tensor) -> dict[str, torch.Tensor]:
        return {key: getattr(self, f"tokens_{key}")[items] for key in self.token_keys}  # each [len(items), length]

    @torch.no_grad()
    def refresh_text(self, force: bool = False) -> torch.Tensor:
        """Re-encode the whole catalogue with the current adapters (evaluation mode, no gradient) unless ``text``
        already holds exactly that; returns ``text`` [n_items, text_dim]."""
        versions = self.language_model.adapter_versions()
        if force or self._current != versions:
            was_training = self.language_model.training
            self.language_model.train(False)
            try:
                items = torch.arange(self.text.shape[0], device=self.text.device)
                for chunk in items.split(REFRESH_CHUNK):
                    self.text[chunk] = self.language_model.embed(self.tokens(chunk), self.batch_size)
            finally:
                self.language_model.train(was_training)
            self._current, self._own = versions, True
        return self.text

    def training_state(self) -> dict[str, Any]:
        """What a checkpoint needs beyond the weights to go on exactly as an uninterrupted run: the memory bank
        (``text``: with ``items_per_step`` > 0 some rows are training-mode vectors of earlier steps), the generator
        that draws the items re-encoded, and whether the bank is this model's own and current for its adapters."""
        current = self._current is not None and self._current == self.language_model.adapter_versions()
        return {"bank": self.text.detach().cpu().clone(), "draws": self.generator.get_state(), "own": self._own,
                "current": current}  # fmt: skip

    @torch.no_grad()
    def load_training_state(self, state: dict[str, Any]) -> None:
        """Undo :meth:`training_state` (after the weights are loaded: "current" means current for those)."""
        self.text.copy_(state["bank"])
        self.generator.set_state(state["draws"])
        self._own = bool(state["own"])
        self._current = self.language_model.adapter_versions() if state["current"] else None

    def mark_text_current(self) -> None:
        """Declare ``text`` to be the catalogue encoded with the adapters as they are now (a run directory stores
        both together), so it is used as it is instead of being encoded again."""
        self._current, self._own = self.language_model.adapter_versions(), True

    @contextlib.contextmanager
    def reading(self, items: torch.Tensor) -> Iterator[None]:
        """One training step that reads ``items`` (item indexes, any shape, repeats allowed); see the module
        docstring. A no-op without gradient, in evaluation mode, or inside another scope."""
        if not (self.training and torch.is_grad_enabled()) or self._in_step:
            yield
            return
        bank = self.text  # [n_items, text_dim] the latest vector of each item, no gradient
        chosen = torch.unique(items.to(bank.device))  # [U] sorted
        if not self._own:  # items outside ``chosen`` read the bank: make it this model's vectors first
            self.refresh_text()
        if 0 < self.items_per_step < len(chosen):
            pick = torch.randperm(len(chosen), generator=self.generator)[: self.items_per_step]
            chosen = chosen[pick.sort().values.to(chosen.device)]  # [N]
        fresh = self.language_model.embed(self.tokens(chosen), self.batch_size)  # [N, text_dim] with gradient
        with torch.no_grad():
            bank[chosen] = fresh.detach().to(bank.dtype)  # training-mode vectors (adapter dropout) ...
        self._current = None  # ... so evaluation encodes the catalogue again
        # [n_items, text_dim], gradient on the chosen rows (float32 also when the step runs under bf16 autocast)
        self._buffers["text"] = bank.index_put((chosen,), fresh.to(bank.dtype))
        self._in_step = True
        try:
            yield
        finally:
            self._buffers["text"] = bank
            self._in_step = False

    def _scope(self, items: torch.Tensor) -> contextlib.AbstractContextManager[None]:
        """A read outside a step: in training with gradient, a scope of its own; otherwise the current catalogue."""
        if self.training and torch.is_grad_enabled():
            return self.reading(items)
        if not self._in_step:
            self.refresh_text()
        return contextlib.nullcontext()

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        with self._scope(items):
            return super().forward(items)

    def all(self) -> torch.Tensor:
        with self._scope(torch.arange(self.text.shape[0], device=self.text.device)):
            return super().all()

    def pool(self, items: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        with self._scope(items[weights != 0]):
            return super().pool(items, weights)
