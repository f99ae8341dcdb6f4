"""torch.distributed under torchrun: process group, per-rank data order, reductions. No home-made launcher."""

from __future__ import annotations

__all__ = ["DistInfo", "EpochSampler", "all_reduce_sum", "init_distributed"]

import os

import torch
import torch.distributed as dist
from attrs import frozen
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


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


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
