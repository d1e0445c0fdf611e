"""Which process this is, for runs under ``torchrun`` or ``accelerate launch`` (torch.distributed, gloo or NCCL).

Both launchers start one process per GPU (or per CPU slot) with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in the environment; `Ranks.from_env`
reads them and joins the process group (NCCL when the device is CUDA, gloo otherwise). A
plain ``python -m constrained_diffusion ...`` is rank 0 of 1 and needs no group.

Sharding rule: the images, sorted by id, are dealt round-robin (image ``i`` to rank
``i mod world``); every random draw of an image comes from its own seed, so what an image
gets never depends on which rank samples it or how many ranks there are.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

T = TypeVar("T")


@dataclass
class Ranks:
    """This process's ``rank`` among ``world`` processes (``local``: its index on this node)."""

    rank: int = 0
    world: int = 1
    local: int = 0
    joined: bool = False

    @classmethod
    def from_env(cls, device: str = "cpu") -> Ranks:
        """The rank from the launcher's environment; joins the process group when ``WORLD_SIZE > 1``."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(local)
            dist.init_process_group(backend=backend)
        return cls(rank, world, local, True)

    def device(self, device: str) -> str:
        """``cuda`` becomes ``cuda:LOCAL_RANK`` (one GPU per process); other devices are kept."""
        d = torch.device(device)
        if d.type == "cuda" and d.index is None and self.world > 1:
            return f"cuda:{self.local}"
        return device

    def shard(self, items: Sequence[T]) -> list[T]:
        """``items[rank::world]``: this rank's share, round-robin.

        Examples:
            >>> Ranks(1, 3).shard(list("abcdefg"))
            ['b', 'e']
        """
        return list(items[self.rank::self.world])

    def barrier(self) -> None:
        """Wait for every rank (a no-op in one process)."""
        if self.joined:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """Leave the process group."""
        if self.joined:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.joined = False
