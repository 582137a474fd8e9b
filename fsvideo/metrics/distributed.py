"""Sharding an evaluation over processes with torch.distributed (``torchrun``), merging on rank 0.

``torchrun --nproc-per-node N -m fsvideo metrics CLIPS...`` (or several machines with
``--nnodes``) starts N copies; each reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` from the
environment, measures the clips :func:`fsvideo.metrics.evaluate.shard` gives it (round robin over
the same sorted, sampled list on every rank), and sends its results to rank 0 with
``gather_object`` over a gloo group (results are small Python objects; gloo works with or without
GPUs).  Each clip is measured by exactly one rank with the same code and settings as in a single
process, so the merged numbers are the same.

Example::

    with Distributed() as d:
        mine = evaluate_clips(clips, ev, rank=d.rank, world=d.world)
        merged = d.gather(mine)       # rank 0: every (index, result) sorted; others: None
"""
from __future__ import annotations

import datetime as _dt
import logging
import os

log = logging.getLogger(__name__)


def env_rank() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the torchrun environment ((0, 1, 0) without it)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return 0, 1, 0
    return (rank, world, local) if world > 1 else (0, 1, 0)


class Distributed:
    """Joins the torchrun process group (gloo) when ``WORLD_SIZE > 1``; a no-op otherwise.

    Args:
        timeout_s: how long a collective waits for the slowest rank (the gather happens after the
            whole shard is measured, so this bounds the imbalance between ranks).

    Attributes:
        rank, world, local_rank: this process's place (0, 1, 0 when not distributed).
    """

    def __init__(self, timeout_s: float = 6 * 3600):
        self.rank, self.world, self.local_rank = env_rank()
        self.timeout = _dt.timedelta(seconds=timeout_s)
        self._group = None
        self._owns = False

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def __enter__(self) -> "Distributed":
        if not self.enabled:
            return self
        import torch.distributed as dist
        if not dist.is_available():
            from fsvideo.errors import PipelineError
            raise PipelineError("WORLD_SIZE > 1 but this torch build has no torch.distributed",
                                hint="run without torchrun, or install a torch build with distributed support")
        if not dist.is_initialized():
            dist.init_process_group(backend="gloo", timeout=self.timeout)
            self._owns = True
            self._group = None  # the default group is gloo
        else:  # someone (e.g. a trainer) already set up a group, perhaps NCCL: add a gloo one
            self._group = dist.new_group(backend="gloo", timeout=self.timeout)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        log.info("metrics: rank %d of %d", self.rank, self.world)
        return self

    def __exit__(self, *exc) -> None:
        if self._owns:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()
            self._owns = False

    def gather(self, items: list) -> list | None:
        """Rank 0 gets every rank's ``[(index, result)]`` merged and sorted by index; others None."""
        if not self.enabled:
            return sorted(items, key=lambda t: t[0])
        import torch.distributed as dist
        box = [None] * self.world if self.rank == 0 else None
        dist.gather_object(items, box, dst=0, group=self._group)
        if self.rank != 0:
            return None
        merged = [t for part in box for t in part]
        return sorted(merged, key=lambda t: t[0])

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        import torch.distributed as dist
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self._group)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist
            dist.barrier(group=self._group)


__all__ = ["Distributed", "env_rank"]
