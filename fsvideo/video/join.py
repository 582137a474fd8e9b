"""Split a video into time spans and join the separately encoded spans without re-encoding.

A long video edited on several processes (``torchrun ... fsvideo edit long.mp4 --split-time``):

1. :func:`frame_times` lists the frame times from the packets (no decoding) and :func:`split_spans`
   cuts them into contiguous spans of about equal frame counts, each starting on a frame.
2. Each rank edits its span ``[a, b)`` reading some context around it, and writes only the span
   through a :class:`SpanWriter`, into a file of its own whose clock starts at ``a``.  A fresh
   encoder starts every span with a key frame, so each span file decodes on its own.
3. :func:`join_segments` copies the packets of the span files one after the other into the final
   file, moving each span's timestamps by where it starts.  No frame is decoded or re-encoded, and
   the audio packets (each span file holds the source audio packets that start inside its span,
   copied as is by :class:`~fsvideo.video.VideoWriter`) come back exactly as a single run copies
   them: together the spans hold every packet once.

The span files must come from the same encoder settings (same codec parameters); the join checks
the codec headers and refuses otherwise, since concatenated packets would not decode.  Audio that
the writer had to re-encode (a container that cannot hold the source codec) is not joined
losslessly: each span would carry its own encoder priming, so :func:`join_segments` refuses it.
"""
from __future__ import annotations

import logging
import math
import os
from fractions import Fraction
from typing import Sequence

import av

from fsvideo.errors import InputError, PipelineError

log = logging.getLogger(__name__)

_EPS = 1e-6  # seconds; the tolerance VideoReader uses for start / end


def frame_times(path: str | os.PathLike, info=None) -> list[float]:
    """Times (seconds, player clock as in ``Frame.time``) of every video frame, sorted, from packets only."""
    from fsvideo.video import probe
    info = info if info is not None else probe(path)
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        tb = Fraction(v.time_base) if v.time_base else info.time_base
        pts = sorted(p.pts for p in c.demux(v) if p.pts is not None and p.size)
    return [float(p * tb) - info.start_time for p in pts]


def span_times(times: Sequence[float], start: float | None = None, end: float | None = None) -> list[float]:
    """The times of ``times`` in ``[start, end)`` (None: open), as :class:`~fsvideo.video.VideoReader` reads them."""
    return [t for t in times if (start is None or t >= start - _EPS) and (end is None or t < end - _EPS)]


