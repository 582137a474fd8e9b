"""The stage contract and the bounded streaming runner.

A *packet* is a dict describing one frame (``index``, ``pts``, ``time``, ``image``...); each stage
reads some keys (``needs``) and adds others (``adds``).  :func:`run_pipeline` runs every stage in
its own thread, connected by bounded :class:`queue.Queue` objects::

    source --q--> stage 1 --q--> stage 2 --q--> ... --q--> sink (in the caller's thread)

Guarantees:

* a full queue blocks its producer, so at most :func:`max_in_flight` packets exist at once,
  whatever the video's length (memory is bounded);
* no packet is dropped or reordered (the runner counts packets in and out of every stage and
  checks that ``index`` keeps increasing);
* batching stages get exactly ``batch_size`` packets per call (fewer only at the end of the
  stream), so the batches, and hence the results, do not depend on timing;
* an exception anywhere stops every thread promptly (all blocking waits poll a stop flag), every
  thread is joined, and the caller gets a :class:`~fsvideo.errors.PipelineError` naming the stage
  and the frame, with the original exception as ``__cause__`` (an
  :class:`~fsvideo.errors.FsvideoError` is re-raised unchanged, so a user error stays a user error);
* Ctrl-C in the caller stops and joins every thread, then re-raises ``KeyboardInterrupt``.

``threads=False`` runs the same chain frame by frame in the caller's thread (batch 1, no overlap):
the baseline the benchmarks compare against, and a simple mode for debugging.

Example::

    stages = [FunctionStage("double", lambda ps: [{**p, "y": 2 * p["x"]} for p in ps],
                            needs=("x",), adds=("y",), batch_size=4)]
    out = []
    run_pipeline(({"index": i, "x": i} for i in range(10)), stages, out.append, source_keys=("index", "x"))
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

from fsvideo.errors import ConfigError, FsvideoError, PipelineError

log = logging.getLogger(__name__)

Packet = dict
ProgressFn = Callable[[int, "int | None"], None]

_POLL_S = 0.05  # how often a blocked thread looks at the stop flag


class Stage:
    """Base class of a pipeline stage (duck typing works too: the runner uses only these members).

    Attributes:
        name: shown in errors and statistics.
        needs: packet keys this stage reads (checked against earlier stages once, at build time).
        adds: packet keys this stage adds (checked on every packet it returns).
        batch_size: packets per :meth:`process` call (the last batch of a stream may be smaller).
        window: most packets the stage may hold back between calls (a look-ahead window, e.g.
            temporal smoothing); 0 for a 1-in-1-out stage.  Only used to compute the memory bound.

    Contract: :meth:`process` gets a list of packets in stream order and returns them (the same
    dicts, updated, or new ones) in the same order.  A look-ahead stage may return fewer than it
    got, holding at most ``window`` back, and must return every held packet from :meth:`flush`,
    which is called once at the end of the stream.  No packet may be lost, duplicated or reordered.
    :meth:`setup` and :meth:`close` run in the stage's own thread, before the first and after the
    last packet (``close`` also after a failure).
    """

    name: str = "stage"
    needs: tuple[str, ...] = ()
    adds: tuple[str, ...] = ()
    batch_size: int = 1
    window: int = 0

    def setup(self) -> None:
        """Prepare (allocate buffers, move a model to its device...); runs in the stage's thread."""

    def process(self, packets: list[Packet]) -> list[Packet]:
        raise NotImplementedError

    def flush(self) -> list[Packet]:
        """Return the packets still held (look-ahead stages); called once at the end of the stream."""
        return []

    def close(self) -> None:
        """Release resources; called after the last packet and after a failure."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} needs={list(self.needs)} adds={list(self.adds)}>"


class SourceStage(Stage):
    """The first stage of a declared chain: produces the packets (e.g. ``decode``)."""

    def packets(self) -> Iterator[Packet]:
        raise NotImplementedError

    def process(self, packets: list[Packet]) -> list[Packet]:  # pragma: no cover - never called
        raise TypeError(f"source stage {self.name!r} takes no input packets")


class SinkStage(Stage):
    """The last stage of a declared chain: consumes the packets (e.g. ``encode_video``)."""

    def consume(self, packet: Packet) -> None:
        raise NotImplementedError

    def process(self, packets: list[Packet]) -> list[Packet]:
        for p in packets:
            self.consume(p)
        return packets


class FunctionStage(Stage):
    """A stage made from a function ``fn(packets: list[Packet]) -> list[Packet]``."""

    def __init__(self, name: str, fn: Callable[[list[Packet]], list[Packet]], *, needs: Sequence[str] = (),
                 adds: Sequence[str] = (), batch_size: int = 1):
        self.name = name
        self.fn = fn
        self.needs = tuple(needs)
        self.adds = tuple(adds)
        self.batch_size = int(batch_size)

    def process(self, packets: list[Packet]) -> list[Packet]:
        return self.fn(packets)


@dataclass
class StageStats:
    """What one stage did: packets through it, calls, and seconds spent inside it (not waiting)."""

    name: str
    packets: int = 0
    calls: int = 0
    busy_s: float = 0.0

    @property
    def fps(self) -> float:
        """Packets per busy second: the stage's speed on its own."""
        return self.packets / self.busy_s if self.busy_s > 0 else float("inf")


