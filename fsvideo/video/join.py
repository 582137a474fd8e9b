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
   them: together the spans hold every packet once.  Every audio stream is joined onto its own
   track, with the source's language tag; a span holds only the tracks with packets in it (an MP4
   keeps no empty track), and the source's packets tell which they are.  Subtitle streams are taken
   from the source itself (:class:`~fsvideo.video.subtitles.SubtitlePassthrough`, on the joined
   file's clock), as a single run writes them; the span files' own copies are not used.

The span files must come from the same encoder settings (same codec parameters); the join checks
the codec headers and refuses otherwise, since concatenated packets would not decode.  Audio that
the writer had to re-encode (a container that cannot hold the source codec) is not joined
losslessly: each span would carry its own encoder priming, so :func:`join_segments` refuses it.
"""
from __future__ import annotations

import bisect
import logging
import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av

from fsvideo.errors import InputError, PipelineError
from fsvideo.video.audio import _ONE_AUDIO_STREAM, language_tag
from fsvideo.video.reader import TIME_EPS, in_span
from fsvideo.video.subtitles import SubtitlePassthrough
from fsvideo.video.writer import container_tags

log = logging.getLogger(__name__)


def frame_times(path: str | os.PathLike, info=None) -> list[float]:
    """Times (seconds, player clock as in ``Frame.time``) of every video frame, sorted, from packets only.

    Packets an MP4 edit list cuts off (flagged discard: frames before the edit's start, e.g. the
    B-frame lead-in of a trimmed phone clip) are not listed: the decoder drops them, so listing them
    numbered every frame after them wrongly (the studio showed frame ``i + 3`` as ``i``).
    """
    from fsvideo.video import probe
    info = info if info is not None else probe(path)
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        tb = Fraction(v.time_base) if v.time_base else info.time_base
        pts = sorted(p.pts for p in c.demux(v) if p.pts is not None and p.size and not p.is_discard)
    return [float(p * tb) - info.start_time for p in pts]


def span_times(times: Sequence[float], start: float | None = None, end: float | None = None) -> list[float]:
    """The times of ``times`` in ``[start, end)`` (None: open), as :class:`~fsvideo.video.VideoReader` reads them."""
    return [t for t in times if in_span(t, start, end)]


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
        return in_span(t, self.start, self.end)

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


def _packet_pts(path) -> tuple[tuple[list[int], Fraction], list[tuple[list[int], Fraction]], list[tuple]]:
    """Sorted timestamps of the packets (no decoding) and the time base of the first video stream and
    of every audio stream, read in one pass, and each audio stream's ``(codec, language tag or None)``."""
    with av.open(str(path), metadata_errors="replace") as c:
        video, audio = list(c.streams.video[:1]), list(c.streams.audio)
        pts: dict[int, list[int]] = {s.index: [] for s in video + audio}
        for p in c.demux(*video, *audio) if pts else ():          # (demux() of no stream reads them all)
            if p.pts is not None and p.size:
                pts[p.stream.index].append(p.pts)
        table = [(sorted(pts[s.index]), Fraction(s.time_base)) for s in video + audio]
        described = [(s.codec_context.name, (s.metadata or {}).get("language")) for s in audio]
    return table[0] if video else ([], None), table[len(video):], described


class _Clock:
    """Where the first packet of a span belongs on the joined file's clock (seconds, exact).

    Containers round a track's start to their movie time scale (MP4: milliseconds), so a span
    file's first timestamp read back can be off by a fraction of a millisecond; every span is
    therefore placed from the *source* packet that starts it, exactly as a single run writes it:
    the video from the source's video packets, each audio stream from that stream's packets.

    Attributes:
        audio: per source audio stream (in order), its packet times (absolute seconds, sorted) and
            time base, as the writer copies them.
        codecs, languages: per source audio stream, its codec name and language tag (or None).
    """

    def __init__(self, like, base: float, one_audio: bool = False):
        self.like, self.base = like, base
        (self.video, self.vtb), audio, described = _packet_pts(like.path)
        self.audio: list[tuple[list[float], list[int], Fraction]] = [
            ([float(p * tb) for p in pts], pts, tb) for pts, tb in audio]
        self.codecs: list[str] = [codec for codec, _ in described]
        self.languages: list[str | None] = [lang for _, lang in described]
        if one_audio:                   # a container of one audio stream: the writer copied the first
            self.audio, self.codecs, self.languages = self.audio[:1], self.codecs[:1], self.languages[:1]

    def first_video(self, start: float | None) -> Fraction:
        lo = -math.inf if start is None else start - TIME_EPS          # VideoReader's rule for --start
        p = next(p for p in self.video if float(p * self.vtb) - self.like.start_time >= lo)
        return (p - _clock_ticks(self.base, self.vtb)) * self.vtb

    def _first(self, j: int, start: float | None) -> int:
        """Index of the first packet of source audio stream ``j`` the writer copies for ``start``."""
        lo = -math.inf if not start else self.like.start_time + start - 1e-9   # VideoWriter's rule
        return bisect.bisect_left(self.audio[j][0], lo)

    def first_audio(self, j: int, start: float | None) -> Fraction:
        """Where the first packet of source audio stream ``j`` in a span from ``start`` belongs."""
        _, pts, tb = self.audio[j]
        return (pts[self._first(j, start)] - _clock_ticks(self.base, tb)) * tb

    def audio_streams(self, n: int, start: float | None, end: float | None) -> list[int] | None:
        """Which source audio stream each of a span file's ``n`` audio streams is (in order), or None.

        An MP4/MOV keeps no track without packets, so a span where a track has not started yet (or
        has ended) holds fewer audio streams than the source: those the writer copied a packet of,
        by its rule (``[start, end)``, no start: from the first packet).
        """
        if n == len(self.audio) or n == 0:
            return list(range(n))
        hi = math.inf if end is None else self.like.start_time + end - 1e-9
        held = [j for j, (times, _, _) in enumerate(self.audio)
                if self._first(j, start) < len(times) and times[self._first(j, start)] < hi]
        return held if len(held) == n else None


def join_segments(parts: Sequence[str | os.PathLike], out: str | os.PathLike, like,
                  starts: Sequence[float | None], rotation: int = 0, end: float | None = None) -> int:
    """Concatenate span files (written by VideoWriter with ``start=starts[i]``) into ``out`` losslessly.

    Every audio stream is carried: a span's audio streams are the source's (those with packets in
    the span), each joined onto its own output track with the source's language tag, as a single
    run writes them.  The source's subtitle streams are carried from the source on the joined clock.

    Args:
        parts: span files in time order.
        out: the joined file (give the temporary path of :func:`fsvideo.utils.atomic_output`).
        like: the source's VideoInfo (the source's packets place the spans on the clock).
        starts: each span's ``start`` as given to its writer (None for the beginning).
        rotation: display rotation to write (the writer's ``keep_rotation`` choice).
        end: the last span's ``end`` as given to its writer (None: to the end of the source).

    Returns the number of video packets written.
    """
    if len(parts) != len(starts) or not parts:
        raise ValueError("one start per part, at least one part")
    one_audio = Path(parts[0]).suffix.lower() in _ONE_AUDIO_STREAM
    clock = _Clock(like, like.start_time + (starts[0] or 0.0), one_audio)
    ends = [*starts[1:], end]
    ins = [av.open(str(p)) for p in parts]
    try:
        v0 = ins[0].streams.video[0]
        maps = [_span_audio(p, c, v0, parts[0], clock, a, b) for p, c, a, b in zip(parts, ins, starts, ends)]
        with av.open(str(out), mode="w") as o:
            o.metadata.update(container_tags(dict(ins[0].metadata)))   # the spans' (the source's and the comment)
            vo = o.add_stream_from_template(v0)
            if rotation:
                vo.set_display_rotation(rotation)
            # a span before an audio track starts or after it ends does not hold it: any span's serves
            templates: dict[int, object] = {}
            for c, m in zip(ins, maps):
                for s, j in zip(c.streams.audio, m):
                    templates.setdefault(j, s)
            aos = {}
            for j in sorted(templates):
                aos[j] = o.add_stream_from_template(templates[j])
                if clock.languages[j]:
                    aos[j].metadata["language"] = language_tag(clock.languages[j], Path(out).suffix)
            subs = SubtitlePassthrough(o, Path(like.path), offset_s=clock.base, start=starts[0],
                                       end_abs=None if end is None else like.start_time + end, shown=str(out),
                                       warn=False)   # (each span's writer warned about streams left out)
            try:
                n = 0
                for p, c, m, s in zip(parts, ins, maps, starts):
                    tracks = {a.index: (j, aos[j]) for a, j in zip(c.streams.audio, m)}
                    n += _copy_span(p, c, o, vo, tracks, clock, s, subs.pump)
                subs.pump(None)
            finally:
                subs.close()
    finally:
        for c in ins:
            c.close()
    log.info("joined %d spans into %s (%d video packets, %d audio streams, no re-encoding)", len(parts), out, n,
             len(aos))
    return n


def _span_audio(path, c, v0, first, clock: _Clock, start: float | None, end: float | None) -> list[int]:
    """Checks span file ``c`` joins losslessly; returns the source audio stream each of its audio streams is."""
    if not c.streams.video or not _same_codec(c.streams.video[0], v0):
        raise PipelineError(f"{path} was encoded differently from {first}; the spans cannot be joined losslessly",
                            hint="run every rank with the same fsvideo, FFmpeg and --codec/--crf settings")
    m = clock.audio_streams(len(c.streams.audio), start, end)
    if m is None:
        raise PipelineError(f"{path} holds {len(c.streams.audio)} audio streams, which do not match the "
                            f"{len(clock.audio)} of {clock.like.path} in its span; the spans cannot be joined",
                            hint="write every span from this source with the same fsvideo and --start/--end")
    for s, j in zip(c.streams.audio, m):
        if s.codec_context.name != clock.codecs[j]:
            raise PipelineError(f"{path}: its audio was re-encoded ({clock.codecs[j]} -> "
                                f"{s.codec_context.name}), so the spans cannot be joined without a gap at each seam",
                                hint="write an .mp4/.mkv output (copies the audio), or do not split the video")
    return m


def _copy_span(path, c, o, vo, tracks: dict, clock: _Clock, start: float | None, pump_subtitles) -> int:
    """Copy one span file's packets into ``o``, moved so its first packets land where the source's are.

    ``pump_subtitles(t)`` is called before each video packet with its output time (seconds), so the
    subtitle cues are interleaved with the video.

    ``tracks``: each of the span's audio stream indices -> (source audio stream, output stream).  Timestamps
    are handed to the muxer in the *source* stream's time base, as the writer handed them, so the
    muxer rounds them exactly as in a single run (span files may use a finer one).
    """
    v, audio = c.streams.video[0], list(c.streams.audio)
    src_tb = {v.index: clock.vtb, **{s.index: clock.audio[tracks[s.index][0]][2] for s in audio}}
    dest = {v.index: vo, **{s.index: tracks[s.index][1] for s in audio}}
    video_pts, audio_pts, _ = _packet_pts(path)
    have = {v.index: video_pts, **dict(zip((s.index for s in audio), audio_pts))}
    shift = {}
    for i, (pts, tb) in have.items():
        if pts:                                       # (an empty track of an .mkv span has none to place)
            want = clock.first_video(start) if i == v.index else clock.first_audio(tracks[i][0], start)
            shift[i] = int(want / src_tb[i]) - round(pts[0] * tb / src_tb[i])
    n = 0
    for pkt in c.demux(v, *audio):
        if pkt.dts is None and pkt.pts is None:
            continue                                  # the demuxer's flush packet
        i = pkt.stream.index
        scale = Fraction(pkt.time_base) / src_tb[i]
        if pkt.pts is not None:
            pkt.pts = round(pkt.pts * scale) + shift[i]
        if pkt.dts is not None:
            pkt.dts = round(pkt.dts * scale) + shift[i]
        if pkt.duration:
            pkt.duration = round(pkt.duration * scale)
        pkt.time_base = src_tb[i]
        pkt.stream = dest[i]
        if i == v.index and pkt.pts is not None:
            pump_subtitles(float(pkt.pts * src_tb[i]))
        o.mux(pkt)
        n += i == v.index
    return n


__all__ = ["SpanWriter", "frame_times", "join_segments", "span_times", "split_spans"]
