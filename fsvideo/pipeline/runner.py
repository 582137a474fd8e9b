"""The bounded streaming runner: a chain of :class:`~fsvideo.pipeline.stage.Stage` from a source to a sink.

:func:`run_pipeline` runs every stage in its own thread, connected by bounded
:class:`queue.Queue` objects::

    source --q--> stage 1 --q--> stage 2 --q--> ... --q--> sink (in the caller's thread)

Guarantees:

* a full queue blocks its producer, so at most :func:`~fsvideo.pipeline.stage.max_in_flight`
  packets exist at once, whatever the video's length (memory is bounded); with ``queue_bytes`` a
  queue is also full once it holds that many bytes of packets (but always takes a batch), so chains
  of large packets (1024 px crops) hold fewer of them;
* no packet is dropped or reordered (the runner counts packets in and out of every stage and
  checks that ``index`` keeps increasing);
* batching stages get exactly ``batch_size`` packets per call (fewer only at the end of the
  stream), so the batches, and hence the results, do not depend on timing;
* a ``per_frame`` stage may run in ``workers`` threads at once (``network_workers`` for a stage that
  runs the networks); its outputs keep the input order;
* an exception anywhere stops every thread promptly (all blocking waits poll a stop flag), every
  thread is joined, and the caller gets a :class:`~fsvideo.errors.PipelineError` naming the stage
  and the frame, with the original exception as ``__cause__`` (an
  :class:`~fsvideo.errors.FsvideoError` is re-raised unchanged, so a user error stays a user error);
* Ctrl-C in the caller stops and joins every thread, then re-raises ``KeyboardInterrupt``.

``threads=False`` runs the same chain frame by frame in the caller's thread (batch 1, no overlap):
the baseline the benchmarks compare against, and a simple mode for debugging.  Both executors
drive the stages through the same wrappers (:mod:`fsvideo.pipeline.stage_calls`: one timed call,
one place that records a failure).

Example::

    stages = [FunctionStage("double", lambda ps: [{**p, "y": 2 * p["x"]} for p in ps],
                            needs=("x",), adds=("y",), batch_size=4)]
    out = []
    run_pipeline(({"index": i, "x": i} for i in range(10)), stages, out.append, source_keys=("index", "x"))
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Sequence

from fsvideo.errors import ConfigError
from fsvideo.pipeline.stage import Packet, RunStats, SinkStage, SourceStage, Stage, check_chain, stage_workers
from fsvideo.pipeline.stage_calls import END, POLL_S, Failure, Link, ProgressFn, Sink, Source, StageCall, Stopped

log = logging.getLogger(__name__)


def run_pipeline(source: Iterable[Packet], stages: Sequence[Stage], sink: Callable[[Packet], None], *,
                 queue_size: int = 8, queue_bytes: int | None = None, progress: ProgressFn | None = None,
                 threads: bool = True,
                 workers: int = 1, network_workers: int = 1, total: int | None = None, source_keys: Iterable[str] | None = None,
                 source_name: str = "source", sink_name: str = "sink", join_timeout: float = 60.0) -> RunStats:
    """Stream ``source`` packets through ``stages`` into ``sink``.

    Args:
        source: iterable of packets (dicts), in stream order; consumed in its own thread.
        stages: the chain (see :class:`~fsvideo.pipeline.stage.Stage`); each runs in its own thread.
        sink: called with every output packet, in order, in the caller's thread.
        queue_size: capacity of each queue between threads (packets).
        queue_bytes: also the most bytes of packets each queue holds (None: no byte bound); a queue
            always takes a batch of the stage on either side (:class:`~fsvideo.pipeline.stage_calls.Link`).
        progress: ``progress(done, total)`` after every packet the sink took.
        threads: False runs the chain frame by frame in the caller's thread (batch 1, no overlap).
        workers: threads each ``per_frame`` stage may use at once (threaded runs only).
        network_workers: the same for a ``per_frame`` stage that runs the networks (``Stage.networks``).
        total: expected packet count, passed to ``progress`` (None when unknown).
        source_keys: keys the source packets carry; when given, the chain is checked against
            them before anything runs (:func:`~fsvideo.pipeline.stage.check_chain`).
        source_name, sink_name: names used in error messages.
        join_timeout: seconds to wait for each thread at shutdown before giving up on it (a stage
            stuck inside a call cannot be interrupted; it is logged).

    Returns:
        :class:`RunStats` (packets delivered, seconds, per-stage packets, busy seconds and counts).

    Raises:
        PipelineError: a stage failed (message names the stage and frame; ``__cause__`` is the
            original exception).  FsvideoError subclasses raised by a stage pass through unchanged.
        KeyboardInterrupt: after every thread has been stopped and joined.
    """
    if not isinstance(queue_size, int) or queue_size < 1:
        raise ConfigError(f"queue_size {queue_size!r} must be an integer >= 1")
    if queue_bytes is not None and (not isinstance(queue_bytes, int) or queue_bytes < 1):
        raise ConfigError(f"queue_bytes {queue_bytes!r} must be None or an integer >= 1")
    for name, n in (("workers", workers), ("network_workers", network_workers)):
        if not isinstance(n, int) or n < 1:
            raise ConfigError(f"{name} {n!r} must be an integer >= 1")
    stages = list(stages)
    check_chain(stages, source_keys)
    failure = Failure()
    calls = [StageCall(s, failure, stage_workers(s, workers, network_workers) if threads else 1) for s in stages]
    src = Source(source, source_name, failure)
    snk = Sink(sink, sink_name, failure, progress, total)
    t0 = time.perf_counter()
    if threads:
        _threaded(src, calls, snk, failure, queue_size, queue_bytes, join_timeout)
    else:
        _sequential(src, calls, snk, failure)
    failure.raise_if_any()
    return RunStats(packets=snk.stats.packets, seconds=time.perf_counter() - t0,
                    stages=[src.stats] + [c.stats for c in calls] + [snk.stats])


def _batches(inq: Link, size: int) -> Iterator[list[Packet]]:
    """Batches of exactly ``size`` packets from a link (the last one may be smaller)."""
    batch: list[Packet] = []
    while True:
        item = inq.get()
        if item is END:
            break
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _run_stage(sc: StageCall, inq: Link, outq: Link) -> None:
    """One stage in its thread: batches in, packets out; a per-frame stage keeps ``workers`` calls in flight."""
    sc.setup()
    if sc.workers > 1:
        with ThreadPoolExecutor(sc.workers, thread_name_prefix=f"fsvideo-{sc.name}") as pool:
            pending: collections.deque = collections.deque()
            try:
                for batch in _batches(inq, sc.batch_size):
                    pending.append(sc.submit(pool, batch))
                    while len(pending) >= sc.workers or (pending and pending[0][1].done()):
                        for p in sc.collect(pending.popleft()):
                            outq.put(p)
                while pending:
                    for p in sc.collect(pending.popleft()):
                        outq.put(p)
            finally:
                for _, fut in pending:
                    fut.cancel()
    else:
        for batch in _batches(inq, sc.batch_size):
            for p in sc.process(batch):
                outq.put(p)
    for p in sc.flush():
        outq.put(p)
    outq.put(END)


def _threaded(src: Source, calls: list[StageCall], snk: Sink, failure: Failure, queue_size: int,
              queue_bytes: int | None, join_timeout: float) -> None:
    stop = threading.Event()
    batches = [1] + [c.batch_size for c in calls] + [1]          # link i: batches[i] -> batches[i + 1]
    links = [Link(queue_size, stop, queue_bytes, min_items=max(batches[i], batches[i + 1]))
             for i in range(len(calls) + 1)]

    def source_worker() -> None:
        try:
            while (p := src.pull()) is not END:
                src.count()
                links[0].put(p)
            links[0].put(END)
        except Stopped:
            stop.set()
        finally:
            src.close()

    def stage_worker(i: int) -> None:
        try:
            _run_stage(calls[i], links[i], links[i + 1])
        except Stopped:
            stop.set()
        except BaseException as e:  # noqa: BLE001 - e.g. the queue machinery itself
            failure.record(e, calls[i].name, "internal")
            stop.set()
        finally:
            calls[i].close()
            if failure.exc is not None:
                stop.set()

    workers = [threading.Thread(target=source_worker, name=f"fsvideo-{src.name}", daemon=True)]
    workers += [threading.Thread(target=stage_worker, args=(i,), name=f"fsvideo-{c.name}", daemon=True)
                for i, c in enumerate(calls)]
    interrupted: BaseException | None = None
    completed = False
    for w in workers:
        w.start()
    try:
        last = links[-1]
        while True:
            item = last.get()
            if item is END:
                completed = True
                break
            snk.deliver(item)
    except Stopped:
        pass
    except KeyboardInterrupt as e:
        interrupted = e
    finally:
        if not completed:  # failure, Ctrl-C, or an exception from progress(): stop everyone
            stop.set()
        late = _join_all(workers, join_timeout)
    interrupted = interrupted or late
    if interrupted is not None:
        raise interrupted


def _join_all(workers: list[threading.Thread], timeout: float) -> KeyboardInterrupt | None:
    """Join ``workers``; a Ctrl-C (or SIGTERM, SIGHUP) meanwhile does not cut the wait short, and the first
    is returned: the caller raises it even when the stream had ended.  A signal sent from a stage's thread
    reaches the main thread's handler at its next bytecode, which may be here, after the last packet;
    dropped here, the run finished as if never stopped."""
    deadline = time.monotonic() + timeout
    late: KeyboardInterrupt | None = None
    pending = list(workers)
    while pending:
        try:                        # the handler may raise at any bytecode of the loop, not only in join()
            while pending:
                w = pending[0]
                w.join(timeout=max(0.0, min(POLL_S * 4, deadline - time.monotonic())))
                if w.is_alive() and time.monotonic() >= deadline:
                    log.error("thread %s did not stop within %.0f s (stuck inside a stage call)", w.name, timeout)
                if not w.is_alive() or time.monotonic() >= deadline:
                    pending.pop(0)
        except KeyboardInterrupt as e:  # while shutting down: keep shutting down, then stop the caller
            log.warning("interrupted while stopping; still waiting for %s", ", ".join(w.name for w in pending))
            late = late or e
    return late


def _sequential(src: Source, calls: list[StageCall], snk: Sink, failure: Failure) -> None:
    """Frame by frame in the caller's thread: each packet goes through every stage before the next is read."""
    set_up: list[StageCall] = []

    def push(i: int, packets: list[Packet]) -> None:
        for p in packets:
            if i == len(calls):
                snk.deliver(p)
            else:
                push(i + 1, calls[i].process([p]))

    try:
        for sc in calls:
            sc.setup()
            set_up.append(sc)
        while (p := src.pull()) is not END:
            src.count()
            push(0, [p])
        for i, sc in enumerate(calls):
            push(i + 1, sc.flush())
    except Stopped:
        pass
    finally:
        src.close()
        for sc in reversed(set_up):
            sc.close()


def run_chain(stages: Sequence[Stage], *, source: Iterable[Packet] | None = None,
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
    ends = {0: src_stage, -1: sink_stage}
    counts = {i: Counter() for i, st in ends.items() if st is not None}
    for i, c in counts.items():
        ends[i].bind_counts(c)
    try:
        if sink_stage is not None:
            sink_stage.setup()
        stats = run_pipeline(source, stages, sink, source_keys=source_keys, **kwargs)
    finally:
        if sink_stage is not None:
            sink_stage.close()
    for i, c in counts.items():           # what the source and sink stages reported
        stats.stages[i].counts.update(c)
    return stats


def _source_from_stage(stage: SourceStage) -> Iterator[Packet]:
    stage.setup()
    try:
        yield from stage.packets()
    finally:
        stage.close()


__all__ = ["ProgressFn", "run_chain", "run_pipeline"]
