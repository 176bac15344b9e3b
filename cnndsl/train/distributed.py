"""Running under torchrun: which process this is, and the process group's life.

torchrun (and `python -m torch.distributed.run`) sets WORLD_SIZE, RANK and LOCAL_RANK,
plus MASTER_ADDR and MASTER_PORT for the `env://` rendezvous; a plain `cnndsl train`
has none of them and runs as a world of one without a process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def world_from_env() -> World:
    """The process's place in a torchrun job (a world of one outside torchrun)."""
    return World(rank=_env_int("RANK", 0), local_rank=_env_int("LOCAL_RANK", 0), size=max(1, _env_int("WORLD_SIZE", 1)))


def init_process_group(world: World, device_type: str) -> None:
    """nccl between GPUs, gloo between CPU processes; a no-op for a world of one."""
    if not world.distributed:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", init_method="env://")


def destroy_process_group(world: World, synchronize: bool = False) -> None:
    """Leave the process group; with `synchronize`, only once every rank has finished (a barrier)."""
    if not world.distributed:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()


def all_sum(values: Any, world: World) -> Any:
    """Sum a tensor over all processes (in place) and return it; the identity for a world of one."""
    if world.distributed:
        import torch.distributed as dist

        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def gather_objects(value: Any, world: World) -> list[Any]:
    """Every process's `value`, in rank order (used to checkpoint each rank's RNG state)."""
    if not world.distributed:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, value)
    return out


def broadcast_object(value: Any, world: World) -> Any:
    """Rank 0's `value` on every process (the checkpoint that rank 0 read, on resume)."""
    if not world.distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