def split_spans(times: Sequence[float], parts: int, start: float | None = None,
                end: float | None = None) -> list[tuple[float | None, float | None]]:
    """Cut the frames of ``[start, end)`` into at most ``parts`` contiguous spans of about equal length.

    Returns ``[(a_0, b_0), (a_1, b_1), ...]`` with ``b_i == a_{i+1}`` (a frame time), ``a_0 = start``
    and the last ``b = end`` (None stays None: to the end).  Fewer spans come back when there are
    fewer frames than parts.
    """
    if parts < 1:
        raise ValueError("parts must be at least 1")
    inside = span_times(times, start, end)
    if not inside:
        raise InputError("no frame between the given --start and --end", hint="check --start/--end")
    n = min(parts, len(inside))
    cuts = [inside[(i * len(inside)) // n] for i in range(1, n)]
    bounds = [start, *cuts, end]
    return [(bounds[i], bounds[i + 1]) for i in range(n)]


class SpanWriter:
    """Passes to ``writer`` only the frames whose time is in ``[start, end)``; the rest was context.

    Args:
        writer: a :class:`~fsvideo.video.VideoWriter` made with the same ``start`` / ``end``.
        info: the source's VideoInfo (time base and start time turn ``pts`` into seconds).
        start, end: the span (seconds, player clock; None: open).

    Attributes:
        kept: frames written so far.
    """

    def __init__(self, writer, info, start: float | None, end: float | None):
        self.writer, self.info = writer, info
        self.start, self.end = start, end
        self.kept = 0

    def inside(self, pts: int | None) -> bool:
        """True when the frame at ``pts`` is in the span (written), False when it is context."""
        if pts is None:
            raise PipelineError("a frame without a timestamp reached a span writer",
                                hint="split only videos whose frames carry timestamps")
        t = float(pts * self.info.time_base) - self.info.start_time
        return (self.start is None or t >= self.start - _EPS) and (self.end is None or t < self.end - _EPS)

    def write(self, image, pts: int | None = None, *, time: float | None = None, duration: int | None = None):
        if self.inside(pts):
            self.writer.write(image, pts=pts, duration=duration)
            self.kept += 1

    def write_frame(self, frame, image=None) -> None:
        self.write(frame.image if image is None else image, pts=frame.pts, duration=frame.duration)

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> "SpanWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.writer.__exit__(exc_type, exc, tb)


def _clock_ticks(seconds: float, tb: Fraction) -> int:
    """Where a :class:`~fsvideo.video.VideoWriter` with ``start`` puts its t=0, in ticks of ``tb``.

    The writer subtracts ``floor(offset_s / tb + 1e-9)`` from every source timestamp (video and
    copied audio alike).
    """
    return int(math.floor(seconds / tb + 1e-9))


def _same_codec(a, b) -> bool:
    ca, cb = a.codec_context, b.codec_context
    return (ca.name == cb.name and bytes(ca.extradata or b"") == bytes(cb.extradata or b"")
            and (ca.width, ca.height) == (cb.width, cb.height))


def _packet_pts(path, kind: str) -> tuple[list[int], Fraction | None]:
    """Sorted timestamps of the first ``kind`` stream's packets (no decoding) and its time base."""
    with av.open(str(path)) as c:
        streams = c.streams.video if kind == "video" else c.streams.audio
        if not streams:
            return [], None
        s = streams[0]
        return sorted(p.pts for p in c.demux(s) if p.pts is not None and p.size), Fraction(s.time_base)


class _Clock:
    """Where the first packet of a span belongs on the joined file's clock (seconds, exact).

    Containers round a track's start to their movie time scale (MP4: milliseconds), so a span
    file's first timestamp read back can be off by a fraction of a millisecond; every span is
    therefore placed from the *source* packet that starts it, exactly as a single run writes it.
    """

    def __init__(self, like, base: float):
        self.like, self.base = like, base
        self.video, self.vtb = _packet_pts(like.path, "video")
        self.audio, self.atb = _packet_pts(like.path, "audio") if like.has_audio else ([], None)

    def first_video(self, start: float | None) -> Fraction:
        lo = -math.inf if start is None else start - _EPS          # VideoReader's rule for --start
        p = next(p for p in self.video if float(p * self.vtb) - self.like.start_time >= lo)
        return (p - _clock_ticks(self.base, self.vtb)) * self.vtb

    def first_audio(self, start: float | None) -> Fraction:
        lo = -math.inf if not start else self.like.start_time + start - 1e-9   # VideoWriter's rule
        p = next(p for p in self.audio if float(p * self.atb) >= lo)
        return (p - _clock_ticks(self.base, self.atb)) * self.atb


def join_segments(parts: Sequence[str | os.PathLike], out: str | os.PathLike, like,
                  starts: Sequence[float | None], rotation: int = 0) -> int:
    """Concatenate span files (written by VideoWriter with ``start=starts[i]``) into ``out`` losslessly.

    Args:
        parts: span files in time order.
        out: the joined file (give the temporary path of :func:`fsvideo.utils.atomic_output`).
        like: the source's VideoInfo (the source's packets place the spans on the clock).
        starts: each span's ``start`` as given to its writer (None for the beginning).
        rotation: display rotation to write (the writer's ``keep_rotation`` choice).

    Returns the number of video packets written.
    """
    if len(parts) != len(starts) or not parts:
        raise ValueError("one start per part, at least one part")
    clock = _Clock(like, like.start_time + (starts[0] or 0.0))
    ins = [av.open(str(p)) for p in parts]
    try:
        v0 = ins[0].streams.video[0]
        # a span before an audio track starts or after it ends holds no audio stream: any span's serves
        a0 = next((c.streams.audio[0] for c in ins if c.streams.audio), None)
        for p, c in zip(parts, ins):
            if not c.streams.video or not _same_codec(c.streams.video[0], v0):
                raise PipelineError(f"{p} was encoded differently from {parts[0]}; the spans cannot be joined losslessly",
                                    hint="run every rank with the same fsvideo, FFmpeg and --codec/--crf settings")
            if c.streams.audio and c.streams.audio[0].codec_context.name != like.audio_codec:
                raise PipelineError(f"{p}: its audio was re-encoded ({like.audio_codec} -> "
                                    f"{c.streams.audio[0].codec_context.name}), so the spans cannot be joined "
                                    "without a gap at each seam",
                                    hint="write an .mp4/.mkv output (copies the audio), or do not split the video")
        with av.open(str(out), mode="w") as o:
            vo = o.add_stream_from_template(v0)
            if rotation:
                vo.set_display_rotation(rotation)
            ao = o.add_stream_from_template(a0) if a0 is not None else None
            n = 0
            for p, c, s in zip(parts, ins, starts):
                n += _copy_span(p, c, o, vo, ao, clock, s)
    finally:
        for c in ins:
            c.close()
    log.info("joined %d spans into %s (%d video packets, no re-encoding)", len(parts), out, n)
    return n


def _copy_span(path, c, o, vo, ao, clock: _Clock, start: float | None) -> int:
    """Copy one span file's packets into ``o``, moved so its first packets land where the source's are.

    Timestamps are handed to the muxer in the *source* stream's time base, as the writer handed
    them, so the muxer rounds them exactly as in a single run (span files may use a finer one).
    """
    streams = [c.streams.video[0]] + ([c.streams.audio[0]] if ao is not None and c.streams.audio else [])
    src_tb = {"video": clock.vtb, "audio": clock.atb}
    shift = {}
    for s in streams:
        pts, tb = _packet_pts(path, s.type)
        if pts:
            want = clock.first_video(start) if s.type == "video" else clock.first_audio(start)
            shift[s.type] = int(want / src_tb[s.type]) - round(pts[0] * tb / src_tb[s.type])
    n = 0
    for pkt in c.demux(streams):
        if pkt.dts is None and pkt.pts is None:
            continue                                  # the demuxer's flush packet
        kind = pkt.stream.type
        scale = Fraction(pkt.time_base) / src_tb[kind]
        if pkt.pts is not None:
            pkt.pts = round(pkt.pts * scale) + shift[kind]
        if pkt.dts is not None:
            pkt.dts = round(pkt.dts * scale) + shift[kind]
        if pkt.duration:
            pkt.duration = round(pkt.duration * scale)
        pkt.time_base = src_tb[kind]
        pkt.stream = vo if kind == "video" else ao
        o.mux(pkt)
        n += kind == "video"
    return n


__all__ = ["SpanWriter", "frame_times", "join_segments", "span_times", "split_spans"]
