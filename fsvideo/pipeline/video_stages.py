"""The video ends of a chain: ``decode`` (source) and ``encode_video`` (sink).

Both wrap objects handed in as components, so opening files and finishing them atomically stays
at the call site::

    info = probe(src)
    with atomic_output(dst) as tmp, VideoWriter(tmp, info, audio_from=src) as writer:
        stages = build_chain("edit", Components(reader=VideoReader(src, info=info), writer=writer, ...))
        run_chain(stages)

``decode`` adds to each packet: ``index`` (0-based), ``pts`` (source time base), ``time``
(seconds), ``duration`` (ticks or None) and ``image`` (uint8 HxWx3 RGB, upright).
``encode_video`` writes ``packet[key]`` (default ``output``) with the packet's ``pts``; a
``VideoWriter`` or an ``ImageWriter`` (single image) works as the writer.
"""
from __future__ import annotations

from typing import Any, Iterator

from fsvideo.pipeline.chain import register_stage
from fsvideo.pipeline.components import Components
from fsvideo.pipeline.stage import Packet, SinkStage, SourceStage

FRAME_KEYS = ("index", "pts", "time", "duration", "image")


class DecodeStage(SourceStage):
    """Turns :class:`~fsvideo.video.Frame` objects (any iterable of them) into packets."""

    name = "decode"
    adds = FRAME_KEYS

    def __init__(self, reader: Any):
        self.reader = reader

    def packets(self) -> Iterator[Packet]:
        for f in self.reader:
            yield {"index": f.index, "pts": f.pts, "time": f.time, "duration": f.duration, "image": f.image}

    def __len__(self) -> int:
        return len(self.reader)


class EncodeVideoStage(SinkStage):
    """Writes ``packet[key]`` (uint8 HxWx3 RGB) with the packet's timing into a writer."""

    name = "encode_video"

    def __init__(self, writer: Any, key: str = "output"):
        self.writer = writer
        self.key = key
        self.needs = (key, "pts")

    def consume(self, packet: Packet) -> None:
        self.writer.write(packet[self.key], pts=packet["pts"], duration=packet.get("duration"))


@register_stage("decode")
def make_decode(components: Components) -> DecodeStage:
    """``components.reader``: a :class:`~fsvideo.video.VideoReader` (or any iterable of Frames)."""
    return DecodeStage(components.need("reader", "decode"))


@register_stage("encode_video")
def make_encode_video(components: Components, *, key: str = "output") -> EncodeVideoStage:
    """``components.writer``: a VideoWriter or ImageWriter; ``key``: the packet image to write."""
    return EncodeVideoStage(components.need("writer", "encode_video"), key=key)
