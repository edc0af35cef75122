"""One run on several processes: data parallelism with ``DistributedDataParallel`` (``tricklab train --nproc N``).

The global batch B is the recipe's ``data.batch_size``, as in a run on one process. Every process draws the same
batch (the same seed, the same order) and trains on its shard of it — process r takes examples r, r + N, r + 2N,
… (``shard``), about B/N of them. Its loss is the shard's mean scaled by (shard size · N / B), so that DDP's
average of the N gradients is exactly the gradient of the global batch's mean loss (Goyal et al. 2017, "Accurate,
Large Minibatch SGD", §2: data parallelism must keep the per-example weights of the loss). The shards' losses and
logits are gathered back into the global batch's order (``gather_batch``), so every process counts the same
training loss and accuracy, sees a non-finite loss at the same step and takes the same decisions; validation runs
in every process on the full split with the same weights — the running statistics of batch norm, which each
process computes on its own shard, are averaged across processes first (``average_buffers``). The result:
the same arithmetic as one process with batch B, up to the order of floating-point sums (all-reduce) — and
batch norm's batch statistics, which are per shard as in every DDP without ``SyncBatchNorm``.

Process 0 writes the run (directory, checkpoints, metrics, store); the others train into a private temporary
directory that is removed. Backends: gloo on CPUs, NCCL on CUDA devices. The processes are started by
``torch.distributed.run`` (torchrun), which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    """This process's place among the run's processes."""

    rank: int
    size: int
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current_world() -> World | None:
    """The world torchrun started this process in (``RANK``/``WORLD_SIZE`` set, more than one process), else None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    size = int(os.environ["WORLD_SIZE"])
    if size < 2:
        return None
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))


def join(world: World, device: torch.device) -> None:
    """Join the process group (gloo on CPUs, NCCL on CUDA; this process's GPU is ``LOCAL_RANK``)."""
    if dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=world.rank, world_size=world.size)


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def device_of(world: World, requested: torch.device) -> torch.device:
    """Each process its own GPU (``cuda:LOCAL_RANK``); CPUs are shared."""
    return torch.device("cuda", world.local_rank) if requested.type == "cuda" else requested


def shard(x: torch.Tensor, world: World) -> torch.Tensor:
    """This process's examples of a global batch: r, r + N, r + 2N, … (sizes differ by at most one)."""
    return x[world.rank::world.size]


def shard_weight(shard_size: int, batch_size: int, world: World) -> float:
    """The factor on the shard's mean loss that makes DDP's gradient average the global batch's mean gradient."""
    return shard_size * world.size / batch_size


def gather_batch(local: torch.Tensor, batch_size: int, world: World) -> torch.Tensor:
    """The shards of every process (``local``: this process's, first dimension its examples) back in the global
    batch's order — example i of the batch was process i mod N's example i // N."""
    width = -(-batch_size // world.size)                       # the largest shard
    padded = local.new_zeros((width, *local.shape[1:]))
    padded[:local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(parts, padded.contiguous())
    out = torch.stack(parts, dim=1).reshape(width * world.size, *local.shape[1:])   # interleave: row i = part i % N
    return out[:batch_size]


def global_mean_loss(shard_loss: torch.Tensor, shard_size: int, batch_size: int) -> torch.Tensor:
    """The global batch's mean loss from every process's shard mean (one all-reduce of a scalar)."""
    total = shard_loss.detach().double() * shard_size
    dist.all_reduce(total)
    return (total / batch_size).to(shard_loss.dtype)


def average_buffers(model: nn.Module) -> None:
    """Average the floating-point buffers (batch norm's running statistics) across processes, so that every
    process evaluates the same model."""
    world_size = dist.get_world_size()
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf.div_(world_size)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` for the training steps (gradients all-reduced in backward).
    Buffers are not broadcast on every forward (each process's running statistics see its own shard; they are
    averaged before validation), so evaluating the inner model needs no other process."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # torch >= 2.13 names it forward_sync_buffers (buffers still agree at start: every process built the same model)
    no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
               else "broadcast_buffers")
    return DistributedDataParallel(model, device_ids=ids, **{no_sync: False})
