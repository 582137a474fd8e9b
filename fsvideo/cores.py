"""The cores a process may use: its CPU affinity, capped by its cgroup's CPU quota, shared by torchrun's
processes on the machine.

A container started with ``--cpus 2`` (Docker, a Kubernetes CPU limit, a Slurm or systemd quota) sees
every core of the host in its affinity but is given two cores' worth of time.  Torch's OpenMP pool,
FFmpeg's codec threads and x264 size themselves by the cores they see, and the quota then throttles
the threads in turn: on a 64-core host each would start 64 or more threads for 2 cores of time.
:func:`available_cores` is what a run splits (:mod:`fsvideo.pipeline.budget`), :func:`codec_threads`
what the video reader and writer ask FFmpeg for, and :func:`threads_within_quota` tells OpenMP
before torch is imported (the CLI calls it first thing).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by its cgroup's CPU quota, shared with the
    other processes torchrun started on this machine (``LOCAL_WORLD_SIZE``).

    The quota is rounded down (at least 1), as Go's ``automaxprocs`` does: a pool one thread over its
    quota is paused for the rest of every period.  ``torchrun --nproc-per-node 4`` on a 16-core machine
    gives each process 4 cores (each one took all 16 before: 64 busy threads).
    """
    n = _affinity()
    quota = cgroup_cpu_quota()
    if quota is not None:
        n = min(n, int(quota))
    return max(1, n // _local_processes())


def _local_processes() -> int:
    """Processes of this run on this machine: torchrun's ``LOCAL_WORLD_SIZE`` (1 when unset or bad)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def codec_threads() -> int:
    """Threads to ask an FFmpeg codec for: 0 (FFmpeg chooses from the affinity) unless a CPU quota or
    other processes of the run share the cores, then :func:`available_cores`."""
    n = available_cores()
    return n if n < _affinity() else 0


def threads_within_quota() -> int | None:
    """Tell OpenMP (torch's intra-op pool) to start no more threads than :func:`available_cores`
    where that is under the cores the process sees (``OMP_NUM_THREADS``), unless the environment
    already says (torchrun sets 1 for several processes a machine).  Torch reads it once, when imported: call this before (the CLI's
    :func:`~fsvideo.cli.main` does); child processes inherit it.  Returns the number set, or None.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    n = available_cores()
    if n >= _affinity():
        return None
    os.environ["OMP_NUM_THREADS"] = str(n)
    log.debug("%d cores for this process (CPU quota): OMP_NUM_THREADS=%d", n, n)
    return n


def cgroup_cpu_quota(root: str | os.PathLike = "/sys/fs/cgroup",
                     self_cgroup: str | os.PathLike = "/proc/self/cgroup") -> float | None:
    """CPUs' worth of time the process's cgroup may use (``quota / period``), or None: no quota.

    cgroup v2: ``cpu.max`` (``"200000 100000"``, or ``"max 100000"``) of the process's group and of
    each group above it, the smallest; cgroup v1: ``cpu.cfs_quota_us / cpu.cfs_period_us`` (-1: none).
    Inside a container the group's own files are usually at ``root`` itself (its cgroup namespace),
    so ``root`` is read as well as the path ``/proc/self/cgroup`` names.
    """
    root = Path(root)
    try:
        lines = Path(self_cgroup).read_text().splitlines()
    except OSError:
        lines = []
    v2, v1 = None, None
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":
            v2 = path.strip("/")
        elif "cpu" in controllers.split(","):
            v1 = (controllers, path.strip("/"))
    found = []
    if v2 is not None:
        for d in _up_to(root, v2):
            found.append(_ratio(_read(d / "cpu.max"), None))
    if v1 is not None:
        for d in {root / v1[0] / v1[1], root / v1[0], root / "cpu", root / "cpu,cpuacct"}:
            found.append(_ratio(_read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")))
    quotas = [q for q in found if q is not None]
    return min(quotas) if quotas else None


def _up_to(root: Path, rel: str) -> list[Path]:
    """``root / rel`` and each folder above it up to ``root``."""
    parts = [p for p in rel.split("/") if p]
    return [root.joinpath(*parts[:k]) for k in range(len(parts), -1, -1)]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _ratio(quota: str | None, period: str | None) -> float | None:
    """cgroup v2 ``"QUOTA PERIOD"`` (period None), or v1's two files; None for no quota or unreadable."""
    if quota is None:
        return None
    if period is None:
        quota, _, period = quota.partition(" ")
    try:
        q, p = int(quota), int(period)
    except ValueError:                       # "max": no quota
        return None
    return q / p if q > 0 and p > 0 else None
