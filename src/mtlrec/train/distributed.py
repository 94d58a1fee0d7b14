"""Data-parallel training on torch.distributed: ``mtlrec train --nproc N`` on one machine, or ``torchrun`` on several
(see the README). Gloo on CPU, NCCL on CUDA.

Every process holds the whole model and the whole (memory-mapped or small) data; each epoch all of them draw the same
shuffle and each takes its own shard of every global batch, with its own negatives. After the backward pass the
gradients are averaged over the processes (one flat all-reduce), so every process steps with the gradient of the whole
global batch and all replicas stay identical. Evaluation (full ranking, exact: no sampled or approximate metric) runs
on rank 0 over every user and its verdict (improved, stop) is broadcast; rank 0 alone writes the run directory.

Why not ``DistributedDataParallel``: the trainer calls the model's parts (user tower, pair heads) rather than one
``forward``, and gradient-based loss weighting (GradNorm, PCGrad) runs its own backward passes; averaging the final
gradients explicitly works for all of them and is one collective per step either way."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mtlrec.errors import ConfigError
from mtlrec.processes import stop_when_orphaned


@dataclass(frozen=True)
class Dist:
    """This process's place in the group; ``Dist()`` is plain single-process training."""

    rank: int = 0
    world: int = 1
    joined_here: bool = False  # this process group was initialised by ``join`` (and ``leave`` ends it)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object of ours), on every rank."""
        if not self.enabled:
            return value
        box = [value if self.main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (any picklable object of ours), in rank order, on every rank."""
        if not self.enabled:
            return [value]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, value)
        return out

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each key's mean over the ranks (all ranks must pass the same keys)."""
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        flat = torch.tensor([values[k] for k in keys], dtype=torch.float64)
        torch.distributed.all_reduce(flat)
        return dict(zip(keys, (flat / self.world).tolist(), strict=True))


def join(device: str) -> Dist:
    """The process group this process was launched into (``torchrun`` sets WORLD_SIZE, RANK, MASTER_ADDR, ...),
    joined once; ``Dist()`` when not launched that way."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed: train with one process")
    joined_here = not dist.is_initialized()
    if joined_here:
        cuda = torch.device(device).type == "cuda"
        if cuda:  # one GPU per process on each node
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        if "TORCHELASTIC_RUN_ID" in os.environ:  # torchrun starts each rank in its own session: nothing stops
            stop_when_orphaned(os.getppid())  # the rank when torchrun is SIGKILLed, so it watches torchrun itself
    return Dist(dist.get_rank(), dist.get_world_size(), joined_here)


def leave(group: Dist) -> None:
    """End the process group if ``join`` started it (a caller's own group stays theirs)."""
    if group.joined_here and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def average_gradients(
    params: list[torch.nn.Parameter], group: Dist, sparse: Sequence[torch.nn.Parameter] = ()
) -> None:
    """Replace each gradient by its mean over the ranks. A parameter no rank has a gradient for keeps ``None``
    (optimizers skip it, as in one process); one that only some ranks have counts as zero on the others.

    ``sparse``: the parameters with sparse gradients (``train.sparse_ids``; the same on every rank). Their means
    stay sparse: gloo sums them as they are (cost: the rows the ranks touched), other backends densely."""
    if not group.enabled or not params:
        return
    dense = [p for p in params if not any(p is s for s in sparse)]
    for p in sparse:
        grad = (p.grad if p.grad is not None else torch.sparse_coo_tensor(
            torch.zeros(1, 0, dtype=torch.long), p.new_zeros(0, *p.shape[1:]), p.shape)).coalesce()  # fmt: skip
        if torch.distributed.get_backend() == "gloo":
            torch.distributed.all_reduce(grad)
        else:
            summed = grad.to_dense()
            torch.distributed.all_reduce(summed)
            grad = summed.to_sparse(sparse_dim=grad.sparse_dim())
        p.grad = (grad / group.world).coalesce()
    if not dense:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in dense]
    present = torch.tensor([float(p.grad is not None) for p in dense], device=grads[0].device)
    flat = torch.cat([g.reshape(-1) for g in grads] + [present])
    torch.distributed.all_reduce(flat)
    flat /= group.world
    offset = 0
    for p, g in zip(dense, grads, strict=True):
        p.grad = flat[offset : offset + g.numel()].view_as(p)
        offset += g.numel()
    for p, seen in zip(dense, flat[offset:].tolist(), strict=True):
        if seen == 0:
            p.grad = None


def threads_per_process(threads: int) -> int:
    """Torch threads for one of the processes on this machine: ``threads`` when set, else the cores shared out."""
    if threads > 0:
        return threads
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, local))
