"""Reading a file's facts: :func:`probe` returns a :class:`VideoInfo` without decoding more than one frame.

Every way a file can be unusable (missing, empty, truncated, not a video, audio only, a codec this
FFmpeg cannot decode) becomes one :class:`~fsvideo.errors.InputError` naming the file and the fix.
A still image (by extension) is probed with Pillow and described as a one-frame video.

Clock.  ``VideoInfo.start_time`` is the container's first timestamp; frame times and trims count
from it (what a player shows).  Rotation.  ``width``/``height`` are the upright (displayed) size;
``rotation`` is the display matrix's counter-clockwise turn, which the reader undoes.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import av.error

from fsvideo.errors import InputError
from fsvideo.utils import check_input_file
from fsvideo.video.images import IMAGE_EXTENSIONS, read_image

log = logging.getLogger(__name__)

#: Extensions taken as videos when a folder is searched for inputs (any file PyAV opens also works by name).
#: MPEG-TS (.ts, a camera's AVCHD .mts/.m2ts) and phones' .3gp were read by name but skipped in a folder.
VIDEO_INPUT_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".flv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
                                    ".gif", ".ts", ".mts", ".m2ts", ".3gp"})

# Demuxers / codecs that mean "this is a still image", whatever the file is called.
_IMAGE_DEMUXERS = ("image2", "jpeg_pipe", "png_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe", "image2pipe")

_AV_TIME_BASE = 1_000_000
_HINT_CONVERT = "convert it first, e.g. `ffmpeg -i IN -c:v libx264 -c:a copy OUT.mp4`"


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a video (or still image) file, read by :func:`probe`.

    Attributes:
        path: the file.
        width, height: upright (displayed) frame size in pixels, rotation applied.
        fps: average frame rate (frames per second), e.g. ``Fraction(30000, 1001)``.
        time_base: unit of ``Frame.pts`` (seconds per tick) of the video stream.
        duration_s: duration of the video stream in seconds (0 for an image).
        n_frames: frame count, from the container index when it has one, else ``duration * fps``
            (an estimate: the decoded count may differ by a few frames).
        rotation: counter-clockwise degrees the display matrix turns the stored picture by
            (0, 90, 180 or -90); the reader undoes it.
        has_audio: the file has an audio stream (the writer can copy it).
        codec: video codec name (``h264``, ``hevc``...; ``image`` decoders for stills).
        pix_fmt: pixel format of the decoded frames (``yuv420p``, ``yuv420p10le``...).
        is_image: a still image read with Pillow (one frame).
        start_time: seconds of the container's first timestamp (``Frame.time`` counts from it).
        coded_width, coded_height: stored picture size (before rotation).
        audio_codec: codec of the first audio stream, or None.
        color: the source's colour tags (colorspace, color_range, color_primaries, color_trc) as
            FFmpeg integers; the writer copies them.
        end_time: where the video stream's presentation ends (seconds, player clock), or None.  An
            edit list can end it before the last frame's natural end; the writer keeps that end.
        video_start: where the video stream starts (seconds, player clock): after 0 where the audio
            begins first.  :attr:`span` is the video's ``(start, end)``.
        tags: the container's metadata (title, creation_time, location...); the writer carries them.
        sar: sample (pixel) aspect ratio of the stored picture, display width / stored width of a pixel
            (``Fraction(64, 45)`` for 16:9 PAL DV stored as 720x576; 1 for square pixels).  Frames are
            read in stored pixels; the face stages work on square pixels and the writer keeps it.
        interlaced: the first frame is interlaced (two fields woven, e.g. 1080i): frames are edited
            and written whole, as progressive frames (the writer's conversion warning says so).
    """

    path: Path
    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    duration_s: float
    n_frames: int
    rotation: int
    has_audio: bool
    codec: str
    pix_fmt: str
    is_image: bool = False
    start_time: float = 0.0
    coded_width: int = 0
    coded_height: int = 0
    audio_codec: str | None = None
    color: dict = field(default_factory=dict)
    end_time: float | None = None
    video_start: float = 0.0
    tags: dict = field(default_factory=dict)
    sar: Fraction = Fraction(1)
    interlaced: bool = False

    @property
    def span(self) -> tuple[float, float]:
        """Where the video stream starts and ends, seconds on the player clock (``Frame.time``'s).  A
        stream may start after the container (its audio begins first: the first frame is at 0.85 s)."""
        return self.video_start, self.end_time if self.end_time is not None else self.duration_s



