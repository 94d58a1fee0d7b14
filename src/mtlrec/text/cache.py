"""On-disk embedding cache keyed by (encoder name, sha256 of the text), so a second run encodes nothing.

Layout, one directory per encoder (``<slug of the name>-<sha256 of the name, 12 hex>``)::

    encoder.json                 {"encoder": <full name>} for people looking at the folder
    shard-<id>.keys              n raw 32-byte sha256 digests of the texts, in row order
    shard-<id>.npy               float32 [n, dim], row i is the vector of key i

Shards are append-only and never edited, which scales to millions of texts without one file per text. A shard
is written to hidden ``.tmp-*`` files, fsynced, then renamed with ``os.replace``: first ``.keys``, then
``.npy``. The ``.npy`` rename is the commit, so a crash leaves either no shard or an ignored ``.keys``/temp
file, never a half shard. Concurrent writers each write their own uniquely named shard; a text cached twice
gets the same vector, and the first copy wins.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mtlrec.errors import MtlrecError
from mtlrec.text.encoder import TextEncoder

__all__ = ["EmbeddingCache", "default_cache_dir", "encode_cached", "text_keys"]

_KEY_BYTES = 32
_KEY_DTYPE = np.dtype(f"S{_KEY_BYTES}")  # fixed-width bytes sort and search natively in numpy


def default_cache_dir() -> Path:
    """``$MTLREC_CACHE_DIR/embeddings``, else ``$XDG_CACHE_HOME/mtlrec/embeddings``, else ``~/.cache/...``."""
    if os.environ.get("MTLREC_CACHE_DIR"):
        return Path(os.environ["MTLREC_CACHE_DIR"]).expanduser() / "embeddings"
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "mtlrec" / "embeddings"
    return Path.home() / ".cache" / "mtlrec" / "embeddings"


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """sha256 digests of the UTF-8 texts, as a ``S32`` array."""
    return np.array([hashlib.sha256(t.encode("utf-8")).digest() for t in texts], dtype=_KEY_DTYPE)


def _fsync_dir(path: Path) -> None:
    # Makes the renames themselves durable; not possible (nor needed) on Windows.
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class EmbeddingCache:
    """Vectors on disk under ``root`` (default: ``default_cache_dir()``), one directory per encoder name."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def encoder_dir(self, encoder_name: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder_name).strip("._")[:80]
        return self.root / f"{slug}-{hashlib.sha256(encoder_name.encode()).hexdigest()[:12]}"

    def shards(self, encoder_name: str) -> list[tuple[Path, Path]]:
        """Committed ``(npy, keys)`` pairs in write order; temp files and orphan ``.keys`` are not listed."""
        folder = self.encoder_dir(encoder_name)
        if not folder.is_dir():
            return []
        pairs = []
        for npy in sorted(folder.glob("shard-*.npy")):
            keys = npy.with_suffix(".keys")
            if keys.is_file():
                pairs.append((npy, keys))
        return pairs

    def _open_shard(self, npy: Path, keys_path: Path) -> tuple[np.ndarray, np.ndarray] | None:
        """Memory-map one shard; a damaged one is skipped with a warning so its texts get re-encoded."""
        try:
            vectors = np.load(npy, mmap_mode="r")
            keys = np.fromfile(keys_path, dtype=_KEY_DTYPE)
        except (OSError, ValueError) as exc:
            warnings.warn(f"embedding cache: skipping unreadable shard {npy}: {exc}", stacklevel=3)
            return None
        if vectors.ndim != 2 or vectors.dtype != np.float32 or len(vectors) != len(keys):
            warnings.warn(f"embedding cache: skipping inconsistent shard {npy} (delete it)", stacklevel=3)
            return None
        return vectors, keys

    def lookup(self, encoder_name: str, keys: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """Cached vectors for ``keys`` (from ``text_keys``).

        Returns ``(vectors, found)``: ``found`` is a bool mask over ``keys``; ``vectors`` is float32
        ``[len(keys), dim]`` with the found rows filled (others zero), or None when nothing is cached.
        """
        keys = np.asarray(keys, dtype=_KEY_DTYPE)
        found = np.zeros(len(keys), dtype=bool)
        opened = [s for s in (self._open_shard(*pair) for pair in self.shards(encoder_name)) if s is not None]
        if not opened or len(keys) == 0:
            return None, found
        dims = {v.shape[1] for v, _ in opened}
        if len(dims) > 1:
            raise MtlrecError(
                f"embedding cache {self.encoder_dir(encoder_name)} mixes vector sizes {sorted(dims)}; delete it"
            )
        # One sorted index over every shard's keys; a stable sort keeps the first-written copy of a duplicate.
        all_keys = np.concatenate([k for _, k in opened])
        shard_of = np.concatenate([np.full(len(k), i, dtype=np.int32) for i, (_, k) in enumerate(opened)])
        row_of = np.concatenate([np.arange(len(k), dtype=np.int64) for _, k in opened])
        order = np.argsort(all_keys, kind="stable")
        sorted_keys = all_keys[order]
        pos = np.searchsorted(sorted_keys, keys)
        pos_clipped = np.minimum(pos, len(sorted_keys) - 1)
        found = (pos < len(sorted_keys)) & (sorted_keys[pos_clipped] == keys)
        out = np.zeros((len(keys), dims.pop()), dtype=np.float32)
        hit_queries = np.flatnonzero(found)
        hit_entries = order[pos_clipped[hit_queries]]
        for i, (vectors, _) in enumerate(opened):
            mine = shard_of[hit_entries] == i
            if mine.any():
                rows = row_of[hit_entries[mine]]
                rank = np.argsort(rows)  # read the memory map in file order
                out[hit_queries[mine][rank]] = vectors[rows[rank]]
        return out, found

    def put(self, encoder_name: str, keys: np.ndarray, vectors: np.ndarray) -> Path:
        """Append one shard atomically; returns its ``.npy`` path."""
        keys = np.ascontiguousarray(keys, dtype=_KEY_DTYPE)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(keys):
            raise ValueError(f"put needs [n, dim] vectors for n keys, got {vectors.shape} for {len(keys)} keys")
        folder = self.encoder_dir(encoder_name)
        folder.mkdir(parents=True, exist_ok=True)
        meta = folder / "encoder.json"
        if not meta.exists():
            meta.write_text(json.dumps({"encoder": encoder_name}) + "\n")
        # Time first so that name order is write order (first copy wins); pid+uuid keep writers apart.
        shard_id = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        final_npy, final_keys = folder / f"shard-{shard_id}.npy", folder / f"shard-{shard_id}.keys"
        tmp_npy, tmp_keys = folder / f".tmp-{shard_id}.npy", folder / f".tmp-{shard_id}.keys"
        try:
            for tmp, write in ((tmp_keys, keys.tofile), (tmp_npy, lambda f: np.save(f, vectors))):
                with open(tmp, "wb") as f:
                    write(f)
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp_keys, final_keys)
            os.replace(tmp_npy, final_npy)  # the commit point
            _fsync_dir(folder)
        finally:
            for tmp in (tmp_npy, tmp_keys):
                tmp.unlink(missing_ok=True)
        return final_npy

    def count(self, encoder_name: str) -> int:
        """Number of cached rows (duplicates across shards counted twice)."""
        return sum(keys.stat().st_size // _KEY_BYTES for _, keys in self.shards(encoder_name))

    def compact(self, encoder_name: str) -> int:
        """Merge all shards into one without duplicates, to speed up lookups after many small runs.

        The merged shard is committed before the old ones are removed, so a crash in between only leaves
        duplicates. Returns the number of distinct cached texts.
        """
        pairs = self.shards(encoder_name)
        opened = [s for s in (self._open_shard(*pair) for pair in pairs) if s is not None]
        if not opened:
            return 0
        all_keys = np.concatenate([k for _, k in opened])
        unique_keys = all_keys[np.sort(np.unique(all_keys, return_index=True)[1])]
        if len(pairs) > 1 or len(unique_keys) < len(all_keys):
            vectors, _ = self.lookup(encoder_name, unique_keys)
            del opened  # release the memory maps before deleting their files
            self.put(encoder_name, unique_keys, vectors)
            for npy, keys in pairs:
                npy.unlink(missing_ok=True)  # the .npy first: an orphan .keys is ignored
                keys.unlink(missing_ok=True)
        return len(unique_keys)

    def clear(self, encoder_name: str) -> None:
        """Forget every vector of one encoder."""
        folder = self.encoder_dir(encoder_name)
        if folder.is_dir():
            for file in folder.iterdir():
                file.unlink()
            folder.rmdir()


def encode_cached(
    encoder: TextEncoder,
    texts: Sequence[str],
    cache: EmbeddingCache | None,
    batch_size: int = 64,
    progress: bool = True,
    shard_size: int = 16384,
) -> tuple[np.ndarray, int]:
    """Vectors of ``texts`` (float32 ``[n, dim]``, input order) and how many texts had to be encoded.

    Each distinct text is encoded once. Texts not in ``cache`` are encoded in chunks of ``shard_size`` and each
    chunk is stored as soon as it is done, so an interrupted run keeps its progress. A warm run returns 0 and
    does not load the model.
    """
    texts = list(texts)
    if not texts:
        return np.zeros((0, encoder.dim), dtype=np.float32), 0
    unique, first, inverse = np.unique(text_keys(texts), return_index=True, return_inverse=True)
    vectors: np.ndarray | None = None
    found = np.zeros(len(unique), dtype=bool)
    if cache is not None:
        vectors, found = cache.lookup(encoder.name, unique)
    missing = np.flatnonzero(~found)
    if len(missing):
        chunks = [missing[i : i + shard_size] for i in range(0, len(missing), shard_size)]
        bar = None
        if progress and len(chunks) > 1:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(missing), desc=f"encoding with {encoder.name}", unit="text")
        try:
            for chunk in chunks:
                new = encoder.encode([texts[i] for i in first[chunk].tolist()], batch_size, progress and bar is None)
                new = np.asarray(new, dtype=np.float32)
                if vectors is None:
                    vectors = np.zeros((len(unique), new.shape[1]), dtype=np.float32)
                if new.shape != (len(chunk), vectors.shape[1]):
                    raise MtlrecError(
                        f"text encoder '{encoder.name}' returned vectors of shape {new.shape} for {len(chunk)} "
                        f"texts, expected [{len(chunk)}, {vectors.shape[1]}]"
                        + (f"; delete the stale cache {cache.encoder_dir(encoder.name)}" if found.any() else "")
                    )
                vectors[chunk] = new
                if cache is not None:
                    cache.put(encoder.name, unique[chunk], new)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    assert vectors is not None  # texts is non-empty, so either the cache or the encoder filled it
    return vectors[inverse.reshape(-1)], len(missing)
