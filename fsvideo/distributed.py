"""The one torchrun helper: where this process stands, joining the group, sharding lists, collectives.

``torchrun --nproc-per-node N [--nnodes M --rdzv-endpoint HOST:PORT] -m fsvideo CMD ...`` starts
N copies per machine; each reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` from the environment.
Commands that spread independent work (``edit`` / ``invert`` of many videos, ``metrics`` of many
clips) give each rank the items :func:`shard` picks from the *same sorted list* on every rank, so
the work and the merged result do not depend on the number of processes.  Results are small Python
objects, so the collectives here run over gloo (works with and without GPUs); a job that already
joined an NCCL group (training) gets an extra gloo group for them.

Example::

    env = dist_env()
    with process_group() as group:           # no-op when WORLD_SIZE <= 1
        mine = [work(x) for x in shard(items, env.rank, env.world)]
        merged = gather_objects(mine, group=group)   # rank 0: one list per rank; others: None

Every function works unchanged in a single process (rank 0 of 1), so callers need no branches.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# A collective waits this long for the slowest rank: items are processed whole before a gather,
# so this bounds the imbalance between ranks (one long video), not network hiccups.
DEFAULT_TIMEOUT_S = 6 * 3600


@dataclass(frozen=True)
class DistEnv:
    """This process's place: ``rank`` of ``world`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_env() -> DistEnv:
    """The place torchrun gave this process (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); (0, 1, 0) without it.

    Once a process group exists, its rank and size win over the environment.
    """
    if _initialized():
        import torch.distributed as dist
        return DistEnv(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistEnv()
    return DistEnv(_env_int("RANK", 0), world, _env_int("LOCAL_RANK", 0))


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        from fsvideo.errors import ConfigError
        raise ConfigError(f"environment variable {name}={os.environ[name]!r} is not an integer",
                          hint="launch with torchrun, or unset it") from None


def _initialized() -> bool:
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized()


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Round-robin share of ``items`` for ``rank`` of ``world`` (``items[rank::world]``).

    Round robin rather than contiguous blocks: a folder sorted by name often groups long and short
    clips, and interleaving spreads them.  Every item goes to exactly one rank.
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1}")
    return list(items[rank::world])


def init_process_group_if_needed(backend: str = "gloo", timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Join torchrun's process group when ``WORLD_SIZE > 1`` and none exists; True when this call made it.

    Uses the rendezvous variables torchrun sets (``MASTER_ADDR`` / ``MASTER_PORT``), so several
    machines (``--nnodes``) work the same way as one.
    """
    if _initialized() or not dist_env().enabled:
        return False
    import torch.distributed as dist
    if not dist.is_available():
        from fsvideo.errors import PipelineError
        raise PipelineError("WORLD_SIZE > 1 but this torch build has no torch.distributed",
                            hint="run without torchrun, or install a torch build with distributed support")
    dist.init_process_group(backend=backend, timeout=_dt.timedelta(seconds=timeout_s))
    log.info("rank %d of %d joined (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return True


def object_group(timeout_s: float = DEFAULT_TIMEOUT_S):
    """The group for Python-object collectives: None (the default group) when it is gloo, else a new gloo group."""
    if not _initialized():
        return None
    import torch.distributed as dist
    if dist.get_backend() == "gloo":
        return None
    return dist.new_group(backend="gloo", timeout=_dt.timedelta(seconds=timeout_s))


@contextlib.contextmanager
def process_group(backend: str = "gloo", timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[Any]:
    """Join (and at the end leave) the group if torchrun asked for one; yields the object-collective group."""
    owned = init_process_group_if_needed(backend, timeout_s)
    try:
        yield object_group(timeout_s)
    finally:
        if owned:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()


def barrier(group=None) -> None:
    """Wait for every rank (no-op in a single process)."""
    if _initialized():
        import torch.distributed as dist
        dist.barrier(group=group)


def gather_objects(obj: Any, dst: int = 0, group=None) -> list | None:
    """Rank ``dst`` gets ``[obj of rank 0, obj of rank 1, ...]``; other ranks get None.

    In a single process: ``[obj]``.
    """
    if not _initialized():
        return [obj]
    import torch.distributed as dist
    rank, world = dist.get_rank(), dist.get_world_size()
    box = [None] * world if rank == dst else None
    dist.gather_object(obj, box, dst=dst, group=group)
    return box


def broadcast_object(obj: Any, src: int = 0, group=None) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself in a single process)."""
    if not _initialized():
        return obj
    import torch.distributed as dist
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=group)
    return box[0]


def device_for_rank(device: str, env: DistEnv | None = None) -> str:
    """``auto`` / ``cuda`` become ``cuda:LOCAL_RANK`` under torchrun when CUDA is there (one GPU per rank)."""
    env = env or dist_env()
    if not env.enabled or device not in ("auto", "cuda"):
        return device
    import torch
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return f"cuda:{env.local_rank % torch.cuda.device_count()}"
    return device


__all__ = ["DEFAULT_TIMEOUT_S", "DistEnv", "barrier", "broadcast_object", "device_for_rank", "dist_env",
           "gather_objects", "init_process_group_if_needed", "object_group", "process_group", "shard"]
