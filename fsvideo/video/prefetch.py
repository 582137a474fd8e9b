"""Decode a video ahead of time on a thread, so the next video of a batch starts while this one ends.

A run's stages are busiest at the end of a video (the last batches go through the networks, the
blender and the encoder) while its decoder is already done.  :class:`PrefetchReader` wraps a
:class:`~fsvideo.video.VideoReader` and, once :meth:`start` is called (a batch calls it when the
current video's decoder runs dry), decodes up to ``depth`` frames into a bounded queue; the run of
that video then takes its first frames from the queue and the rest as they are decoded.

Memory is bounded by ``depth`` frames (about 6 MB each at 1080p).  Errors of the decoder (a damaged
file) are raised where the frames are consumed, as with the plain reader.

Example::

    nxt = PrefetchReader(VideoReader("b.mp4"))
    cur = PrefetchReader(VideoReader("a.mp4"), on_exhausted=nxt.start)
    for f in cur: ...          # when a.mp4 is fully decoded, b.mp4 starts decoding
    for f in nxt: ...
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

_END = object()


class PrefetchReader:
    """A one-shot frame source that decodes ``reader`` on a background thread into ``depth`` slots.

    Args:
        reader: any iterable of Frames with ``len`` (a VideoReader).
        depth: frames decoded ahead at most.
        on_exhausted: called (from the decoding thread) once the last frame has been decoded.
    """

    def __init__(self, reader, depth: int = 16, on_exhausted: Callable[[], None] | None = None):
        self.reader = reader
        self.info = getattr(reader, "info", None)
        self.on_exhausted = on_exhausted
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._iterated = False
        self.frames_before_use = 0            # frames already decoded when the consumer first asked

    def __len__(self) -> int:
        return len(self.reader)

    def start(self) -> None:
        """Start decoding (idempotent; safe from any thread)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="fsvideo-prefetch", daemon=True)
                self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            for frame in self.reader:
                if not self._put(frame):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(e)
            return
        self._put(_END)
        if self.on_exhausted is not None:
            try:
                self.on_exhausted()
            except Exception:  # noqa: BLE001 - prefetching the next video is only an optimisation
                import logging
                logging.getLogger(__name__).debug("on_exhausted failed", exc_info=True)

    def __iter__(self) -> Iterator:
        if self._iterated:
            raise RuntimeError("a PrefetchReader can be iterated once")
        self._iterated = True
        self.start()
        self.frames_before_use = self._q.qsize()
        try:
            while True:
                item = self._q.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the decoding thread (frames not taken are dropped)."""
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5)


__all__ = ["PrefetchReader"]