@dataclass
class RunStats:
    """What a run did: packets delivered to the sink, wall seconds, and per-stage statistics."""

    packets: int = 0
    seconds: float = 0.0
    stages: list[StageStats] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.packets / self.seconds if self.seconds > 0 else float("inf")


# ----------------------------------------------------------------------------------- chain checks

def _stage_name(stage: Any) -> str:
    return str(getattr(stage, "name", type(stage).__name__))


def _batch_size(stage: Any) -> int:
    bs = getattr(stage, "batch_size", 1)
    if bs is None:
        return 1
    if not isinstance(bs, int) or isinstance(bs, bool) or bs < 1:
        raise ConfigError(f"stage {_stage_name(stage)!r} has batch_size {bs!r}", hint="use an integer >= 1")
    return bs


def check_chain(stages: Sequence[Any], source_keys: Iterable[str] = ()) -> None:
    """Check once, before running, that every stage's ``needs`` is provided by the source or an earlier stage.

    Raises:
        ConfigError: naming the stage, the missing keys and the chain.
    """
    provided = set(source_keys)
    names = " -> ".join(_stage_name(s) for s in stages)
    for s in stages:
        if not callable(getattr(s, "process", None)):
            raise ConfigError(f"{s!r} is not a stage (it has no process method)")
        _batch_size(s)
        missing = [k for k in getattr(s, "needs", ()) if k not in provided]
        if missing:
            have = ", ".join(sorted(provided)) or "nothing"
            raise ConfigError(f"stage {_stage_name(s)!r} needs {', '.join(missing)}, which no earlier stage adds "
                              f"(chain: {names}; available: {have})",
                              hint="put a stage that adds it earlier in the pipeline file")
        provided.update(getattr(s, "adds", ()))


def max_in_flight(stages: Sequence[Any], queue_size: int) -> int:
    """The most packets that can exist at once in a threaded run (the memory bound).

    ``len(stages) + 1`` queues of ``queue_size``, plus what each stage holds (a batch and its
    look-ahead window), plus one packet in the source's hands and one in the sink's.
    """
    held = sum(_batch_size(s) + int(getattr(s, "window", 0) or 0) for s in stages)
    return (len(stages) + 1) * queue_size + held + 2


# ------------------------------------------------------------------------------------- the runner

class _Stopped(Exception):
    """Raised inside a worker when another thread asked everyone to stop."""


_END = object()  # end-of-stream marker passed down the queues


class _Link:
    """A bounded queue whose blocking put/get give up when the run is stopped."""

    def __init__(self, maxsize: int, stop: threading.Event):
        self.q: queue.Queue = queue.Queue(maxsize=maxsize)
        self.stop = stop

    def put(self, item: Any) -> None:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                self.q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def get(self) -> Any:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                return self.q.get(timeout=_POLL_S)
            except queue.Empty:
                continue


def _frames_of(packets: Sequence[Packet], fallback: int) -> str:
    idx = [p.get("index") for p in packets if isinstance(p, dict)]
    idx = [i for i in idx if i is not None]
    if not idx:
        return f"frame {fallback}"
    return f"frame {idx[0]}" if len(idx) == 1 or idx[0] == idx[-1] else f"frames {idx[0]}-{idx[-1]}"


class _Failure:
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


