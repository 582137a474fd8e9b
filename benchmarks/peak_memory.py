"""This process's peak resident memory, for benchmarks that measure it in a fresh child process.

``VmHWM`` of ``/proc/self/status`` (Linux) is the peak of the process's own address space.
``ru_maxrss`` is not: a child started by a large parent (fork or vfork, then exec) inherits the
parent's peak at the exec, so every child of a parent that had loaded the models read the parent's
peak (measured: 2876 MiB for a 30-frame and a 120-frame 256 px edit alike, where ``VmHWM`` gave
2074).  ``ru_maxrss`` remains the fallback where there is no ``/proc``.
"""
from __future__ import annotations

import resource


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