def probe(path: str | os.PathLike) -> VideoInfo:
    """Read the facts of a video or image file without decoding more than its first frame.

    Raises:
        InputError: the file is missing, empty, not a video/image, truncated, has no video stream,
            or uses a codec this FFmpeg cannot decode.  The message names the file and the fix.

    Example::

        info = probe("talk.mp4")   # VideoInfo(width=640, height=360, fps=Fraction(30, 1), ...)
    """
    p = check_input_file(path, "video")
    if p.suffix.lower() in IMAGE_EXTENSIONS:
        return _probe_image(p)
    container = _open_input(p)
    try:
        return _probe_container(p, container)
    finally:
        container.close()


def _open_input(p: Path) -> av.container.InputContainer:
    try:
        return av.open(str(p), mode="r", metadata_errors="replace")
    except av.error.FFmpegError as e:
        raise _open_error(p, e) from e
    except (OSError, UnicodeDecodeError) as e:  # pragma: no cover - permissions races etc.
        raise InputError(f"{p} cannot be opened ({e})", hint="check the file") from e


def _open_error(p: Path, e: Exception) -> InputError:
    """Turn an av.open failure into a message about the file."""
    with open(p, "rb") as f:
        head = f.read(64)
    text = str(e)
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
        return InputError(f"{p} looks like a truncated or damaged MP4/MOV file (FFmpeg: {text})",
                          hint="re-export or re-download it; a recording that was cut off can "
                               "sometimes be repaired with `untrunc`")
    if head[:4] == b"\x1aE\xdf\xa3":
        return InputError(f"{p} looks like a damaged Matroska/WebM file (FFmpeg: {text})",
                          hint="re-export or re-download it")
    return InputError(f"{p} is not a video or image file FFmpeg can read (FFmpeg: {text})",
                      hint="pass a video (mp4, mov, mkv, webm, ...) or an image (jpg, png, ...)")


def _rotation_of(stream, first_frame) -> int:
    """Counter-clockwise display rotation: the decoded frame's display matrix, else a ``rotate`` tag."""
    rot = 0.0
    if first_frame is not None:
        try:
            rot = float(first_frame.rotation or 0)
        except (AttributeError, ValueError, TypeError):
            rot = 0.0
    if not rot:
        tag = (stream.metadata or {}).get("rotate")
        if tag:
            try:
                rot = -float(tag)  # the legacy tag is clockwise
            except ValueError:
                rot = 0.0
    if not math.isfinite(rot):
        return 0
    r = int(round(rot / 90.0)) * 90
    if abs(r - rot) > 1:
        log.warning("rotation of %.1f degrees is not a multiple of 90; using %d", rot, r)
    r = ((r + 180) % 360) - 180  # (-180, 180]
    return 180 if r == -180 else r


