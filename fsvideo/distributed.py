"""Running one command as several processes under ``torchrun``: where this process stands, the
process group, and which share of a work list is its own.

``torchrun --nproc-per-node N -m fsvideo COMMAND ...`` (or several machines with ``--nnodes``)
starts N copies and sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and the rendezvous
variables).  Every multi-process command (``train``, ``metrics``, ...) goes through this module:

* :func:`env_info` reads the three variables once (a bad value is a one-line error);
* :class:`ProcessGroup` joins the group when ``WORLD_SIZE > 1`` (a no-op in one process), leaves it
  on exit if it joined it, and offers the few collectives the commands need (gather / broadcast of
  small Python objects, barrier, mean of scalar logs);
* :func:`shard` / :func:`shard_indices` split a list the same way on every rank (round robin over the
  list's order: every rank must pass the same list);
* :func:`device_for` gives each process its own GPU (``LOCAL_RANK``).

Example::

    with ProcessGroup(backend="gloo") as pg:
        mine = [work(x) for x in shard(items, pg.info)]
        everything = pg.gather(mine)          # rank 0: a list of every rank's object; others: None
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import torch

from fsvideo.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
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


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer",
                          hint="launch with torchrun, or unset RANK, WORLD_SIZE and LOCAL_RANK") from None


def env_info() -> DistInfo:
    """``DistInfo`` from the torchrun environment; ``DistInfo()`` (0 of 1) when ``WORLD_SIZE`` <= 1 or unset."""
    info = DistInfo(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))
    if not info.enabled:
        return DistInfo()
    if not 0 <= info.rank < info.world:
        raise ConfigError(f"RANK={info.rank} is not in 0..{info.world - 1} (WORLD_SIZE={info.world})",
                          hint="launch with torchrun, or unset RANK, WORLD_SIZE and LOCAL_RANK")
    return info


def shard_indices(n: int, rank: int, world: int) -> list[int]:
    """Indices ``0..n-1`` that rank ``rank`` of ``world`` handles: ``rank, rank + world, ...``."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    return list(range(rank, n, world))


def shard(items: Sequence[T], info: DistInfo) -> list[T]:
    """This process's share of ``items`` (round robin; together the ranks cover every item once)."""
    return [items[i] for i in shard_indices(len(items), info.rank, info.world)]


def device_for(device: torch.device, info: DistInfo | None = None) -> torch.device:
    """On CUDA without an explicit index, under torchrun, each process takes GPU ``LOCAL_RANK``
    (modulo the GPUs present) and makes it current."""
    info = env_info() if info is None else info
    if device.type == "cuda" and device.index is None and info.enabled:
        idx = info.local_rank % max(1, torch.cuda.device_count())
        torch.cuda.set_device(idx)
        return torch.device("cuda", idx)
    return device


class ProcessGroup:
    """Joins the torchrun process group when ``WORLD_SIZE > 1``; a no-op in a single process.

    Args:
        backend: ``"auto"`` (NCCL for a CUDA ``device``, else gloo), ``"gloo"`` or ``"nccl"``.  When
            a group already exists (created by the caller, e.g. a trainer or a test) it is used as it
            is, except that asking for ``"gloo"`` over an NCCL group adds a gloo side group (object
            collectives of results need no GPU).
        device: the device the process computes on (for ``"auto"`` and :meth:`mean`).
        timeout_s: how long a collective waits for the slowest rank.

    Attributes:
        info: this process's :class:`DistInfo` (from the group once joined).
        group: the group the collectives use (None: the default group).
    """

    def __init__(self, backend: str = "auto", device: torch.device | str | None = None,
                 timeout_s: float = 6 * 3600):
        if backend not in ("auto", "gloo", "nccl"):
            raise ValueError(f"backend must be auto, gloo or nccl, got {backend!r}")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.backend = ("nccl" if self.device.type == "cuda" else "gloo") if backend == "auto" else backend
        self.timeout = _dt.timedelta(seconds=timeout_s)
        self.info = env_info()
        self.group = None
        self._owns = False

    def join(self) -> ProcessGroup:
        """Join (or adopt) the process group; returns ``self``.  Nothing happens in one process."""
        import torch.distributed as dist
        joined = dist.is_available() and dist.is_initialized()
        if not joined and not self.info.enabled:
            return self
        if not dist.is_available():
            raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed",
                              hint="run without torchrun, or install a torch build with distributed support")
        if not joined:
            dist.init_process_group(backend=self.backend, timeout=self.timeout)
            self._owns = True
            log.info("process %d of %d joined (%s)", dist.get_rank(), dist.get_world_size(), self.backend)
        elif self.backend == "gloo" and dist.get_backend() != "gloo":
            self.group = dist.new_group(backend="gloo", timeout=self.timeout)
        self.info = DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
        return self

    def leave(self, *, synchronize: bool = True) -> None:
        """Destroy the process group if :meth:`join` created it (a group the caller made stays).

        With ``synchronize`` every rank first waits at a barrier, so that none tears its group down
        while another still exchanges its last messages with it: without it, a rank that had sent
        its part of a final gather and left at once aborted now and then in gloo's teardown
        ("terminate called without an active exception", 2 of 10 split runs on a busy machine).
        """
        if self._owns:
            import torch.distributed as dist
            if dist.is_initialized():
                if synchronize:
                    dist.barrier()
                dist.destroy_process_group()
            self._owns = False

    def __enter__(self) -> ProcessGroup:
        return self.join()

    def __exit__(self, exc_type, *exc) -> None:
        self.leave(synchronize=exc_type is None)      # after a failure another rank may never arrive

    def gather(self, obj: Any) -> list | None:
        """Every rank's ``obj`` in rank order on rank 0 (``[obj]`` in one process); None elsewhere."""
        if not self.info.enabled:
            return [obj]
        import torch.distributed as dist
        box = [None] * self.info.world if self.info.is_main else None
        dist.gather_object(obj, box, dst=0, group=self.group)
        return box

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.info.enabled:
            return obj
        import torch.distributed as dist
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def barrier(self) -> None:
        if self.info.enabled:
            import torch.distributed as dist
            dist.barrier(group=self.group)

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Average scalar values over the processes (every process calls it at the same point)."""
        if not self.info.enabled or not values:
            return values
        import torch.distributed as dist
        keys = sorted(values)
        dev = self.device if self.group is None else torch.device("cpu")
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=dev)
        dist.all_reduce(t, group=self.group)
        t /= self.info.world
        return dict(zip(keys, t.tolist()))


__all__ = ["DistInfo", "ProcessGroup", "device_for", "env_info", "shard", "shard_indices"]
