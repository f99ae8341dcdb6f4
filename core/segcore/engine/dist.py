"""torch.distributed under torchrun: process group, per-rank data order, reductions. No home-made launcher."""

from __future__ import annotations

__all__ = ["DistInfo", "EpochSampler", "all_reduce_sum", "any_rank", "broadcast_buffers", "init_distributed"]

import os

import torch
import torch.distributed as dist
from attrs import frozen
from torch import nn
from torch.utils.data import Sampler


@frozen
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); a single process needs none."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _multi() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if _multi():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_buffers(*modules: nn.Module | None, src: int = 0) -> None:
    """Give every rank rank *src*'s buffers (BatchNorm running statistics, ...). DDP copies them from rank 0 at
    the start of each forward only, so after the last step each rank holds its own: call this on every rank
    before evaluating or saving, so all ranks evaluate and save one model."""
    if not _multi():
        return
    for module in modules:
        if module is None:
            continue
        for buffer in module.buffers():
            if buffer.is_floating_point() or buffer.dtype in (torch.int64, torch.int32):
                dist.broadcast(buffer.data, src)


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank when *flag* is true on at least one (a Ctrl-C seen by one rank stops all at one step)."""
    if not _multi():
        return bool(flag)
    t = torch.tensor([int(bool(flag))], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


class EpochSampler(Sampler[int]):
    """The indices one rank sees in one epoch: a permutation seeded by (seed, epoch), padded to a multiple of
    the world size like DistributedSampler, this rank's share, without the first *skip* samples (to resume
    inside an epoch) and at most *limit* of them. Same order on every run with the same seed."""

    def __init__(self, n: int, *, seed: int, epoch: int, rank: int = 0, world: int = 1, shuffle: bool = True,
                 skip: int = 0, limit: int | None = None, pad: bool = True) -> None:  # fmt: skip
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)) if shuffle else torch.arange(n)
        if pad and n % world:
            order = torch.cat([order, order[: world - n % world]])
        self.indices = order[rank::world].tolist()[skip:][:limit]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
