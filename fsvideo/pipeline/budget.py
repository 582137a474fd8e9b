"""The core budget of a run: how many threads torch, OpenCV and the per-frame stage workers get.

A streaming run overlaps the network stages with the CPU stages (detect, track_align, blend, video
encoding).  Left alone, torch's intra-op pool and OpenCV's pool each take every core and the stage
threads come on top, so the cores are oversubscribed: OpenMP workers spin-wait on each other while a
stage thread holds their core, and streaming can end up slower than a sequential run (issue 11,
point 9).  :func:`core_budget` decides the split once, from the machine and the device:

* sequential run: one thing at a time, so torch and OpenCV may each use every core;
* streaming, networks on the CPU: the networks are by far the largest work (seconds a frame against
  a tenth for everything else).  They run *data-parallel*: each network stage keeps several calls in
  flight (batches of different frames), one per core up to :data:`MAX_NETWORK_CALLS`, the cores
  shared among them as torch threads.  One call on every core scales less than linearly (1.7-1.8x
  on 2 threads at 256 px) and its OpenMP workers spin-wait whenever another thread takes their core:
  measured on 2 cores (`benchmarks/pipeline.py --network-calls`), equal speed on an idle machine and
  1.2-1.3x faster beside two busy processes, for about 300 MiB more memory at 256 px.  One call on
  every core above 256 px (each call's activations, 464 MiB at 1024 px, would be held once per call:
  `benchmarks/memory.py`) and with ``--compile`` (one compiled graph, called from one thread).
  OpenCV gets one thread and per-frame CPU stages one worker;
* streaming, networks on a GPU: torch needs one thread to feed the device; the other cores go to
  per-frame stage workers (per-frame detection, blend), OpenCV calls stay single-threaded inside
  them; at least 2 workers where there are 2 cores (the 480p front end on 2 cores,
  `benchmarks/frontend.py`: 62.1 and 63.1 frames/s with 2 workers, 54.7-64.3 with 1).

:meth:`CoreBudget.applied` sets the limits for the duration of a run and restores them after.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

#: At most this many network calls in flight per network stage on a CPU by default: each holds its
#: activations, so a many-core CPU shares its cores among a few calls instead of running one per core.
MAX_NETWORK_CALLS = 4


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by its cgroup's CPU quota.

    A container started with ``--cpus 2`` (Docker, Kubernetes ``limits.cpu``, a Slurm or systemd
    quota) sees every core of the host in its affinity but is given two cores' worth of time; torch
    and OpenMP size their pools by the cores they see, and the quota then throttles the threads in
    turn.  The quota is rounded down (at least 1), as Go's ``automaxprocs`` does: a pool one thread
    over its quota is paused for the rest of every period.
    """
    n = _affinity()
    quota = cgroup_cpu_quota()
    if quota is not None:
        n = min(n, int(quota))
    return max(1, n)


def threads_within_quota() -> int | None:
    """Tell OpenMP (torch's intra-op pool) to start no more threads than :func:`available_cores`
    where a CPU quota is under the cores the process sees (``OMP_NUM_THREADS``), unless the
    environment already says.  Torch reads it once, when imported: call this before (the CLI's
    :func:`~fsvideo.cli.main` does); child processes inherit it.  Returns the number set, or None.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    n = available_cores()
    if n >= _affinity():
        return None
    os.environ["OMP_NUM_THREADS"] = str(n)
    log.debug("CPU quota of %d cores: OMP_NUM_THREADS=%d", n, n)
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


@dataclass(frozen=True)
class CoreBudget:
    """Threads per consumer for one run.

    Attributes:
        cores: cores available to the process.
        torch_threads: torch intra-op threads (``torch.set_num_threads``).
        opencv_threads: OpenCV's pool (``cv2.setNumThreads``).
        workers: threads each per-frame CPU stage (e.g. ``blend``) may use at once.
        network_workers: calls each network stage (encode, edit, generate) may have in flight at once,
            each on ``torch_threads`` threads.
    """

    cores: int
    torch_threads: int
    opencv_threads: int
    workers: int
    network_workers: int = 1

    def describe(self) -> str:
        return (f"{self.cores} cores: network calls {self.network_workers} x torch threads {self.torch_threads}, "
                f"OpenCV {self.opencv_threads}, per-frame stage workers {self.workers}")

    @contextlib.contextmanager
    def applied(self) -> Iterator[CoreBudget]:
        """Set torch's and OpenCV's thread counts for the block; the previous ones come back after."""
        import cv2
        import torch
        old_torch, old_cv = torch.get_num_threads(), cv2.getNumThreads()
        torch.set_num_threads(self.torch_threads)
        cv2.setNumThreads(self.opencv_threads)
        log.info("core budget: %s", self.describe())
        try:
            yield self
        finally:
            torch.set_num_threads(old_torch)
            cv2.setNumThreads(old_cv)


def core_budget(*, device_type: str, threads: bool, workers: int | None = None,
                cores: int | None = None, network_calls: int | None = None) -> CoreBudget:
    """The split of ``cores`` (default: :func:`available_cores`) for a run (see the module docstring).

    Args:
        device_type: where the networks run (``cpu``, ``cuda``, ``mps``).
        threads: a streaming run (False: sequential, frame by frame).
        workers: per-frame stage workers asked for (``--workers``); None decides from the machine.
        cores: cores to split (tests and benchmarks); None reads the process's affinity.
        network_calls: on the CPU, network calls in flight at once (``--network-calls``; 1 for a
            generator above 256 px or compiled networks); None: one per core up to
            :data:`MAX_NETWORK_CALLS`.
    """
    n = int(cores or available_cores())
    if not threads:
        return CoreBudget(n, torch_threads=n, opencv_threads=n, workers=1)
    if device_type == "cpu":
        calls = max(1, min(n, int(network_calls or MAX_NETWORK_CALLS)))
        return CoreBudget(n, torch_threads=max(1, n // calls), opencv_threads=1, workers=workers or 1,
                          network_workers=calls)
    return CoreBudget(n, torch_threads=1, opencv_threads=1, workers=workers or min(n, max(2, n - 1)))