class _Checker:
    """Per-stage bookkeeping: counts, order, declared keys, timing."""

    def __init__(self, stage: Any):
        self.stage = stage
        self.name = _stage_name(stage)
        self.adds = tuple(getattr(stage, "adds", ()))
        self.stats = StageStats(self.name)
        self.n_in = 0
        self.last_index: Any = None

    def call(self, fn: Callable[[], Any], batch: list[Packet]) -> list[Packet]:
        t = time.perf_counter()
        out = fn()
        self.stats.busy_s += time.perf_counter() - t
        self.stats.calls += 1
        if not isinstance(out, list):
            raise TypeError(f"stage {self.name!r} returned {type(out).__name__}, not a list of packets")
        for p in out:
            if not isinstance(p, dict):
                raise TypeError(f"stage {self.name!r} returned a {type(p).__name__}, not a packet dict")
            missing = [k for k in self.adds if k not in p]
            if missing:
                raise KeyError(f"stage {self.name!r} declares adds={list(self.adds)} but returned a packet "
                               f"without {', '.join(missing)}")
            idx = p.get("index")
            if idx is not None:
                if self.last_index is not None and idx <= self.last_index:
                    raise RuntimeError(f"stage {self.name!r} reordered packets: index {idx} after {self.last_index}")
                self.last_index = idx
        self.stats.packets += len(out)
        if self.stats.packets > self.n_in:
            raise RuntimeError(f"stage {self.name!r} returned more packets ({self.stats.packets}) than it got "
                               f"({self.n_in})")
        return out

    def check_end(self) -> None:
        if self.stats.packets != self.n_in:
            raise RuntimeError(f"stage {self.name!r} lost packets: got {self.n_in}, returned {self.stats.packets} "
                               "(a look-ahead stage must return what it holds from flush())")


def run_pipeline(source: Iterable[Packet], stages: Sequence[Any], sink: Callable[[Packet], None], *,
                 queue_size: int = 8, progress: ProgressFn | None = None, threads: bool = True,
                 total: int | None = None, source_keys: Iterable[str] | None = None,
                 source_name: str = "source", sink_name: str = "sink", join_timeout: float = 60.0) -> RunStats:
    """Stream ``source`` packets through ``stages`` into ``sink``.

    Args:
        source: iterable of packets (dicts), in stream order; consumed in its own thread.
        stages: the chain (see :class:`Stage`); each runs in its own thread.
        sink: called with every output packet, in order, in the caller's thread.
        queue_size: capacity of each queue between threads (packets).
        progress: ``progress(done, total)`` after every packet the sink took.
        threads: False runs the chain frame by frame in the caller's thread (batch 1, no overlap).
        total: expected packet count, passed to ``progress`` (None when unknown).
        source_keys: keys the source packets carry; when given, the chain is checked against
            them before anything runs (:func:`check_chain`).
        source_name, sink_name: names used in error messages.
        join_timeout: seconds to wait for each thread at shutdown before giving up on it (a stage
            stuck inside a call cannot be interrupted; it is logged).

    Returns:
        :class:`RunStats` (packets delivered, seconds, per-stage packets and busy seconds).

    Raises:
        PipelineError: a stage failed (message names the stage and frame; ``__cause__`` is the
            original exception).  FsvideoError subclasses raised by a stage pass through unchanged.
        KeyboardInterrupt: after every thread has been stopped and joined.
    """
    if not isinstance(queue_size, int) or queue_size < 1:
        raise ConfigError(f"queue_size {queue_size!r} must be an integer >= 1")
    stages = list(stages)
    if source_keys is not None:
        check_chain(stages, source_keys)
    else:
        for s in stages:
            _batch_size(s)
    run = _sequential if not threads else _threaded
    return run(source, stages, sink, queue_size=queue_size, progress=progress, total=total,
               source_name=source_name, sink_name=sink_name, join_timeout=join_timeout)


