"""The stage contract: what every stage of a chain is, and what a run reports.

A *packet* is a dict describing one frame (``index``, ``pts``, ``time``, ``image``...); each stage
reads some keys (``needs``) and adds others (``adds``).  :class:`Stage` is the one contract the
runner (:mod:`fsvideo.pipeline.runner`) relies on; a chain is checked against it once, before
anything runs (:func:`check_chain`).

Run counts (faces edited, frames without a face...) are reported by the stages themselves with
:meth:`Stage.count`; the runner collects them into :attr:`RunStats.counts`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

from fsvideo.errors import ConfigError

Packet = dict


class Stage(ABC):
    """Base class of a pipeline stage.

    Attributes:
        name: shown in errors and statistics.
        needs: packet keys this stage reads (checked against earlier stages once, at build time).
        adds: packet keys this stage adds (checked on every packet it returns).
        batch_size: packets per :meth:`process` call (the last batch of a stream may be smaller).
        window: most packets the stage may hold back between calls (a look-ahead window, e.g.
            temporal smoothing); 0 for a 1-in-1-out stage.  Only used to compute the memory bound.
        per_frame: True when :meth:`process` is a pure function of each packet (no state carried
            from one call to the next), so several workers may run it at once (the runner keeps
            the order).
        networks: its calls run the networks (encode, edit, generate): a threaded run gives such a
            per-frame stage the core budget's network workers instead of the CPU stages' workers
            (:mod:`fsvideo.pipeline.budget`).

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
    per_frame: bool = False
    networks: bool = False
    _counts: Counter | None = None

    def setup(self) -> None:
        """Prepare (allocate buffers, move a model to its device...); runs in the stage's thread."""

    @abstractmethod
    def process(self, packets: list[Packet]) -> list[Packet]:
        """The packets, updated (see the class docstring for the contract)."""

    def flush(self) -> list[Packet]:
        """Return the packets still held (look-ahead stages); called once at the end of the stream."""
        return []

    def close(self) -> None:
        """Release resources; called after the last packet and after a failure."""

    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to the run's count ``key`` (e.g. ``faces_edited``); see :attr:`RunStats.counts`."""
        if self._counts is None:
            self._counts = Counter()
        self._counts[key] += int(n)

    def bind_counts(self, counts: Counter) -> None:
        """Called by the runner before a run: :meth:`count` reports into ``counts`` from now on."""
        self._counts = counts

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} needs={list(self.needs)} adds={list(self.adds)}>"


class SourceStage(Stage):
    """The first stage of a declared chain: produces the packets (e.g. ``decode``)."""

    @abstractmethod
    def packets(self) -> Iterator[Packet]:
        """The stream, in order."""

    def process(self, packets: list[Packet]) -> list[Packet]:  # pragma: no cover - never called
        raise TypeError(f"source stage {self.name!r} takes no input packets")


class SinkStage(Stage):
    """The last stage of a declared chain: consumes the packets (e.g. ``encode_video``)."""

    @abstractmethod
    def consume(self, packet: Packet) -> None:
        """Take one packet (in stream order)."""

    def process(self, packets: list[Packet]) -> list[Packet]:
        for p in packets:
            self.consume(p)
        return packets


class FunctionStage(Stage):
    """A stage made from a function ``fn(packets: list[Packet]) -> list[Packet]``."""

    def __init__(self, name: str, fn: Callable[[list[Packet]], list[Packet]], *, needs: Sequence[str] = (),
                 adds: Sequence[str] = (), batch_size: int = 1, per_frame: bool = False,
                 networks: bool = False):
        self.name = name
        self.fn = fn
        self.needs = tuple(needs)
        self.adds = tuple(adds)
        self.batch_size = int(batch_size)
        self.per_frame = bool(per_frame)
        self.networks = bool(networks)

    def process(self, packets: list[Packet]) -> list[Packet]:
        return self.fn(packets)


@dataclass
class StageStats:
    """What one stage did: packets through it, calls, seconds spent inside it (not waiting), counts."""

    name: str
    packets: int = 0
    calls: int = 0
    busy_s: float = 0.0
    counts: Counter = field(default_factory=Counter)

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

    @property
    def counts(self) -> Counter:
        """What the stages reported with :meth:`Stage.count`, summed over stages (e.g. ``faces_edited``)."""
        total: Counter = Counter()
        for s in self.stages:
            total.update(s.counts)
        return total


def batch_size_of(stage: Stage) -> int:
    """The stage's batch size, checked (an integer >= 1)."""
    bs = stage.batch_size
    if not isinstance(bs, int) or isinstance(bs, bool) or bs < 1:
        raise ConfigError(f"stage {stage.name!r} has batch_size {bs!r}", hint="use an integer >= 1")
    return bs


def check_chain(stages: Sequence[Stage], source_keys: Iterable[str] | None = ()) -> None:
    """Check once, before running, that every stage keeps the contract and that its ``needs`` is
    provided by the source or an earlier stage (not checked when ``source_keys`` is None).

    Raises:
        ConfigError: naming the stage, the missing keys and the chain.
    """
    provided = None if source_keys is None else set(source_keys)
    names = " -> ".join(getattr(s, "name", type(s).__name__) for s in stages)
    for s in stages:
        if not isinstance(s, Stage):
            raise ConfigError(f"{s!r} is not a stage (subclass fsvideo.pipeline.Stage)")
        batch_size_of(s)
        if provided is None:
            continue
        missing = [k for k in s.needs if k not in provided]
        if missing:
            have = ", ".join(sorted(provided)) or "nothing"
            raise ConfigError(f"stage {s.name!r} needs {', '.join(missing)}, which no earlier stage adds "
                              f"(chain: {names}; available: {have})",
                              hint="put a stage that adds it earlier in the pipeline file")
        provided.update(s.adds)


def stage_workers(stage: Stage, workers: int = 1, network_workers: int = 1) -> int:
    """Workers a threaded run gives ``stage``: 1 unless it is per-frame; then ``network_workers`` for a
    stage that runs the networks and ``workers`` for the others."""
    if not stage.per_frame:
        return 1
    return network_workers if stage.networks else workers


def max_in_flight(stages: Sequence[Stage], queue_size: int, workers: int = 1, network_workers: int = 1) -> int:
    """The most packets that can exist at once in a threaded run (the memory bound).

    ``len(stages) + 1`` queues of ``queue_size``, plus what each stage holds (a batch and its
    look-ahead window; a per-frame stage run by several workers (:func:`stage_workers`) holds a
    batch in each), plus one packet in the source's hands and one in the sink's.
    """
    held = sum(batch_size_of(s) * stage_workers(s, workers, network_workers) + int(s.window or 0) for s in stages)
    return (len(stages) + 1) * queue_size + held + 2
