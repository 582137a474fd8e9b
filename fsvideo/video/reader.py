"""Streaming decode: :class:`VideoReader` yields one :class:`Frame` (uint8 HxWx3 RGB, upright) at a time.

Frames keep the source's presentation timestamps (``Frame.pts``, stream time base) so the writer
can keep variable frame rates; ``Frame.time`` is seconds on the player's clock (see
:mod:`fsvideo.video.probe`).  Colour: YUV -> RGB uses the source's tagged matrix and range (the
swscale default BT.601 when untagged), rounded: OpenCV for 8-bit 4:2:0 (BT.601, BT.709, BT.2020...,
:class:`~fsvideo.video.colour.Yuv420ToRgb`), swscale otherwise; the writer converts back with the
same tags.
A still image is a one-frame video, so the pipeline treats both alike.  A stream that changes its
frame size mid-way (a broadcast, a screen recording) is scaled back to the probed first frame's size
(what ``ffmpeg`` does), with a warning, so every frame of a video has one size.
"""
from __future__ import annotations

import heapq
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter

from fsvideo.cores import codec_threads
from fsvideo.errors import InputError
from fsvideo.video.colour import EXACT_COLOUR, Yuv420ToRgb
from fsvideo.video.images import read_image
from fsvideo.video.probe import VideoInfo, _open_input, probe, video_stream

log = logging.getLogger(__name__)

#: Seconds of tolerance in the ``start <= t < end`` rule of ``--start`` / ``--end`` (every span follows it).
TIME_EPS = 1e-6


def in_span(t: float, start: float | None, end: float | None) -> bool:
    """Whether a frame at ``t`` seconds is in ``[start, end)`` (None: open) by the reader's rule."""
    return (start is None or t >= start - TIME_EPS) and (end is None or t < end - TIME_EPS)


def check_span(start: float | None, end: float | None) -> None:
    """Raise InputError unless ``--start`` / ``--end`` are finite seconds with ``0 <= start < end``
    (None: the file's own).  A NaN passed every comparison and failed deep in a run (an internal
    error); a negative start opened the studio's video and failed later in the page."""
    for name, v in (("--start", start), ("--end", end)):
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise InputError(f"{name} {v} is not a time in the video", hint="pass seconds >= 0, or leave it out")
    if start is not None and end is not None and end <= start:
        raise InputError(f"--end {end} is not after --start {start}", hint="pass --end greater than --start")


@dataclass
class Frame:
    """One decoded frame.

    Attributes:
        index: 0-based position among the frames the reader yielded (so 0 is the first frame at or
            after ``start``).
        pts: presentation timestamp in the source video stream's ``time_base`` (0 for an image).
        time: seconds from the container start (``(pts * time_base) - VideoInfo.start_time``).
        image: uint8 [H, W, 3] RGB, upright (rotation applied).
        duration: frame duration in ``time_base`` ticks when the container knows it, else None.
    """

    index: int
    pts: int
    time: float
    image: np.ndarray
    duration: int | None = None


def _avi_frames(container, v, reached: list[int]):
    """The frames of an AVI stream, stamped in display order.

    AVI stores no presentation timestamps, only each frame's slot (its decode-order index, the packet's
    ``dts``): FFmpeg's guesses come out shuffled with B-frames (0.04, 0.16, 0.12, ...) and late by the
    encoder's delay.  The frames leave the decoder in display order, so each takes the smallest slot
    not yet used (a skipped frame, an empty packet, takes none).  ``reached[0]`` becomes the number of
    slots read: the header counts slots, so a variable-rate AVI holds fewer frames than it lists."""
    slots: list[int] = []
    for packet in container.demux(v):
        if packet.size and packet.dts is not None:
            heapq.heappush(slots, packet.dts)
            reached[0] = max(reached[0], packet.dts + 1)
        for frame in packet.decode():
            if slots:
                frame.pts = heapq.heappop(slots)
            yield frame


def _declared_length(v) -> float | None:
    """Seconds the video stream says it lasts: Matroska/WebM's DURATION tag (``00:00:01.600000000``; the
    container's duration also counts the audio), else the stream's own duration; None when neither is known."""
    tag = (v.metadata or {}).get("DURATION", "")
    try:
        h, m, sec = tag.split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except ValueError:
        pass
    return float(v.duration * v.time_base) if v.duration and v.time_base else None


