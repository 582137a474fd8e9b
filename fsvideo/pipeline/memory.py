"""Process-wide memory settings of a run: huge pages for torch's CPU tensors, and giving malloc's
free memory back (issue 11, point 8).

**Huge pages** (:func:`use_huge_pages`, called first thing by the CLI).  A block above glibc's mmap
threshold (at most 32 MiB) is mapped fresh on every allocation, and the kernel faults it in 4 KiB at a
time, zeroing each page: one 1024 px generator call on the CPU allocates about 2.3 GB that way (its
32 x 1025 x 1025 convolution outputs are 128 MiB each), and the faults took about a quarter of its
time.  PyTorch's CPU allocator can ``madvise(MADV_HUGEPAGE)`` its blocks of 2 MiB and more
(``THP_MEM_ALLOC_ENABLE=1``), so the kernel maps them 2 MiB at a time wherever transparent huge pages
are ``madvise`` or ``always`` (``/sys/kernel/mm/transparent_hugepage/enabled``; the usual default).
Measured on this project's 2-core machine (``python benchmarks/models.py --device cpu --sizes 1024
--batches 1``, and ``benchmarks/memory.py --edit``; README "Edit memory"): 20 x 128 MiB tensors fault
655 k times without, 12 k with; the 1024 px generator call 1.18 -> 0.71-0.80 s; ``fsvideo edit`` of
1.6 s of video with the released 1024 px architecture 77.8 -> 54.6 s at the same peak RSS (2172 and
2196 MiB).  ``THP_MEM_ALLOC_ENABLE=0`` in the environment keeps 4 KiB pages.

**Free memory back** (:func:`release_free_memory`).  Why: glibc serves a request below its *mmap
threshold* from a heap (an arena; a streaming run has several, one per busy thread) and keeps what is
freed there for reuse instead of returning it.  The threshold starts at 128 KiB and rises, up to 32
MiB, every time a larger block is freed.  The networks on the CPU allocate and free tensors of 1-32
MiB all the time (the encoder's layers, the generator's 64-256 px layers), each thread in its own
arena, so during ``fsvideo edit`` with the released 1024 px architecture the arenas held up to 360 MiB
that nothing used (``fordblks`` of ``mallinfo2``): the encoder thread's free memory sat there while
the generator thread peaked.

:func:`release_free_memory` (``malloc_trim(0)``: every arena's free pages go back to the system)
runs after each network call of the model stages when a generator above 256 px runs on the CPU
(:attr:`~fsvideo.models.execution.ModelExecutor.large_on_cpu`, :mod:`fsvideo.pipeline.model_stages`;
at 256 px the trim cost 23 % of a sequential run's speed for memory nobody is short of).
Measured on 0.4 s of ``liveportrait-d18.mp4`` (12 frames,
1024 px, CPU, a 2-core machine under load; ``/proc/self/status`` sampled every 50 ms):

=================================================  ============  ===================================
malloc                                             peak RSS MiB  page faults per call (encode / G)
=================================================  ============  ===================================
glibc default                                      2343          13 k / 585 k
mmap threshold fixed at 16 MiB                     2221          35 k / 690 k
mmap threshold fixed at 4 MiB                      2006          105 k / 818 k
default + ``malloc_trim(0)`` after each call       2122          25 k / 670 k
=================================================  ============  ===================================

The trim keeps most of the gain of a low fixed threshold at a fraction of its page faults (each
freshly mapped 4 KiB page is a fault: a fixed 4 MiB threshold re-maps every encoder activation on
every call).  Only glibc has ``malloc_trim``; elsewhere nothing is done.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

#: PyTorch's switch for transparent huge pages in its CPU allocator (c10's ``alloc_cpu``), read once,
#: at torch's first CPU allocation.
HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"

_trim = None          # libc's malloc_trim, once looked up; False where there is none


def _malloc_trim():
    global _trim
    if _trim is None:
        try:
            fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
            fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
            _trim = fn
        except (OSError, AttributeError):
            log.debug("no glibc malloc_trim: free memory is left to malloc")
            _trim = False
    return _trim


def use_huge_pages() -> bool:
    """Ask torch's CPU allocator to back its blocks of 2 MiB and more with transparent huge pages
    (``THP_MEM_ALLOC_ENABLE=1``), unless the environment already says (``THP_MEM_ALLOC_ENABLE=0`` keeps
    4 KiB pages).  Torch reads the variable once, at its first CPU allocation: call this before
    importing torch (the CLI's :func:`~fsvideo.cli.main` does, first thing); child processes inherit
    it.  Returns whether huge pages are asked for.  Without Linux's transparent huge pages (another OS,
    or ``never``) it changes nothing."""
    value = os.environ.setdefault(HUGE_PAGES_ENV, "1")
    if "torch" in sys.modules:
        log.debug("%s=%s set after torch was imported: it applies only if torch has not allocated yet",
                  HUGE_PAGES_ENV, value)
    return value == "1"             # torch takes "1" and "0" only


def kernel_huge_pages() -> str:
    """The kernel's transparent huge pages mode: ``always``, ``madvise``, ``never``, or ``none``
    (not Linux, or no such setting)."""
    try:
        text = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return "none"
    return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else "none"


def huge_pages_status() -> str:
    """Whether this process's torch CPU tensors get huge pages, and why not (for ``fsvideo doctor``)."""
    mode, value = kernel_huge_pages(), os.environ.get(HUGE_PAGES_ENV)
    if mode in ("none", "never"):
        return f"huge pages off (the kernel's transparent huge pages: {mode})"
    if value != "1":
        return f"huge pages off ({HUGE_PAGES_ENV}={value})"
    return f"huge pages on (kernel: {mode})"


def release_free_memory() -> bool:
    """Return the free memory of every malloc arena to the system (glibc ``malloc_trim(0)``).

    Safe from any thread at any time (glibc locks each arena in turn); costs the page faults of
    touching that memory again.  Returns True when memory was given back, False otherwise (nothing
    to give, or not glibc).
    """
    fn = _malloc_trim()
    return bool(fn(0)) if fn else False
