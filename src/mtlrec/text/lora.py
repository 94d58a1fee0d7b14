"""A sentence-transformers language model with LoRA adapters (peft) on its transformer, for ``text.lora``.

LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022) adds ``(alpha / r) * B A x`` to
the chosen linear layers, with ``A`` [r, in] random and ``B`` [out, r] zero at the start, so the adapted model
begins exactly as the frozen one. Only ``A`` and ``B`` train; every base weight stays frozen.

:class:`LoraTextModel` is a ``TextEncoder`` (``name``, ``dim``, ``encode``) and an ``nn.Module`` whose
``forward`` embeds tokenised texts with gradient. Its embedding is the frozen encoder's: the same modules
(transformer, pooling, normalisation) followed by L2 normalisation, so with ``B`` zero it gives the frozen
vectors. Its ``state_dict`` holds the adapters alone; loading one leaves the base weights as they are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtlrec.config import LoraConfig
from mtlrec.errors import ConfigError, MtlrecError
from mtlrec.text.encoder import SentenceTransformerEncoder

__all__ = ["LORA_INSTALL", "LoraTextModel", "require_peft"]

LORA_INSTALL = 'pip install "mtlrec[lora]"'


def require_peft() -> Any:
    """The ``peft`` module, or an error saying how to install it."""
    try:
        import peft
    except ImportError:
        raise MtlrecError(f"text.lora.rank > 0 fine-tunes the language model with LoRA adapters, which needs the "
                          f"peft package: {LORA_INSTALL}") from None  # fmt: skip
    return peft


class LoraTextModel(nn.Module):
    """``base``'s sentence-transformers model (a copy of its own) with LoRA adapters as ``options`` describe.

    The frozen model's own dropout layers stay off in training mode too (it is frozen; that dropout belonged to
    its pre-training); ``options.dropout`` acts on the adapters' inputs while training.
    """

    def __init__(self, base: SentenceTransformerEncoder, options: LoraConfig) -> None:
        peft = require_peft()
        super().__init__()
        if options.rank < 1:
            raise ConfigError("text.lora.rank must be at least 1 to build LoRA adapters")
        self.options, self.base_name = options, base.name
        model = base._load()  # a model of this encoder's own, never shared with a frozen encoder
        if options.max_length:
            model.max_seq_length = options.max_length
        for p in model.parameters():
            p.requires_grad_(False)
        lora = peft.LoraConfig(r=options.rank, lora_alpha=options.alpha, lora_dropout=options.dropout,
                               target_modules=list(options.target_modules), bias="none",
                               layers_to_transform=list(options.layers) or None)  # fmt: skip
        try:
            peft.inject_adapter_in_model(lora, model)
        except ValueError as exc:  # no module matched target_modules (and layers)
            linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})
            raise ConfigError(f"text.lora.target_modules {list(options.target_modules)} (layers "
                              f"{list(options.layers) or 'all'}) match no layer of '{base.model}': "
                              f"{str(exc).splitlines()[0]}; its linear layers are named {', '.join(linear)}"
                              ) from None  # fmt: skip
        self.model = model
        self.adapters = {name: p for name, p in model.named_parameters() if "lora_" in name}
        for name, p in model.named_parameters():
            p.requires_grad_(name in self.adapters)
        self._adapter_dropouts = [m for name, m in model.named_modules() if name.split(".")[-2:-1] == ["lora_dropout"]]
        self._left_padded = getattr(getattr(model, "tokenizer", None), "padding_side", "right") == "left"
        self.train(False)

    # -- identity ---------------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The frozen encoder's name + the adapters' settings and a hash of their weights: fine-tuned vectors never
        share an embedding-cache entry with frozen ones, nor with another state of the adapters."""
        digest = hashlib.sha256()
        for key in sorted(self.adapters):
            digest.update(key.encode())
            digest.update(self.adapters[key].detach().float().cpu().contiguous().numpy().tobytes())
        o = self.options
        return f"{self.base_name}+lora:r{o.rank}:a{o.alpha:g}:L{self.max_length}@{digest.hexdigest()[:12]}"

    @property
    def max_length(self) -> int:
        return int(self.model.max_seq_length)

    @property
    def dim(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(getter())

    def adapter_versions(self) -> tuple[int, ...]:
        """Torch's in-place version counters of the adapter weights: any change to them (an optimizer step,
        ``load_state_dict``, an edit under ``no_grad``) changes this tuple, so vectors computed earlier are stale."""
        return tuple(p._version for p in self.adapters.values())

    # -- modes and state ----------------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> LoraTextModel:
        super().train(mode)
        self.model.eval()
        for dropout in self._adapter_dropouts:
            dropout.train(mode)
        return self

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> Any:
        """The adapters' weights only (the frozen base weights are the language model's own files)."""
        out = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        inner = prefix + "model."
        for key in [k for k in out if k.startswith(inner) and k[len(inner) :] not in self.adapters]:
            del out[key]
        return out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # A state holds the adapters alone (see ``state_dict``): the base weights keep their current values.
        for key, value in self.model.state_dict(keep_vars=True).items():
            if key not in self.adapters:
                state_dict.setdefault(prefix + "model." + key, value.detach())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- encoding -----------------------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token tensors [n, longest text] of ``texts``, cut at ``max_length`` tokens, on the CPU."""
        tokenize = getattr(self.model, "preprocess", None) or self.model.tokenize  # renamed in sentence-transformers 6
        features = tokenize(list(texts))
        return {key: value for key, value in features.items() if isinstance(value, torch.Tensor)}

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Unit vectors [n, dim] of one batch of tokenised texts (gradient into the adapters where enabled)."""
        out = self.model(dict(features))["sentence_embedding"]  # [n, dim] pooled as the frozen encoder pools
        return F.normalize(out, dim=-1)  # as encode(normalize_embeddings=True)

    def embed(self, features: dict[str, torch.Tensor], batch_size: int) -> torch.Tensor:
        """Unit vectors [n, dim] of the rows of ``features`` (padded token tensors [n, length]): shortest texts
        first in batches of ``batch_size``, each cut to its longest text, so padding costs little."""
        lengths = features["attention_mask"].sum(1)  # [n]
        if len(lengths) == 0:
            return torch.zeros(0, self.dim, device=lengths.device)
        order = torch.argsort(lengths, stable=True)  # [n]
        out = []
        for chunk in order.split(max(1, batch_size)):
            width = int(lengths[chunk].max())
            cut = slice(-width, None) if self._left_padded else slice(0, width)
            out.append(self({key: value[chunk, cut] for key, value in features.items()}))  # [c, dim]
        return torch.cat(out)[torch.argsort(order)]  # [n, dim] in input order

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """``TextEncoder.encode``: float32 [n, dim] unit rows from the adapted model (evaluation mode, no gradient);
        ``progress`` is accepted for the protocol and unused."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        device = next(iter(self.adapters.values())).device
        was_training = self.training
        self.train(False)
        try:
            out = [self.embed({k: v.to(device) for k, v in self.tokenize(texts[start : start + 4096]).items()},
                              batch_size).cpu() for start in range(0, len(texts), 4096)]  # fmt: skip
        finally:
            self.train(was_training)
        return torch.cat(out).float().numpy()

    def __repr__(self) -> str:
        o = self.options
        return (f"LoraTextModel(base={self.base_name!r}, rank={o.rank}, alpha={o.alpha:g}, "
                f"target_modules={list(o.target_modules)}, max_length={self.max_length})")  # fmt: skip
