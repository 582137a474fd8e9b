"""The one process-wide memory setting of a run: glibc malloc's mmap threshold (issue 11, point 8).

Why: glibc serves a request below its *mmap threshold* from a heap (an arena; a streaming run has
several, one per busy thread) and keeps what is freed there for reuse instead of giving it back.
The threshold starts at 128 KiB and rises, up to 32 MiB, every time a block above it is freed.  A
run frees tensors of 1-32 MiB all the time (the encoder's and the generator's middle layers at
128-256 px, 1024 px crops), so after a few frames the arenas held about 360 MiB that nothing was
using (``fordblks`` of ``mallinfo2``), and the peak RSS of ``fsvideo edit`` with the released
1024 px architecture on the CPU was that much higher.  A fixed threshold of
:data:`MMAP_THRESHOLD` gives every block from 4 MiB up its own mapping, returned to the system when
it is freed (fixing it also stops the rise).

Measured (``python benchmarks/memory.py --edit``, 0.4 s of ``liveportrait-d18.mp4``, CPU, one face
per generator call): free memory held by malloc 360 -> 84 MiB at most, peak RSS 2343 -> 2006 MiB; the
cost is page faults on those blocks (see the README, "Loading memory", for the time measured).

Only glibc has ``mallopt``; elsewhere, or when the user set ``MALLOC_MMAP_THRESHOLD_`` in the
environment (glibc reads it at start-up and it wins), nothing is changed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 4 * 2**20   #: bytes; blocks this size and larger get their own mapping
_M_MMAP_THRESHOLD = -3       # mallopt parameter number (glibc malloc.h)
_lock = threading.Lock()
_done: bool | None = None    # None: not tried yet; True: set; False: left alone


def configure_malloc(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process (once; later calls do
    nothing).  Returns True when the setting is in force (set now or before), False when left alone."""
    global _done
    with _lock:
        if _done is not None:
            return _done
        _done = False
        if "MALLOC_MMAP_THRESHOLD_" in os.environ:
            log.debug("MALLOC_MMAP_THRESHOLD_ is set in the environment: malloc left as it is")
            return _done
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            log.debug("no glibc mallopt: malloc left as it is")
            return _done
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        _done = bool(mallopt(_M_MMAP_THRESHOLD, int(threshold)))
        log.debug("malloc mmap threshold %s at %d bytes", "fixed" if _done else "NOT fixed", threshold)
        return _done
