"""Sharding an evaluation over processes with torch.distributed (``torchrun``), merging on rank 0.

``torchrun --nproc-per-node N -m fsvideo metrics CLIPS...`` (or several machines with
``--nnodes``) starts N copies; each measures the clips :func:`fsvideo.distributed.shard_indices`
gives it (round robin over the same sorted, sampled list on every rank), and sends its results to
rank 0 with ``gather_object`` over a gloo group (results are small Python objects; gloo works with
or without GPUs).  Each clip is measured by exactly one rank with the same code and settings as in a
single process, so the merged numbers are the same.  The torchrun plumbing itself is
:mod:`fsvideo.distributed`, shared with the trainer.

Example::

    with Distributed() as d:
        mine = evaluate_clips(clips, ev, rank=d.rank, world=d.world)
        merged = d.gather(mine)       # rank 0: every (index, result) sorted; others: None
"""
from __future__ import annotations

from fsvideo.distributed import ProcessGroup


class Distributed(ProcessGroup):
    """A gloo :class:`~fsvideo.distributed.ProcessGroup` whose :meth:`gather` merges ``(index, result)`` lists.

    Args:
        timeout_s: how long a collective waits for the slowest rank (the gather happens after the
            whole shard is measured, so this bounds the imbalance between ranks).

    Attributes:
        rank, world, local_rank, enabled, is_main: this process's place (0, 1, 0 when not distributed).
    """

    def __init__(self, timeout_s: float = 6 * 3600):
        super().__init__(backend="gloo", timeout_s=timeout_s)

    rank = property(lambda self: self.info.rank)
    world = property(lambda self: self.info.world)
    local_rank = property(lambda self: self.info.local_rank)
    enabled = property(lambda self: self.info.enabled)
    is_main = property(lambda self: self.info.is_main)

    def gather(self, items: list) -> list | None:
        """Rank 0 gets every rank's ``[(index, result)]`` merged and sorted by index; others None."""
        parts = super().gather(items)
        if parts is None:
            return None
        return sorted((t for part in parts for t in part), key=lambda t: t[0])


__all__ = ["Distributed"]