def _threaded(source, stages, sink, *, queue_size, progress, total, source_name, sink_name,
              join_timeout) -> RunStats:
    stop = threading.Event()
    failure = _Failure()
    links = [_Link(queue_size, stop) for _ in range(len(stages) + 1)]
    checkers = [_Checker(s) for s in stages]
    src_stats = StageStats(source_name)
    sink_stats = StageStats(sink_name)

    def source_worker() -> None:
        it = iter(source)
        n = 0
        try:
            while True:
                t = time.perf_counter()
                try:
                    p = next(it)
                except StopIteration:
                    break
                finally:
                    src_stats.busy_s += time.perf_counter() - t
                src_stats.packets += 1
                links[0].put(p)
                n += 1
            links[0].put(_END)
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - reported to the caller
            failure.record(e, source_name, f"frame {n}")
            stop.set()
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    close()  # a generator's finally (closing the file) runs now, in this thread
                except Exception as e:  # noqa: BLE001
                    log.debug("closing the source failed: %r", e)

    def stage_worker(i: int) -> None:
        stage, chk, inq, outq = stages[i], checkers[i], links[i], links[i + 1]
        bs = _batch_size(stage)
        batch: list[Packet] = []
        where = "setup"
        try:
            getattr(stage, "setup", lambda: None)()
            where = ""
            while True:
                item = inq.get()
                if item is _END:
                    break
                batch.append(item)
                chk.n_in += 1
                if len(batch) >= bs:
                    for p in chk.call(lambda b=batch: stage.process(b), batch):
                        outq.put(p)
                    batch = []
            if batch:
                for p in chk.call(lambda b=batch: stage.process(b), batch):
                    outq.put(p)
                batch = []
            where = f"end of stream (after {chk.n_in} frames)"
            flush = getattr(stage, "flush", None)
            if flush is not None:
                for p in chk.call(flush, []):
                    outq.put(p)
            chk.check_end()
            outq.put(_END)
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - reported to the caller
            failure.record(e, chk.name, where or _frames_of(batch, chk.n_in))
            stop.set()
        finally:
            try:
                getattr(stage, "close", lambda: None)()
            except BaseException as e:  # noqa: BLE001
                failure.record(e, chk.name, "close")
                stop.set()

    workers = [threading.Thread(target=source_worker, name=f"fsvideo-{source_name}", daemon=True)]
    workers += [threading.Thread(target=stage_worker, args=(i,), name=f"fsvideo-{checkers[i].name}", daemon=True)
                for i in range(len(stages))]
    t0 = time.perf_counter()
    done = 0
    interrupted: BaseException | None = None
    completed = False
    for w in workers:
        w.start()
    try:
        last = links[-1]
        while True:
            try:
                item = last.get()
            except _Stopped:
                break
            if item is _END:
                completed = True
                break
            t = time.perf_counter()
            try:
                sink(item)
            except KeyboardInterrupt:
                raise
            except BaseException as e:  # noqa: BLE001 - reported to the caller
                failure.record(e, sink_name, _frames_of([item], done))
                stop.set()
                break
            sink_stats.busy_s += time.perf_counter() - t
            sink_stats.packets += 1
            sink_stats.calls += 1
            done += 1
            if progress is not None:
                progress(done, total)
    except KeyboardInterrupt as e:
        interrupted = e
        stop.set()
    finally:
        if not completed:  # failure, Ctrl-C, or an exception from progress(): stop everyone
            stop.set()
        _join_all(workers, join_timeout)
    if interrupted is not None:
        raise interrupted
    failure.raise_if_any()
    return RunStats(packets=done, seconds=time.perf_counter() - t0,
                    stages=[src_stats] + [c.stats for c in checkers] + [sink_stats])


