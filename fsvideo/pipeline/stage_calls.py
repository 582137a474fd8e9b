"""The timed, checked calls both executors of :mod:`fsvideo.pipeline.runner` drive stages through.

* :class:`StageCall` runs one stage's ``setup`` / ``process`` / ``flush`` / ``close``: it times
  each call, checks the packets that come back (declared keys, order, none lost or added) and
  records the first failure of the run with the stage's name and the frame;
* :class:`Source` pulls packets from the source iterable, :class:`Sink` hands them to the sink;
* :class:`Link` is a bounded queue between threads (packets, and optionally bytes:
  :func:`packet_nbytes`) that gives up when the run is stopped.

Every failure goes through :meth:`Failure.guard`, which records it and raises :class:`Stopped`.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from fsvideo.errors import FsvideoError, PipelineError
from fsvideo.pipeline.stage import Packet, Stage, StageStats, batch_size_of

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, "int | None"], None]

POLL_S = 0.05  # how often a blocked thread looks at the stop flag


class Stopped(Exception):
    """Raised inside a worker when the run stops (another thread failed, or this call did)."""


END = object()  # end-of-stream marker passed down the queues


class Failure:
    """The first error of a run (later ones are consequences and are only logged)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.exc: BaseException | None = None
        self.stage = ""
        self.where = ""

    def record(self, exc: BaseException, stage: str, where: str) -> None:
        with self.lock:
            if self.exc is None:
                self.exc, self.stage, self.where = exc, stage, where
                if not isinstance(exc, (FsvideoError, KeyboardInterrupt, SystemExit)):
                    log.info("stage %r failed on %s", stage, where, exc_info=exc)
            else:
                log.debug("after the first failure, stage %s also failed: %r", stage, exc)

    def raise_if_any(self) -> None:
        exc = self.exc
        if exc is None:
            return
        if isinstance(exc, (FsvideoError, KeyboardInterrupt, SystemExit)):
            raise exc
        raise PipelineError(f"stage {self.stage!r} failed on {self.where}: {type(exc).__name__}: {exc}",
                            hint="run with -v for the traceback") from exc

    def guard(self, name: str, where: Callable[[], str], fn: Callable[[], Any]) -> Any:
        """``fn()``; an exception is recorded (naming ``name`` and ``where()``) and becomes :class:`Stopped`."""
        try:
            return fn()
        except (Stopped, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # noqa: BLE001 - reported to the caller
            self.record(e, name, where())
            raise Stopped from e


def _frames_of(packets: Sequence[Packet], fallback: int) -> str:
    idx = [p.get("index") for p in packets if isinstance(p, dict)]
    idx = [i for i in idx if i is not None]
    if not idx:
        return f"frame {fallback}"
    return f"frame {idx[0]}" if len(idx) == 1 or idx[0] == idx[-1] else f"frames {idx[0]}-{idx[-1]}"


class StageCall:
    """Drives one stage: timed, checked calls (counts, order, declared keys) and failure recording."""

    def __init__(self, stage: Stage, failure: Failure, workers: int = 1):
        """``workers``: calls of this stage in flight at once (more than 1 only for a per-frame stage)."""
        self.stage = stage
        self.name = stage.name
        self.failure = failure
        self.stats = StageStats(self.name)
        stage.bind_counts(self.stats.counts)
        self.batch_size = batch_size_of(stage)
        self.workers = workers
        self.n_in = 0
        self.n_out = 0
        self.last_index: Any = None
        self._lock = threading.Lock()

    def _timed(self, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        try:
            return fn()
        finally:
            with self._lock:
                self.stats.busy_s += time.perf_counter() - t
                self.stats.calls += 1

    def _checked(self, out: Any) -> list[Packet]:
        if not isinstance(out, list):
            raise TypeError(f"stage {self.name!r} returned {type(out).__name__}, not a list of packets")
        adds = self.stage.adds
        for p in out:
            if not isinstance(p, dict):
                raise TypeError(f"stage {self.name!r} returned a {type(p).__name__}, not a packet dict")
            missing = [k for k in adds if k not in p]
            if missing:
                raise KeyError(f"stage {self.name!r} declares adds={list(adds)} but returned a packet "
                               f"without {', '.join(missing)}")
            idx = p.get("index")
            if idx is not None:
                if self.last_index is not None and idx <= self.last_index:
                    raise RuntimeError(f"stage {self.name!r} reordered packets: index {idx} after {self.last_index}")
                self.last_index = idx
        self.n_out += len(out)
        self.stats.packets = self.n_out
        if self.n_out > self.n_in:
            raise RuntimeError(f"stage {self.name!r} returned more packets ({self.n_out}) than it got ({self.n_in})")
        return out

    def setup(self) -> None:
        self.failure.guard(self.name, lambda: "setup", self.stage.setup)

    def process(self, batch: list[Packet]) -> list[Packet]:
        self.n_in += len(batch)
        return self.failure.guard(self.name, lambda: _frames_of(batch, self.n_in - len(batch)),
                                  lambda: self._checked(self._timed(lambda: self.stage.process(batch))))

    def submit(self, pool: ThreadPoolExecutor, batch: list[Packet]) -> tuple[list[Packet], Future]:
        """Start ``process(batch)`` in a pool worker (per-frame stages); :meth:`collect` takes the result."""
        self.n_in += len(batch)
        return batch, pool.submit(self._timed, lambda: self.stage.process(batch))

    def collect(self, pending: tuple[list[Packet], Future]) -> list[Packet]:
        batch, fut = pending
        return self.failure.guard(self.name, lambda: _frames_of(batch, self.n_in),
                                  lambda: self._checked(fut.result()))

    def flush(self) -> list[Packet]:
        where = lambda: f"end of stream (after {self.n_in} frames)"  # noqa: E731
        out = self.failure.guard(self.name, where, lambda: self._checked(self._timed(self.stage.flush)))
        if self.n_out != self.n_in:
            self.failure.guard(self.name, where, lambda: self._lost())
        return out

    def _lost(self) -> None:
        raise RuntimeError(f"stage {self.name!r} lost packets: got {self.n_in}, returned {self.n_out} "
                           "(a look-ahead stage must return what it holds from flush())")

    def close(self) -> None:
        try:
            self.stage.close()
        except BaseException as e:  # noqa: BLE001
            self.failure.record(e, self.name, "close")


class Source:
    """Pulls packets from the source iterable, timed; an exception is recorded as the source's."""

    def __init__(self, source: Iterable[Packet], name: str, failure: Failure):
        self.it = iter(source)
        self.name = name
        self.failure = failure
        self.stats = StageStats(name)

    def pull(self) -> Any:
        """The next packet, or ``END``."""
        t = time.perf_counter()
        try:
            return self.failure.guard(self.name, lambda: f"frame {self.stats.packets}", lambda: next(self.it, END))
        finally:
            self.stats.busy_s += time.perf_counter() - t
            self.stats.calls += 1

    def count(self) -> None:
        self.stats.packets += 1

    def close(self) -> None:
        close = getattr(self.it, "close", None)  # a generator's finally (closing the file) runs now, here
        if close is not None:
            try:
                close()
            except Exception as e:  # noqa: BLE001
                log.debug("closing the source failed: %r", e)


class Sink:
    """Hands packets to the sink, timed, and reports progress."""

    def __init__(self, sink: Callable[[Packet], None], name: str, failure: Failure, progress: ProgressFn | None,
                 total: int | None):
        self.sink, self.name, self.failure = sink, name, failure
        self.progress, self.total = progress, total
        self.stats = StageStats(name)

    def deliver(self, p: Packet) -> None:
        t = time.perf_counter()
        self.failure.guard(self.name, lambda: _frames_of([p], self.stats.packets), lambda: self.sink(p))
        self.stats.busy_s += time.perf_counter() - t
        self.stats.packets += 1
        self.stats.calls += 1
        if self.progress is not None:
            self.progress(self.stats.packets, self.total)


def packet_nbytes(item: Any, _depth: int = 0, _seen: set | None = None) -> int:
    """Bytes of the arrays and tensors a packet carries (frames, crops, codes), counted once each.

    Looks into lists, tuples, dicts and dataclasses (an ``AlignedFace``'s crop, a ``TrackedFace``'s
    landmarks) three levels down; a view counts its own elements, so a batch split into per-frame
    views is not counted once per frame.  Anything else counts 0: this sizes queues, it is no audit.
    """
    seen = set() if _seen is None else _seen
    if id(item) in seen or _depth > 3:
        return 0
    seen.add(id(item))
    if isinstance(item, np.ndarray):
        return int(item.nbytes)
    torch = sys.modules.get("torch")   # not imported: no tensor can exist (and this module stays light)
    if torch is not None and isinstance(item, torch.Tensor):
        return int(item.numel() * item.element_size())
    if isinstance(item, dict):
        values = item.values()
    elif isinstance(item, (list, tuple)):
        values = item
    elif dataclasses.is_dataclass(item) and not isinstance(item, type):
        values = [getattr(item, f.name) for f in dataclasses.fields(item)]
    else:
        return 0
    return sum(packet_nbytes(v, _depth + 1, seen) for v in values)


class Link:
    """A bounded queue whose blocking put/get give up when the run is stopped.

    It holds at most ``maxsize`` items and, when ``max_bytes`` is given, at most that many bytes of
    packets (:func:`packet_nbytes`) -- except that ``min_items`` are always let in (at least one, so
    an oversized packet still passes and the chain cannot stall).  A byte bound keeps large packets
    (a 1024 px crop and its generated face: about 7 MiB a frame) from filling every queue of a chain
    whose last stages are slow, which would make peak memory grow with the video up to the packet bound.
    """

    def __init__(self, maxsize: int, stop: threading.Event, max_bytes: int | None = None, min_items: int = 1):
        self.maxsize, self.max_bytes, self.min_items = int(maxsize), max_bytes, max(1, int(min_items))
        self.stop = stop
        self.items: collections.deque = collections.deque()
        self.bytes = 0                  # bytes of the packets held now
        self.peak_bytes = 0             # the most held at once (tests, statistics)
        self.cond = threading.Condition()

    def _fits(self, size: int) -> bool:
        n = len(self.items)
        if n >= self.maxsize:
            return False
        return n < self.min_items or self.max_bytes is None or self.bytes + size <= self.max_bytes

    def put(self, item: Any) -> None:
        size = packet_nbytes(item) if self.max_bytes is not None and item is not END else 0
        with self.cond:
            while True:
                if self.stop.is_set():
                    raise Stopped
                if self._fits(size):
                    break
                self.cond.wait(POLL_S)
            self.items.append((item, size))
            self.bytes += size
            self.peak_bytes = max(self.peak_bytes, self.bytes)
            self.cond.notify_all()

    def get(self) -> Any:
        with self.cond:
            while True:
                if self.stop.is_set():
                    raise Stopped
                if self.items:
                    break
                self.cond.wait(POLL_S)
            item, size = self.items.popleft()
            self.bytes -= size
            self.cond.notify_all()
            return item
