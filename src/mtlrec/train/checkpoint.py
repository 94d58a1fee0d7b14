"""Crash-safe training checkpoints: one safetensors file holding everything a killed run needs to go on exactly
where it was (model, optimisers, loss-weighting state, every random generator, the place in the epoch, the best
weights so far, the history), and no pickle.

Any state is a tree of dicts, lists, numbers, strings and tensors (an optimiser's ``state_dict``, a NumPy
generator's ``bit_generator.state``): the tensors go into the file as tensors, the rest of the tree into its JSON
metadata, with a sha256 over every tensor's bytes. A checkpoint is written to a temporary file, fsynced, renamed
over the last one and the folder fsynced, so a kill at any moment leaves the previous checkpoint or the new one,
never half of one; a file that does not match its checksum (or is not a checkpoint at all) is reported by name.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mtlrec.errors import ArtifactError

CHECKPOINT = "checkpoint.safetensors"
FORMAT = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (a tree of dicts, lists, scalars and tensors) atomically to ``path``."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split(state, "s", tensors)
    meta = {"format": str(FORMAT), "state": json.dumps(skeleton), "sha256": _digest(tensors)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a power cut
    finally:
        os.close(fd)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The state :func:`save_checkpoint` wrote; ArtifactError naming the file when it is damaged."""
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"{path}: the checkpoint is corrupt or truncated ({e}); start the run again without "
                            "--resume, or restore the file from a backup") from None  # fmt: skip
    if meta.get("format") != str(FORMAT) or "state" not in meta:
        raise ArtifactError(f"{path}: not an mtlrec training checkpoint (format {meta.get('format')!r})")
    if meta.get("sha256") != _digest(tensors):
        raise ArtifactError(f"{path}: the checkpoint is corrupt (its tensors do not match their checksum); start "
                            "the run again without --resume, or restore the file from a backup")  # fmt: skip
    return _join(json.loads(meta["state"]), tensors)


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _split(node: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """The JSON skeleton of ``node``; its tensors land in ``tensors`` under path-like keys."""
    if isinstance(node, torch.Tensor):
        tensors[key] = node.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(node, dict):  # keys kept with their type (optimiser states are keyed by int)
        return {"__dict__": [[k, _split(v, f"{key}.{k}", tensors)] for k, v in node.items()]}
    if isinstance(node, (list, tuple)):
        return [_split(v, f"{key}.{i}", tensors) for i, v in enumerate(node)]
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    raise TypeError(f"cannot checkpoint a {type(node).__name__} at {key}")  # a programming error


def _join(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, dict):
        if "__tensor__" in node:
            return tensors[node["__tensor__"]]
        return {k: _join(v, tensors) for k, v in node["__dict__"]}
    if isinstance(node, list):
        return [_join(v, tensors) for v in node]
    return node
