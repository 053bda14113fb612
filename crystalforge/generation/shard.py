"""Sharding generation across ``torchrun`` processes (torch.distributed).

``torchrun --nproc_per_node=N -m crystalforge run --prompts FILE ...`` starts N processes
with ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set. Each takes a contiguous block of the work
items (prompt, sample index), uses its own device (``cuda:LOCAL_RANK`` on GPUs, the CPU
with the gloo backend otherwise) and writes its candidates into the shared output
folder; rank 0 gathers every row and writes the one summary. Without those variables
everything runs in-process as a world of one.
"""

from __future__ import annotations

import datetime
import logging
import os
from typing import Any, Sequence, TypeVar

import attrs

logger = logging.getLogger(__name__)

T = TypeVar("T")


@attrs.define
class DistContext:
    """This process's place in the run: rank, world size, local rank."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this context initialized the process group (and destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every process (no-op in a world of one)."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def all_gather(self, obj: Any) -> list[Any]:
        """Return every process's ``obj``, in rank order (``[obj]`` in a world of one)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def close(self) -> None:
        """Tear down the process group if this context created it."""
        if self.owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.owns_group = False


def distributed_context(device: str = "cpu") -> DistContext:
    """Return the context from ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, joining the process group.

    The backend is nccl for CUDA devices and gloo otherwise.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistContext()
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        # object gathers through nccl need this rank's GPU selected first
        if backend == "nccl":
            import torch

            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=6))
        owns = True
    logger.info("rank %d of %d (local %d)", rank, world, local_rank)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, owns_group=owns)


def rank_device(device: str, context: DistContext) -> str:
    """Return this rank's device: ``cuda`` becomes ``cuda:LOCAL_RANK`` in a distributed run."""
    if context.distributed and device == "cuda":
        return f"cuda:{context.local_rank}"
    return device


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Return rank ``rank``'s contiguous block of ``items`` (blocks differ in size by at most one).

    Contiguous blocks keep a prompt's samples together, so each rank prefills few prompts.
    """
    total = len(items)
    start = rank * total // world_size
    end = (rank + 1) * total // world_size
    return list(items[start:end])