def _join_all(workers: list[threading.Thread], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for w in workers:
        while w.is_alive():
            try:
                w.join(timeout=max(0.0, min(_POLL_S * 4, deadline - time.monotonic())))
            except KeyboardInterrupt:  # a second Ctrl-C while shutting down: keep shutting down
                log.warning("interrupted again while stopping; still waiting for %s", w.name)
            if time.monotonic() >= deadline:
                break
        if w.is_alive():
            log.error("thread %s did not stop within %.0f s (stuck inside a stage call)", w.name, timeout)


def _sequential(source, stages, sink, *, queue_size, progress, total, source_name, sink_name,
                join_timeout) -> RunStats:
    """Frame by frame in the caller's thread: each packet goes through every stage before the next is read."""
    checkers = [_Checker(s) for s in stages]
    src_stats = StageStats(source_name)
    sink_stats = StageStats(sink_name)
    failure = _Failure()
    t0 = time.perf_counter()
    done = 0
    set_up: list[Any] = []

    def push(i: int, packets: list[Packet]) -> None:
        nonlocal done
        for p in packets:
            if i == len(stages):
                t = time.perf_counter()
                try:
                    sink(p)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as e:
                    failure.record(e, sink_name, _frames_of([p], done))
                    raise _Stopped from e
                sink_stats.busy_s += time.perf_counter() - t
                sink_stats.packets += 1
                done += 1
                if progress is not None:
                    progress(done, total)
                continue
            chk = checkers[i]
            chk.n_in += 1
            try:
                out = chk.call(lambda p=p: stages[i].process([p]), [p])
            except (KeyboardInterrupt, SystemExit, _Stopped):
                raise
            except BaseException as e:
                failure.record(e, chk.name, _frames_of([p], chk.n_in - 1))
                raise _Stopped from e
            push(i + 1, out)

    it = iter(source)
    try:
        for s, chk in zip(stages, checkers):
            try:
                getattr(s, "setup", lambda: None)()
            except BaseException as e:
                failure.record(e, chk.name, "setup")
                raise _Stopped from e
            set_up.append(s)
        n = 0
        while True:
            t = time.perf_counter()
            try:
                p = next(it)
            except StopIteration:
                break
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:
                failure.record(e, source_name, f"frame {n}")
                raise _Stopped from e
            finally:
                src_stats.busy_s += time.perf_counter() - t
            src_stats.packets += 1
            n += 1
            push(0, [p])
        for i, (s, chk) in enumerate(zip(stages, checkers)):
            flush = getattr(s, "flush", None)
            if flush is None:
                continue
            try:
                out = chk.call(flush, [])
                chk.check_end()
            except (KeyboardInterrupt, SystemExit, _Stopped):
                raise
            except BaseException as e:
                failure.record(e, chk.name, f"end of stream (after {chk.n_in} frames)")
                raise _Stopped from e
            push(i + 1, out)
    except _Stopped:
        pass
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
        for s in reversed(set_up):
            try:
                getattr(s, "close", lambda: None)()
            except Exception as e:  # noqa: BLE001
                failure.record(e, _stage_name(s), "close")
    failure.raise_if_any()
    return RunStats(packets=done, seconds=time.perf_counter() - t0,
                    stages=[src_stats] + [c.stats for c in checkers] + [sink_stats])


def run_chain(stages: Sequence[Any], *, source: Iterable[Packet] | None = None,
              sink: Callable[[Packet], None] | None = None, **kwargs) -> RunStats:
    """Run a declared chain: its first stage may be a :class:`SourceStage`, its last a :class:`SinkStage`.

    ``source``/``sink`` are used when the chain has no such stage.  The chain is checked before
    anything runs.  Other keyword arguments go to :func:`run_pipeline`.
    """
    stages = list(stages)
    src_stage = stages.pop(0) if stages and isinstance(stages[0], SourceStage) else None
    sink_stage = stages.pop() if stages and isinstance(stages[-1], SinkStage) else None
    if src_stage is None and source is None:
        raise ConfigError("the chain has no source stage and no source was given",
                          hint="start the pipeline file with a source stage such as decode")
    if sink_stage is None and sink is None:
        raise ConfigError("the chain has no sink stage and no sink was given",
                          hint="end the pipeline file with a sink stage such as encode_video")
    if src_stage is not None:
        source_keys: Iterable[str] = tuple(src_stage.adds)
    else:
        source_keys = kwargs.pop("source_keys", None)
        if source_keys is None:
            raise ConfigError("run_chain needs source_keys when the source is not a stage")
    check_chain(stages + ([sink_stage] if sink_stage is not None else []), source_keys)
    kwargs.pop("source_keys", None)
    if src_stage is not None:
        source = _source_from_stage(src_stage)
        kwargs.setdefault("source_name", src_stage.name)
    if sink_stage is not None:
        sink = sink_stage.consume
        kwargs.setdefault("sink_name", sink_stage.name)
    try:
        if sink_stage is not None:
            sink_stage.setup()
        return run_pipeline(source, stages, sink, **kwargs)
    finally:
        if sink_stage is not None:
            sink_stage.close()


def _source_from_stage(stage: SourceStage) -> Iterator[Packet]:
    stage.setup()
    try:
        yield from stage.packets()
    finally:
        stage.close()
