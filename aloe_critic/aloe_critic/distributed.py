"""Data-parallel training under ``torchrun`` (gloo on CPUs, NCCL on GPUs); one process by default.

How the distributed run stays the single-process run:

* every rank draws the same *global* batch indices (same seed); the global batch is cut into
  ``batch_blocks`` fixed blocks and each rank takes a contiguous run of whole blocks
  (``rank_blocks``; the world size must divide the number of blocks), so each rank reads and
  decodes only its share of every batch from the memory-mapped cache. The default (0) is one
  block per process: a one-process run pays nothing (each block is a forward pass of its own,
  measured 2x per policy step at 8 blocks), and a run on W processes equals the one-process run
  with ``batch_blocks=W``;
* per-sample randomness inside the training forward (the flow-matching noise x0 and t, dropout
  masks) is drawn per *block*, from a generator and a torch RNG state seeded by (seed, step,
  block) (``block_rng``): sample i of the global batch gets the same noise whichever rank, and
  however many ranks, process it. The one-process run walks the same blocks in order;
* each rank's loss is sum over its samples / global batch size and gradients are summed over
  ranks (``sum_gradients``): the update is the gradient of the global-batch mean, and every
  rank applies the same update to the same (identically seeded) parameters;
* random draws that do not depend on the slice (conservative-aggregation subsets, policy
  samples per observation batch) use generators seeded the same way on every rank;
* work that is the same on every rank is shared out and gathered (``all_gather_objects``):
  decoding new bags (train.py), the policy sample bank (critic.py), the values of every
  recorded chunk (values.py).

Critic and policy therefore match the one-process run up to floating-point summation order
(aloe_critic/test/test_distributed.py compares whole ``train_iteration`` checkpoints).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

# Blocks per global batch; 0 = one per process. Runs on any world size dividing a fixed number of
# blocks give the same result as the one-process run with that number.
DEFAULT_BATCH_BLOCKS = 0


def setup(device: str = "cpu") -> str:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1); returns the
    device this rank should use (``cuda:<LOCAL_RANK>`` for CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        # torch._dynamo, imported lazily (by the first optimizer.step()) while a group is up,
        # keeps a reference to it: destroy_process_group() then leaves gloo's threads running and
        # the interpreter's exit aborts ("terminate called without an active exception", 3 runs
        # in 60 on a 2-core machine). Imported before the group exists, it holds nothing.
        import torch._dynamo  # noqa: F401
        cuda = device.startswith("cuda")
        if cuda:  # one GPU per process, chosen before NCCL starts (its barriers use the current device)
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return device


def teardown() -> None:
    """Leave the process group (call before the process exits: a group left to the interpreter's
    exit can abort the process, gloo's threads still running, and torchrun then reports a failure)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_world()[0] == 0


def rank_blocks(global_batch_size: int, blocks: int = DEFAULT_BATCH_BLOCKS) -> list[tuple[int, slice]]:
    """This rank's (block index, slice of the global batch) pairs, in order.

    The global batch is cut into ``min(blocks, global_batch_size)`` contiguous blocks (sizes
    differing by at most one; ``blocks`` 0 = the world size); rank r of W takes blocks
    [r*n/W, (r+1)*n/W). One process: all.
    """
    rank, world = rank_world()
    n = min(int(blocks) if int(blocks) > 0 else world, int(global_batch_size))
    if n < 1:
        raise ValueError(f"batch_blocks and the batch size must be >= 1, got {blocks} and {global_batch_size}")
    if n % world:
        raise ValueError(f"{n} blocks per batch cannot be shared by {world} ranks: set batch_blocks "
                         f"(--batch-blocks) to a multiple of the world size, and the batch size to at least that")
    edges = np.linspace(0, global_batch_size, n + 1).round().astype(int)
    per = n // world
    return [(b, slice(int(edges[b]), int(edges[b + 1]))) for b in range(rank * per, (rank + 1) * per)]


def span(parts: list[tuple[int, slice]]) -> slice:
    """The contiguous slice covered by ``rank_blocks`` parts."""
    return slice(parts[0][1].start, parts[-1][1].stop)


@dataclass
class Block:
    """One noise block of a step: ``index`` seeds its randomness (block_rng), ``rows`` are its rows
    in this process's share of the batch, ``batch_rows`` its rows in the global batch."""

    index: int
    rows: slice
    batch_rows: slice


@dataclass
class Shard:
    """One training step's global batch as this process sees it: ``positions`` (B,) into the
    dataset view (the same on every rank), ``mine`` the rows this process reads and runs, cut
    into its ``blocks``."""

    step: int
    positions: np.ndarray
    mine: slice
    blocks: list

    @property
    def my_positions(self) -> np.ndarray:
        return self.positions[self.mine]


def global_batches(num_rows: int, batch_size: int, steps: int, seed: int, batch_blocks: int = DEFAULT_BATCH_BLOCKS,
                   probabilities=None):
    """Yield a Shard per step: ``batch_size`` positions drawn with replacement from ``num_rows``
    (numpy generator seeded by ``seed``; uniformly, or row i with ``probabilities[i]``), this rank's
    blocks of them (rank_blocks). Every rank draws the same global batch. Everything about ranks and
    blocks is here; a training loop sums its block losses / batch_size, calls sum_gradients and steps."""
    rng = np.random.default_rng(seed)
    parts = rank_blocks(batch_size, batch_blocks)  # every block in one process
    mine = span(parts)
    blocks = [Block(b, slice(part.start - mine.start, part.stop - mine.start), part) for b, part in parts]
    for step in range(steps):
        positions = rng.integers(0, num_rows, size=batch_size) if probabilities is None else \
            rng.choice(num_rows, size=batch_size, p=probabilities)
        yield Shard(step, positions, mine, blocks)


def global_batch_mean(local_sum: float, batch_size: int) -> float:
    """The mean over the global batch of a quantity this rank summed over its rows (logging)."""
    return mean_over_ranks(local_sum) * rank_world()[1] / batch_size


@contextlib.contextmanager
def block_rng(seed: int, step: int, block: int, device: str | torch.device = "cpu"):
    """A CPU generator seeded by (seed, step, block) for explicit draws, with torch's global RNG
    (the source of dropout masks, on ``device``) seeded the same way inside the block and
    restored after it: the block's randomness does not depend on which rank runs it."""
    block_seed = int(np.random.SeedSequence([int(seed), int(step), int(block)]).generate_state(1)[0])
    device = torch.device(device)
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(block_seed)
        yield torch.Generator().manual_seed(block_seed)


def sum_gradients(params) -> None:
    """All-reduce (sum) the gradients of ``params`` across ranks; no-op in one process."""
    rank, world = rank_world()
    if world == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def mean_over_ranks(value: float) -> float:
    """The mean of a scalar over ranks (for logged curves); the value itself in one process."""
    rank, world = rank_world()
    if world == 1:
        return float(value)
    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / world


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
