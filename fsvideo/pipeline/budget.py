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
from dataclasses import dataclass
from typing import Iterator

from fsvideo.cores import available_cores

log = logging.getLogger(__name__)

#: At most this many network calls in flight per network stage on a CPU by default: each holds its
#: activations, so a many-core CPU shares its cores among a few calls instead of running one per core.
MAX_NETWORK_CALLS = 4


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
