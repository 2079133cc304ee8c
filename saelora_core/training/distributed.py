"""Data-parallel training on ``torch.distributed``: the few helpers the training loops call.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) every rank runs the same loop on the
same data in the same order. Each rank takes its share of every batch (:func:`share`: examples
``rank, rank + world, ...``), runs forward and backward on it with the loss still divided by the
*whole* batch's size, and :func:`all_reduce_grads_` sums the gradients over the ranks. The sum
of the ranks' gradients is then the gradient of the whole batch, so the optimizer step, and the
parameters after it, are those of one process running the whole batch (up to float rounding of
the sum's order; ``tests/training/test_distributed.py`` checks it with 2 gloo processes).

Only rank 0 writes checkpoints, adapters and logs (:func:`is_main`); rank 0 reads a checkpoint
and :func:`broadcast_object` hands it to the others, so resuming needs no shared file system.
Without a process group every helper is the identity (one process, world size 1).

The trained tensors here are small (an adapter, a steer, a LoRA), so the gradients travel as one
flat buffer per step; the frozen model is never synchronised. Backend: ``nccl`` on CUDA, ``gloo``
on the CPU. See ``docs/distributed.md``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

T = TypeVar("T")


def active() -> bool:
    """Whether a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes files and logs."""
    return rank() == 0


def local_device() -> str:
    """This rank's device: ``cuda:LOCAL_RANK`` when CUDA is there, else ``cpu``."""
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def init_from_env() -> bool:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE``,
    ``RANK``, ``MASTER_ADDR``, ...); a no-op outside ``torchrun`` or when already joined.
    Returns whether training is data-parallel."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return active()
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if cuda else "gloo")
    return active()


def share(items: Sequence[T]) -> list[T]:
    """This rank's part of a batch: items ``rank, rank + world, ...`` (all of them alone)."""
    return list(items[rank() :: world_size()])


@torch.no_grad()
def all_reduce_grads_(params: Iterable[Tensor], *scalars: Tensor) -> list[Tensor]:
    """Sum the gradients of ``params`` over the ranks, in place, as one flat buffer; a parameter
    this rank left without a gradient counts as zeros. ``scalars`` (e.g. the step's loss) are
    summed in the same call and returned."""
    ps = list(params)
    if not active():
        return list(scalars)
    for p in ps:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    device = ps[0].device if ps else scalars[0].device
    parts = [p.grad.reshape(-1).float() for p in ps] + [  # type: ignore[union-attr]
        s.detach().reshape(1).float().to(device) for s in scalars
    ]
    flat = torch.cat(parts)
    dist.all_reduce(flat)
    i = 0
    for p in ps:
        n = p.numel()
        p.grad.copy_(flat[i : i + n].view_as(p))  # type: ignore[union-attr]
        i += n
    return [flat[i + j].to(s.dtype) for j, s in enumerate(scalars)]


@torch.no_grad()
def all_reduce_sum(t: Tensor) -> Tensor:
    """``t`` summed over the ranks (a new tensor; ``t`` itself alone)."""
    if not active():
        return t
    out = t.detach().clone()
    dist.all_reduce(out)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (pickled; tensors in it should be on the CPU)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@torch.no_grad()
def broadcast_params_(params: Iterable[Tensor]) -> None:
    """Copy rank 0's values of ``params`` to every rank (after an init each rank ran)."""
    if not active():
        return
    for p in params:
        dist.broadcast(p.data, src=0)


def barrier() -> None:
    if active():
        dist.barrier()