def _stream_fps(stream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < float(rate) < 1000:
            return Fraction(rate)
    return Fraction(25)


def _probe_container(p: Path, container) -> VideoInfo:
    fmt = container.format.name if container.format else ""
    if not container.streams.video:
        if container.streams.audio:
            raise InputError(f"{p} has no video stream (audio only)",
                             hint="pass a video file; fsvideo edits faces in video or images")
        raise InputError(f"{p} has no video stream", hint="pass a video file (mp4, mov, mkv, ...)")
    v = video_stream(container)
    if v is None:                              # an mp3's / m4a's cover picture only
        raise InputError(f"{p} has no video stream (audio with a cover picture)",
                         hint="pass a video file; fsvideo edits faces in video or images")
    ctx = v.codec_context
    codec = ctx.name if ctx is not None else (v.codec.name if getattr(v, "codec", None) else "unknown")
    # (by the demuxer only: an MJPEG or PNG *video* in MKV, whose frame count is unknown, is a video)
    if any(fmt.split(",")[0] == d for d in _IMAGE_DEMUXERS):
        kind = codec.upper() if codec != "mjpeg" else "JPEG"
        raise InputError(f"{p} is a {kind} image, not a video",
                         hint=f"rename it with an image extension (e.g. {p.stem}.jpg or .png) "
                              "to process it as an image")
    if ctx is None:
        raise InputError(f"{p}: FFmpeg has no decoder for its video codec", hint=_HINT_CONVERT)
    _check_not_truncated(p, container)
    first = _first_frame(p, container, v, codec)
    tb = Fraction(v.time_base) if v.time_base else Fraction(1, _AV_TIME_BASE)
    fps = _stream_fps(v)
    if v.duration is not None and v.duration > 0:
        duration = float(v.duration * tb)
    elif container.duration:
        duration = container.duration / _AV_TIME_BASE
    else:
        duration = 0.0
    if container.start_time is not None:
        start_time = container.start_time / _AV_TIME_BASE
    elif v.start_time is not None:
        start_time = float(v.start_time * tb)
    else:
        start_time = 0.0
    video_start = max(0.0, float(v.start_time * tb) - start_time) if v.start_time is not None else 0.0
    end_time = None
    if v.duration is not None and v.duration > 0:
        end_time = float(((v.start_time or 0) + v.duration) * tb) - start_time
        shown = duration
    else:                                        # the container's duration, from its start: the video's part
        shown = max(0.0, duration - video_start)
    n_frames = int(v.frames) if v.frames and v.frames > 0 else max(1, int(round(shown * float(fps))))
    rotation = _rotation_of(v, first)
    cw, ch = first.width, first.height
    w, h = (ch, cw) if rotation in (90, -90) else (cw, ch)
    audio = container.streams.audio[0] if container.streams.audio else None
    audio_codec = None
    if audio is not None:
        audio_codec = audio.codec_context.name if audio.codec_context is not None else "unknown"
    color = {"colorspace": int(first.colorspace), "color_range": int(first.color_range),
             "color_primaries": int(first.color_primaries), "color_trc": int(first.color_trc)}
    return VideoInfo(path=p, width=w, height=h, fps=fps, time_base=tb, duration_s=duration,
                     n_frames=n_frames, rotation=rotation, has_audio=audio is not None, codec=codec,
                     pix_fmt=first.format.name, is_image=False, start_time=start_time, coded_width=cw,
                     coded_height=ch, audio_codec=audio_codec, color=color, end_time=end_time, sar=_sar_of(v),
                     interlaced=bool(getattr(first, "interlaced_frame", False)), video_start=video_start,
                     tags=dict(container.metadata))


def _sar_of(stream) -> Fraction:
    """The stored picture's sample aspect ratio (1 when unset or nonsensical)."""
    try:
        sar = Fraction(stream.sample_aspect_ratio or 0)
    except (TypeError, ValueError, ZeroDivisionError):
        return Fraction(1)
    return sar if 0.1 < sar < 10 else Fraction(1)


def video_stream(container):
    """The video stream fsvideo reads: the first that is not an attached picture (the cover art an mp3,
    m4a or mp4 may carry as a one-frame "video" stream), or None."""
    for s in container.streams.video:
        if not s.disposition & av.stream.Disposition.attached_pic:
            return s
    return None


def _check_not_truncated(p: Path, container) -> None:
    """An indexed container (MP4/MOV/MKV with cues) whose samples point past the end of the file was cut off."""
    size = p.stat().st_size
    for stream in [video_stream(container)] + list(container.streams.audio[:1]):
        try:
            entries = stream.index_entries
            n = len(entries)
            if n == 0:
                continue
            last = entries[n - 1]
            end = int(last.pos) + int(last.size)
        except (AttributeError, IndexError, TypeError, ValueError):
            continue
        if last.pos >= 0 and end > size:
            inside = sum(1 for i in range(n) if 0 <= entries[i].pos and entries[i].pos + entries[i].size <= size)
            raise InputError(f"{p} is truncated: its index lists {n} {stream.type} samples but only {inside} "
                             f"are in the file ({size} bytes)",
                             hint="re-export or re-download it (`ffmpeg -i IN -c copy OUT.mp4` can salvage "
                                  "the readable part)")


def _first_frame(p: Path, container, v, codec: str):
    try:
        for frame in container.decode(v):
            return frame
    except av.error.InvalidDataError as e:
        raise InputError(f"{p}: its {codec} video is damaged or truncated (FFmpeg: {e})",
                         hint="re-export or re-download it") from e
    except av.error.FFmpegError as e:
        raise InputError(f"{p}: cannot decode its {codec} video (FFmpeg: {e})", hint=_HINT_CONVERT) from e
    raise InputError(f"{p}: no video frame could be decoded (truncated or damaged file?)",
                     hint="re-export or re-download it")


def _probe_image(p: Path) -> VideoInfo:
    img = read_image(p)
    h, w = img.shape[:2]
    return VideoInfo(path=p, width=w, height=h, fps=Fraction(1), time_base=Fraction(1), duration_s=0.0,
                     n_frames=1, rotation=0, has_audio=False, codec="image", pix_fmt="rgb24", is_image=True,
                     coded_width=w, coded_height=h)
