"""The one process-wide memory action of a run: giving malloc's free memory back (issue 11, point 8).

Why: glibc serves a request below its *mmap threshold* from a heap (an arena; a streaming run has
several, one per busy thread) and keeps what is freed there for reuse instead of returning it.  The
threshold starts at 128 KiB and rises, up to 32 MiB, every time a larger block is freed.  The
networks on the CPU allocate and free tensors of 1-32 MiB all the time (the encoder's layers, the
generator's 64-256 px layers), each thread in its own arena, so during ``fsvideo edit`` with the
released 1024 px architecture the arenas held up to 360 MiB that nothing used (``fordblks`` of
``mallinfo2``): the encoder thread's free memory sat there while the generator thread peaked.

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

log = logging.getLogger(__name__)

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


def release_free_memory() -> bool:
    """Return the free memory of every malloc arena to the system (glibc ``malloc_trim(0)``).

    Safe from any thread at any time (glibc locks each arena in turn); costs the page faults of
    touching that memory again.  Returns True when memory was given back, False otherwise (nothing
    to give, or not glibc).
    """
    fn = _malloc_trim()
    return bool(fn(0)) if fn else False
