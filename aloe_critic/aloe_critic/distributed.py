"""Data-parallel training under ``torchrun`` (gloo on CPUs, NCCL on GPUs); one process by default.

How the distributed run stays the single-process run:

* every rank draws the same *global* batch indices (same seed) and takes its contiguous slice
  (``local_slice``; the batch size must divide by the world size);
* each rank's loss is the mean over its slice, gradients are averaged over ranks
  (``average_gradients``), so the update is the gradient of the global-batch mean, and every
  rank applies the same update to the same (identically seeded) parameters;
* random draws that do not depend on the slice (conservative-aggregation subsets, policy
  samples per observation batch) use generators seeded the same way on every rank.

The critic therefore matches the one-process run up to floating-point summation order. The
policy's flow-matching noise is drawn per slice, so the policy matches it in distribution.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def setup(device: str = "cpu") -> str:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1); returns the
    device this rank should use (``cuda:<LOCAL_RANK>`` for CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        cuda = device.startswith("cuda")
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        if cuda:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)
    return device


def rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_world()[0] == 0


def local_slice(global_batch_size: int) -> slice:
    """This rank's contiguous part of a global batch."""
    rank, world = rank_world()
    if global_batch_size % world:
        raise ValueError(f"batch size {global_batch_size} must be divisible by the world size {world} "
                         "(so every rank's loss has the same weight in the averaged gradient)")
    per = global_batch_size // world
    return slice(rank * per, (rank + 1) * per)


def average_gradients(params) -> None:
    """All-reduce (mean) the gradients of ``params`` across ranks; no-op in one process."""
    rank, world = rank_world()
    if world == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world)


def all_gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` in one process)."""
    rank, world = rank_world()
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if rank_world()[1] > 1:
        dist.barrier()