def _warn_if_cut_short(path: Path, v, last: float, n: int, fps) -> None:
    """A container without a frame count (MKV, WebM, MPEG-TS) whose video stops well before the length it
    declares: a truncated file, or damage the demuxer could not get past (MKV gives up on the rest of a
    cluster).  Decoding simply ends there, so without this the output was silently shorter."""
    declared = _declared_length(v)
    step = 1 / float(fps or 25)
    if declared is not None and declared - (last + step) > 1.5 * step:
        log.warning("%s: its video stops at %.2f s (%d frames) but the file says it lasts %.2f s; it may be "
                    "truncated or damaged, and the rest is not in the output", path, last + step, n, declared)


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a counter-clockwise display ``rotation`` (degrees, multiple of 90) to [H, W, C] ``image``."""
    k = (int(rotation) // 90) % 4
    return np.ascontiguousarray(np.rot90(image, k=k)) if k else image


class VideoReader:
    """Stream the frames of a video (or the single frame of an image), decoding one at a time.

    Args:
        path: a video or image file.
        start, end: seconds (player clock, see the module docstring) to read; ``None`` for the
            beginning / the end.  Frames with ``start <= time < end`` are yielded.
        info: the file's :class:`VideoInfo` when already probed (saves a probe).
        threads: let FFmpeg decode with several threads (frame/slice threading).

    Iterating yields :class:`Frame` (uint8 [H, W, 3] RGB upright images); each iteration opens the
    file afresh and closes it at the end, so memory does not depend on the video's length.

    Example::

        for frame in VideoReader("talk.mp4", start=1.0, end=2.5):
            print(frame.index, frame.time, frame.image.shape)
    """

    def __init__(self, path: str | os.PathLike, start: float | None = None, end: float | None = None, *,
                 info: VideoInfo | None = None, threads: bool = True):
        self.info = info if info is not None else probe(path)
        self.path = Path(path)
        check_span(start, end)
        last = self.info.span[1]
        if not self.info.is_image and start is not None and last and start >= last:
            raise InputError(f"--start {start} is past the end of {self.path} ({last:.2f} s)",
                             hint="pass a smaller --start")
        self.start = start
        self.end = end
        self.threads = threads

    def __len__(self) -> int:
        """Estimated number of frames yielded (exact for images and indexed containers without trim)."""
        info = self.info
        if info.is_image:
            return 1
        if self.start is None and self.end is None:
            return info.n_frames
        lo, hi = info.span            # the video stream's own (its audio may start earlier or end later)
        s = max(self.start or 0.0, lo)
        e = min(self.end, hi) if self.end is not None else hi
        return max(0, int(round((e - s) * float(info.fps))))

    def __iter__(self) -> Iterator[Frame]:
        if self.info.is_image:
            yield Frame(index=0, pts=0, time=0.0, image=read_image(self.path), duration=None)
            return
        yield from self._decode()

    def _decode(self) -> Iterator[Frame]:
        # With a start time, seek to the key frame before it; if the container's seek lands past
        # `start` (some formats seek imprecisely), start again from the beginning: nothing has been
        # yielded yet, so no frame is lost or repeated.
        attempts = (True, False) if self.start else (False,)
        for seek in attempts:
            done = yield from self._decode_from(seek)
            if done:
                return

    def _decode_from(self, seek: bool):
        """Yield the frames; return False (before yielding any) when a seek overshot ``start``."""
        info = self.info
        start, end = self.start, self.end
        container = _open_input(self.path)
        try:
            v = video_stream(container)
            if self.threads:
                v.thread_type = "AUTO"
                v.thread_count = codec_threads()    # 0: FFmpeg's choice, but within a CPU quota
            tb = Fraction(v.time_base) if v.time_base else info.time_base
            step = max(1, int(round(1 / (float(info.fps) * tb)))) if info.fps else 1
            if seek:
                target = int(math.floor((start + info.start_time) / tb))
                try:
                    container.seek(target, stream=v, backward=True, any_frame=False)
                except av.error.FFmpegError:
                    log.debug("seek failed in %s; decoding from the beginning", self.path)
                    return False
            # One swscale context for the whole video: frame.to_ndarray() builds a new one per frame,
            # which costs more than the conversion itself (2.3 against 0.6 ms a 1080p frame).
            rgb = VideoReformatter()
            to_rgb = Yuv420ToRgb()     # 8-bit 4:2:0 with a linear matrix (most video): OpenCV, same rounding
            index = 0
            resized = False
            prev_pts: int | None = None
            first, first_pts = True, 0
            # A frame shown more than two frame periods before one already decoded: the clock restarted
            # (clips joined end to end).  The writer cannot place it, and the audio copy failed at the end
            # of the run as "cannot finish writing ... check disk space".
            latest: float | None = None
            back_s = 2 / float(info.fps or 25)
            try:
                avi_slots = [0]
                frames = (_avi_frames(container, v, avi_slots) if container.format.name == "avi"
                          else container.decode(v))
                for frame in frames:
                    pts = frame.pts
                    if pts is None:
                        pts = frame.dts if frame.dts is not None else (prev_pts + step if prev_pts is not None else 0)
                    t = float(pts * tb) - info.start_time
                    if latest is not None and t < latest - back_s:
                        raise InputError(f"{self.path}: its timestamps jump back at frame {index} ({latest:.2f} s -> "
                                         f"{t:.2f} s), as in files joined end to end",
                                         hint="join the clips again with one clock (for an MPEG-TS, `ffmpeg -i IN -c copy "
                                              f"OUT.mp4`), or process the part before with --end {latest:.2f}")
                    latest = t if latest is None else max(latest, t)
                    if first and seek and t > start + TIME_EPS:
                        log.debug("seek overshot in %s (%.3f s > %.3f s); decoding from the start", self.path, t,
                                  start)
                        return False
                    if first:
                        first_pts = pts
                    first = False
                    if start is not None and t < start - TIME_EPS:
                        continue
                    if end is not None and t >= end - TIME_EPS:
                        break
                    prev_pts = pts
                    size = None
                    if (frame.width, frame.height) != (info.coded_width, info.coded_height) and info.coded_width:
                        size = info.coded_width, info.coded_height    # the stream changed size mid-way
                        if not resized:
                            log.warning("%s changes its frame size to %dx%d at frame %d (t=%.2f s); scaling such "
                                        "frames to the first frame's %dx%d", self.path, frame.width, frame.height,
                                        index, t, *size)
                        resized = True
                    image = to_rgb(frame) if size is None else None
                    if image is None:
                        image = rgb.reformat(frame, format="rgb24", src_color_range=int(frame.color_range) or None,
                                             width=size and size[0], height=size and size[1],
                                             interpolation=EXACT_COLOUR).to_ndarray()
                    image = upright(image, info.rotation)
                    dur = frame.duration if getattr(frame, "duration", None) else None
                    yield Frame(index=index, pts=int(pts), time=t, image=image, duration=dur)
                    index += 1
            except av.error.FFmpegError as e:
                good = float(prev_pts * tb) - info.start_time if prev_pts is not None else None
                where = f"frame {index}" + (f" (after t={good:.2f} s)" if good is not None else "")
                end_at = f" {math.floor(good * 100) / 100:.2f}" if good else ""   # rounded down: the last good frame out
                raise InputError(f"{self.path} is damaged at {where} (FFmpeg: {e})",
                                 hint=f"re-export the file, or process only the good part with --end{end_at}") from e
            if index == 0 and seek and first:    # the seek landed past every frame (MPEG-TS far from 0)
                log.debug("seek found no frame in %s; decoding from the start", self.path)
                return False
            if index == 0:
                trimmed = start is not None or end is not None
                span = "its video runs from {:.2f} s to {:.2f} s".format(*info.span)
                raise InputError(f"{self.path}: no frame decoded" + (f" between {start} s and {end} s" if trimmed else ""),
                                 hint=f"check --start/--end ({span})" if trimmed else "the file may be truncated; re-export it")
            read = avi_slots[0] if container.format.name == "avi" else index    # AVI: slots, with the empty ones
            if start is None and end is None and v.frames and read < 0.9 * v.frames:
                lead = float((first_pts - (v.start_time or 0)) * tb)     # first decoded frame after the stream's start
                if lead > 1.5 / float(info.fps or 25):
                    log.warning("%s: its first %.2f s of video could not be decoded (the stream does not begin "
                                "with a key frame, as in a cut copy); decoded %d of the %d frames its index lists, "
                                "from there on", self.path, lead, index, v.frames)
                else:
                    log.warning("%s: decoded %d of the %d frames its index lists; the file may be truncated",
                                self.path, index, v.frames)
            elif end is None and not v.frames and prev_pts is not None:
                _warn_if_cut_short(self.path, v, float((prev_pts - (v.start_time or 0)) * tb), index, info.fps)
            return True
        finally:
            container.close()
