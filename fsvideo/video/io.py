"""Decoding and encoding with PyAV: timestamps kept, audio copied, rotation and odd sizes handled.

Three pieces:

* :func:`probe` reads a file's facts into a :class:`VideoInfo` (and turns every way a file can be
  unusable into one :class:`~fsvideo.errors.InputError` that names the file and the fix).
* :class:`VideoReader` streams :class:`Frame` objects (uint8 HxWx3 RGB, upright) one at a time;
  a still image is a one-frame video, so the pipeline treats both alike.
* :class:`VideoWriter` encodes frames with the source's timestamps (VFR stays VFR) and copies the
  source's audio packets (no re-encode), trimmed to ``start``/``end``.

Clock.  ``Frame.time`` and the ``start``/``end`` arguments are seconds from the start of the
container (``VideoInfo.start_time``), i.e. what a player shows.  ``Frame.pts`` is the untouched
presentation timestamp of the source video stream (units of ``VideoInfo.time_base``).

Rotation.  Phone videos store sideways pictures plus a display matrix.  The reader applies the
rotation, so every ``Frame.image`` is upright and ``VideoInfo.width``/``height`` are the upright
(displayed) size.  The writer, by default (``keep_rotation=True``), turns the upright images back
to the stored orientation and writes the same display matrix: the output carries the source's
rotation metadata and its coded pictures have the source's orientation.  ``keep_rotation=False``
writes upright pictures and no rotation metadata instead.  Both play the same.

Odd sizes.  4:2:0 (and 4:2:2) encoders need even sizes.  The writer pads an odd width/height by one
pixel, repeating the last column/row (never scales, so the original pixels stay untouched); the
output is then one pixel larger than the source in that dimension.  ``yuv444p`` needs no padding.

Colour.  Frames are converted YUV -> RGB with the source's colour matrix and range (as tagged; the
swscale default BT.601 when untagged) and back with the same, and the output carries the same
tags, so a decode -> encode round trip does not shift colours whichever way a player interprets it.

Example::

    info = probe("talk.mp4")
    with atomic_output("out.mp4") as tmp, VideoWriter(tmp, info, audio_from=info.path) as w:
        for frame in VideoReader(info.path):
            w.write(frame.image, pts=frame.pts, duration=frame.duration)
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

import av
import av.error

from fsvideo.errors import InputError, OutputError
from fsvideo.utils import check_input_file

log = logging.getLogger(__name__)

#: File extensions read as still images (with Pillow, EXIF orientation applied).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

#: Video encoders the writer knows how to drive, with their quality options.
VIDEO_CODECS = ("libx264", "libx265", "libvpx-vp9")

# Demuxers / codecs that mean "this is a still image", whatever the file is called.
_IMAGE_DEMUXERS = ("image2", "jpeg_pipe", "png_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe", "image2pipe")
_IMAGE_CODECS = ("mjpeg", "png", "bmp", "webp", "tiff", "jpeg2000")

_AV_TIME_BASE = 1_000_000
_HINT_CONVERT = "convert it first, e.g. `ffmpeg -i IN -c:v libx264 -c:a copy OUT.mp4`"

# libx264/libx265 preset names mapped onto libvpx-vp9's -cpu-used speed (0 slowest .. 8 fastest).
_VP9_SPEED = {"ultrafast": 8, "superfast": 7, "veryfast": 6, "faster": 5, "fast": 4, "medium": 3,
              "slow": 2, "slower": 1, "veryslow": 0, "placebo": 0}


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


def codec_report() -> dict[str, bool]:
    """Which of the writer's video encoders (and the AAC/Opus audio fallbacks) this FFmpeg build has."""
    return {c: c in av.codecs_available for c in (*VIDEO_CODECS, "aac", "libopus")}


# --------------------------------------------------------------------------------------------- probe

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
    v = container.streams.video[0]
    ctx = v.codec_context
    codec = ctx.name if ctx is not None else (v.codec.name if getattr(v, "codec", None) else "unknown")
    if any(fmt.split(",")[0] == d for d in _IMAGE_DEMUXERS) or (codec in _IMAGE_CODECS and v.frames <= 1):
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
    n_frames = int(v.frames) if v.frames and v.frames > 0 else max(1, int(round(duration * float(fps))))
    if container.start_time is not None:
        start_time = container.start_time / _AV_TIME_BASE
    elif v.start_time is not None:
        start_time = float(v.start_time * tb)
    else:
        start_time = 0.0
    end_time = None
    if v.duration is not None and v.duration > 0:
        end_time = float(((v.start_time or 0) + v.duration) * tb) - start_time
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
                     coded_height=ch, audio_codec=audio_codec, color=color, end_time=end_time)


def _check_not_truncated(p: Path, container) -> None:
    """An indexed container (MP4/MOV/MKV with cues) whose samples point past the end of the file was cut off."""
    size = p.stat().st_size
    for stream in list(container.streams.video[:1]) + list(container.streams.audio[:1]):
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
    img = _read_image(p)
    h, w = img.shape[:2]
    return VideoInfo(path=p, width=w, height=h, fps=Fraction(1), time_base=Fraction(1), duration_s=0.0,
                     n_frames=1, rotation=0, has_audio=False, codec="image", pix_fmt="rgb24", is_image=True,
                     coded_width=w, coded_height=h)


def _read_image(p: Path) -> np.ndarray:
    """uint8 [H, W, 3] RGB with the EXIF orientation applied."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im, dtype=np.float64)
                a = np.clip(a / (257.0 if a.max() > 255 else 1.0), 0, 255).astype(np.uint8)
                return np.ascontiguousarray(np.repeat(a[..., None], 3, axis=2))
            return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
    except UnidentifiedImageError as e:
        raise InputError(f"{p} is not an image Pillow can read", hint="pass a jpg, png, bmp, webp or tiff") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{p} is a truncated or damaged image ({e})", hint="re-export or re-download it") from e


# -------------------------------------------------------------------------------------------- reader

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
        if start is not None and start < 0:
            raise InputError(f"--start {start} is negative", hint="pass a time in seconds >= 0")
        if end is not None and start is not None and end <= start:
            raise InputError(f"--end {end} is not after --start {start}", hint="pass --end greater than --start")
        if not self.info.is_image and start is not None and self.info.duration_s and start >= self.info.duration_s:
            raise InputError(f"--start {start} is past the end of {self.path} ({self.info.duration_s:.2f} s)",
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
        s = self.start or 0.0
        e = min(self.end, info.duration_s) if self.end is not None else info.duration_s
        return max(0, int(round((e - s) * float(info.fps))))

    def __iter__(self) -> Iterator[Frame]:
        if self.info.is_image:
            yield Frame(index=0, pts=0, time=0.0, image=_read_image(self.path), duration=None)
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
            v = container.streams.video[0]
            if self.threads:
                v.thread_type = "AUTO"
            tb = Fraction(v.time_base) if v.time_base else info.time_base
            step = max(1, int(round(1 / (float(info.fps) * tb)))) if info.fps else 1
            if seek:
                target = int(math.floor((start + info.start_time) / tb))
                try:
                    container.seek(target, stream=v, backward=True, any_frame=False)
                except av.error.FFmpegError:
                    log.debug("seek failed in %s; decoding from the beginning", self.path)
                    return False
            index = 0
            prev_pts: int | None = None
            first = True
            try:
                for frame in container.decode(v):
                    pts = frame.pts
                    if pts is None:
                        pts = frame.dts if frame.dts is not None else (prev_pts + step if prev_pts is not None else 0)
                    t = float(pts * tb) - info.start_time
                    if first and seek and t > start + 1e-6:
                        log.debug("seek overshot in %s (%.3f s > %.3f s); decoding from the start", self.path, t,
                                  start)
                        return False
                    first = False
                    if start is not None and t < start - 1e-6:
                        continue
                    if end is not None and t >= end - 1e-6:
                        break
                    prev_pts = pts
                    image = frame.to_ndarray(format="rgb24", src_color_range=int(frame.color_range) or None)
                    image = upright(image, info.rotation)
                    dur = frame.duration if getattr(frame, "duration", None) else None
                    yield Frame(index=index, pts=int(pts), time=t, image=image, duration=dur)
                    index += 1
            except av.error.FFmpegError as e:
                where = f"frame {index}" + (f" (t={float(prev_pts * tb) - info.start_time:.2f} s)"
                                            if prev_pts is not None else "")
                raise InputError(f"{self.path} is damaged at {where} (FFmpeg: {e})",
                                 hint="re-export the file, or process only the good part with --end") from e
            if index == 0:
                trimmed = start is not None or end is not None
                raise InputError(f"{self.path}: no frame decoded" + (f" between {start} s and {end} s" if trimmed else ""),
                                 hint="check --start/--end" if trimmed else "the file may be truncated; re-export it")
            if start is None and end is None and v.frames and index < 0.9 * v.frames:
                log.warning("%s: decoded %d of the %d frames its index lists; the file may be truncated",
                            self.path, index, v.frames)
            return True
        finally:
            container.close()


# -------------------------------------------------------------------------------------------- writer

def write_image(path: str | os.PathLike, image: np.ndarray, *, quality: int = 95) -> None:
    """Write uint8 [H, W, 3] RGB ``image`` to ``path`` (format from the extension; JPEG ``quality``).

    Call it inside :func:`fsvideo.utils.atomic_output`, which hands a temporary name with the same
    extension.
    """
    from PIL import Image

    _check_image(image, "image")
    p = Path(path)
    ext = p.suffix.lower()
    kwargs = {"quality": int(quality)} if ext in (".jpg", ".jpeg", ".webp") else {}
    if ext not in IMAGE_EXTENSIONS:
        raise OutputError(f"{p}: unknown image extension {p.suffix!r}", hint="use .jpg, .png, .webp, .bmp or .tiff")
    try:
        Image.fromarray(image, "RGB").save(p, **kwargs)
    except OSError as e:
        raise OutputError(f"cannot write {p} ({e})", hint="check the output folder") from e


class ImageWriter:
    """The still-image twin of :class:`VideoWriter`: ``write`` keeps the frame, ``close`` saves it.

    Lets a chain end in the same ``encode_video`` stage for images and videos.  Writing a second
    frame is an error (an image input has one frame).

    Args:
        path: output image file (format from the extension); give it the temporary path of
            :func:`fsvideo.utils.atomic_output`.
        quality: JPEG/WebP quality.
    """

    def __init__(self, path: str | os.PathLike, *, quality: int = 95):
        self.path = Path(path)
        if self.path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise OutputError(f"{self.path}: unknown image extension {self.path.suffix!r}",
                              hint="use .jpg, .png, .webp, .bmp or .tiff")
        self.quality = quality
        self.frames_written = 0
        self._image: np.ndarray | None = None
        self._closed = False

    def write(self, image: np.ndarray, pts: int | None = None, *, time: float | None = None,
              duration: int | None = None) -> None:
        """Keep uint8 [H, W, 3] RGB ``image`` (timing arguments are accepted and ignored)."""
        _check_image(image, "image")
        if self._image is not None:
            raise ValueError(f"{self.path}: an image output takes one frame")
        self._image = image
        self.frames_written = 1

    def write_frame(self, frame: Frame, image: np.ndarray | None = None) -> None:
        self.write(frame.image if image is None else image)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._image is None:
            raise OutputError(f"no image was written to {self.path}")
        write_image(self.path, self._image, quality=self.quality)

    def __enter__(self) -> "ImageWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._closed = True


def _check_image(image, name: str, shape: tuple[int, int] | None = None) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{name} must be a uint8 [H, W, 3] RGB array, got {desc}")
    if shape is not None and image.shape[:2] != shape:
        raise ValueError(f"{name} must be {shape[0]}x{shape[1]} (HxW) like the first frame, got "
                         f"{image.shape[0]}x{image.shape[1]}")


def _chroma_even(pix_fmt: str) -> tuple[bool, bool]:
    """(width must be even, height must be even) for ``pix_fmt``: true where chroma is subsampled."""
    try:
        fmt = av.VideoFormat(pix_fmt)
    except (ValueError, av.error.FFmpegError) as e:
        raise InputError(f"unknown pixel format {pix_fmt!r}", hint="use yuv420p") from e
    return fmt.chroma_width(5) < 5, fmt.chroma_height(5) < 5


class VideoWriter:
    """Encode frames with the source's timestamps and copy the source's audio packets.

    Args:
        path: output file (container from the extension: .mp4, .mov, .mkv, .webm).  Give it the
            temporary path of :func:`fsvideo.utils.atomic_output`; the writer writes where told.
        like: the source's :class:`VideoInfo` (frame rate, time base, rotation, colour tags).
        codec: ``libx264`` (default), ``libx265`` or ``libvpx-vp9``.
        crf: constant-quality factor (lower is better; 18 is visually lossless for x264).
        preset: x264/x265 preset (``ultrafast`` .. ``veryslow``); mapped to ``-cpu-used`` for VP9.
        pix_fmt: ``yuv420p`` (default, plays everywhere), ``yuv420p10le``, ``yuv444p``...
        audio_from: a file whose first audio stream is copied packet by packet (None: no audio).
        start, end: the trim the frames were read with (seconds, player clock): the output clock
            starts at ``start`` and only the audio in ``[start, end)`` is copied.
        width, height: upright output size when it differs from ``like`` (e.g. a side-by-side
            comparison); default ``like.width``/``like.height``.
        keep_rotation: write the source's rotation metadata and turn frames back to the stored
            orientation (default), or write upright frames without rotation metadata.
        threads: encoder threads (0 lets FFmpeg choose).

    Use as a context manager; ``close`` flushes the encoder and copies the remaining audio::

        with VideoWriter(tmp, info, audio_from=info.path) as w:
            for f in VideoReader(info.path):
                w.write(f.image, pts=f.pts, duration=f.duration)

    Audio that the output container cannot hold as is (e.g. AAC in WebM) is re-encoded to the
    container's default audio codec, with a warning.  Audio packets that start before ``start`` are
    left out (at most one packet, some tens of milliseconds).
    """

    def __init__(self, path: str | os.PathLike, like: VideoInfo, *, codec: str = "libx264", crf: int = 18,
                 preset: str = "medium", pix_fmt: str = "yuv420p", audio_from: str | os.PathLike | None = None,
                 start: float | None = None, end: float | None = None, width: int | None = None,
                 height: int | None = None, keep_rotation: bool = True, threads: int = 0):
        if codec not in VIDEO_CODECS:
            raise InputError(f"unknown video codec {codec!r}", hint=f"use one of {', '.join(VIDEO_CODECS)}")
        if codec not in av.codecs_available:
            raise InputError(f"this FFmpeg build has no {codec} encoder", hint="choose another --codec")
        if not 0 <= int(crf) <= 63:
            raise InputError(f"crf {crf} is out of range", hint="use 0 (best) .. 51 (x264/x265) or 63 (vp9)")
        self.path = Path(path)
        self.like = like
        self.codec = codec
        self.width = int(width or like.width)
        self.height = int(height or like.height)
        self.rotation = like.rotation if keep_rotation else 0
        self.offset_s = like.start_time + (start or 0.0)  # output t=0 is this source time (absolute seconds)
        self.start = start
        self.end = end
        self.frames_written = 0
        self._closed = False
        self._last_pts: int | None = None
        self._durations: dict[int, int] = {}
        self._audio_in = None
        self._audio_iter = None
        self._audio_out = None
        self._audio_transcode = False
        self._audio_pending = None
        self._audio_done = False

        # Stored (coded) size: upright size turned back by the rotation, then padded for chroma.
        cw, ch = (self.height, self.width) if self.rotation in (90, -90) else (self.width, self.height)
        even_w, even_h = _chroma_even(pix_fmt)
        self._pad = ((ch % 2) if even_h else 0, (cw % 2) if even_w else 0)
        if any(self._pad):
            log.info("%s: padding %dx%d to even size %dx%d for %s", self.path, cw, ch, cw + self._pad[1],
                     ch + self._pad[0], pix_fmt)

        try:
            self._out = av.open(str(self.path), mode="w")
        except (av.error.FFmpegError, ValueError) as e:
            raise OutputError(f"cannot write {self.path} ({e})",
                              hint="use an .mp4, .mov, .mkv or .webm output name") from e
        try:
            self._setup_video(codec, crf, preset, pix_fmt, cw + self._pad[1], ch + self._pad[0], threads)
            if audio_from is not None:
                self._setup_audio(Path(audio_from))
        except BaseException:
            self._abort()
            raise

    # -- setup

    def _setup_video(self, codec, crf, preset, pix_fmt, w, h, threads):
        like = self.like
        tb = like.time_base if not like.is_image else Fraction(1, 25)
        self._tb = tb
        rate = like.fps if not like.is_image else Fraction(25)
        options = {"crf": str(int(crf))}
        if codec in ("libx264", "libx265"):
            options["preset"] = preset
            if codec == "libx265":
                options["x265-params"] = "log-level=error"
        else:
            options.update({"b": "0", "deadline": "good", "cpu-used": str(_VP9_SPEED.get(preset, 3)),
                            "row-mt": "1"})
        try:
            s = self._out.add_stream(codec, rate=rate, options=options)
        except (av.error.FFmpegError, ValueError) as e:
            raise OutputError(f"{self.path}: cannot use {codec} in a {self.path.suffix} file ({e})",
                              hint="use .mp4 or .mkv, or another --codec") from e
        s.width, s.height = w, h
        try:
            s.pix_fmt = pix_fmt
        except (ValueError, av.error.FFmpegError) as e:
            raise InputError(f"unknown pixel format {pix_fmt!r}", hint="use yuv420p") from e
        s.codec_context.time_base = tb
        s.time_base = tb
        if threads:
            s.codec_context.thread_count = int(threads)
        if codec == "libx265" and self.path.suffix.lower() in (".mp4", ".mov", ".m4v"):
            s.codec_tag = "hvc1"  # what Apple players want for HEVC in MP4
        color = like.color or {}
        cc = s.codec_context
        for key in ("colorspace", "color_range", "color_primaries", "color_trc"):
            if color.get(key):
                try:
                    setattr(cc, key, color[key])
                except (AttributeError, ValueError, TypeError):
                    log.debug("cannot set %s on the encoder", key)
        if self.rotation:
            s.set_display_rotation(self.rotation)
        self._video = s
        self._src_colorspace = color.get("colorspace") or None
        self._color_range = color.get("color_range") or None

    def _setup_audio(self, src: Path):
        try:
            inp = av.open(str(src), mode="r", metadata_errors="replace")
        except av.error.FFmpegError as e:
            raise _open_error(src, e) from e
        self._audio_in = inp
        if not inp.streams.audio:
            log.info("%s has no audio stream; writing video only", src)
            self._audio_done = True
            return
        a_in = inp.streams.audio[0]
        try:
            self._audio_out = self._out.add_stream_from_template(a_in)
        except ValueError:
            self._audio_transcode = True
            target = self._out.default_audio_codec
            if target in ("none", "", None):
                target = "aac"
            log.warning("%s: a %s file cannot hold %s audio as is; re-encoding it to %s",
                        self.path, self.path.suffix, a_in.codec_context.name, target)
            rate = a_in.codec_context.sample_rate or 48000
            if "opus" in target:
                rate = 48000  # the only rate libopus takes; PyAV resamples the decoded frames
            self._audio_out = self._out.add_stream(target, rate=rate)
            channels = a_in.codec_context.channels if hasattr(a_in.codec_context, "channels") else 2
            self._audio_out.layout = "mono" if channels == 1 else "stereo"
        if self.start:
            target = int(math.floor((self.offset_s - 1.0) / a_in.time_base)) if a_in.time_base else 0
            try:
                inp.seek(max(0, target), stream=a_in, backward=True)
            except av.error.FFmpegError:
                inp.seek(0)
        self._audio_stream_in = a_in
        self._audio_iter = inp.demux(a_in)

    # -- writing

    def write(self, image: np.ndarray, pts: int | None = None, *, time: float | None = None,
              duration: int | None = None) -> None:
        """Encode one upright uint8 [H, W, 3] RGB frame.

        Args:
            image: the frame, ``height x width`` (upright size given at construction).
            pts: the source frame's ``Frame.pts`` (source time base), which keeps VFR timing; or
            time: the source frame's ``Frame.time`` (seconds, player clock) when pts is unknown.
                With neither, frames are spaced at ``like.fps`` after the previous one.
            duration: the source frame's duration in ticks (``Frame.duration``), when known.
        """
        if self._closed:
            raise ValueError("write() on a closed VideoWriter")
        _check_image(image, "image", (self.height, self.width))
        tb = self._tb
        offset = int(math.floor(self.offset_s / tb + 1e-9))
        if pts is not None:
            out_pts = int(pts) - offset if not self.like.is_image else int(pts)
        elif time is not None:
            out_pts = int(round((time - (self.start or 0.0)) / tb))
        else:
            out_pts = (self._last_pts + self._default_duration()) if self._last_pts is not None else 0
        if self._last_pts is not None and out_pts <= self._last_pts:
            log.debug("non-increasing pts %d after %d; nudged", out_pts, self._last_pts)
            out_pts = self._last_pts + 1
        self._last_pts = out_pts
        self._durations[out_pts] = int(duration) if duration else self._default_duration()

        img = image
        if self.rotation:
            img = np.rot90(img, k=(-self.rotation // 90) % 4)
        if any(self._pad):
            img = np.pad(img, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        frame = frame.reformat(format=self._video.pix_fmt, dst_colorspace=self._src_colorspace,
                               dst_color_range=self._color_range)
        frame.pts = out_pts
        frame.time_base = tb
        self._mux_video(self._video.encode(frame))
        self.frames_written += 1
        self._pump_audio(float(out_pts * tb))

    def write_frame(self, frame: Frame, image: np.ndarray | None = None) -> None:
        """Write ``image`` (default ``frame.image``) with the timing of source ``frame``."""
        self.write(frame.image if image is None else image, pts=frame.pts, duration=frame.duration)

    def _default_duration(self) -> int:
        return max(1, int(round(1 / (float(self.like.fps or 25) * self._tb))))

    def _mux_video(self, packets) -> None:
        for pkt in packets:
            if not pkt.duration and pkt.pts is not None:
                d = self._durations.pop(pkt.pts, None)
                if d:
                    pkt.duration = d
            elif pkt.pts is not None:
                self._durations.pop(pkt.pts, None)
            self._out.mux(pkt)

    def _pump_audio(self, until: float | None) -> None:
        """Copy source audio packets up to output time ``until`` (None: to the end)."""
        if self._audio_iter is None or self._audio_done:
            return
        a_in = self._audio_stream_in
        atb = Fraction(a_in.time_base)
        a_off = int(math.floor(self.offset_s / atb + 1e-9))
        end_abs = None if self.end is None else self.like.start_time + self.end
        while True:
            pkt = self._audio_pending
            self._audio_pending = None
            if pkt is None:
                try:
                    pkt = next(self._audio_iter)
                except StopIteration:
                    self._finish_audio()
                    return
                except av.error.FFmpegError as e:
                    log.warning("audio of %s stops early (FFmpeg: %s)", self.like.path, e)
                    self._finish_audio()
                    return
            if pkt.dts is None and pkt.pts is None:
                continue  # the demuxer's empty flush packet
            ts = pkt.pts if pkt.pts is not None else pkt.dts
            t_abs = float(ts * atb)
            if end_abs is not None and t_abs >= end_abs - 1e-9:
                self._finish_audio()
                return
            if self.start and t_abs < self.offset_s - 1e-9:
                continue  # before --start (without a trim, priming packets before 0 are kept)
            t_out = t_abs - self.offset_s
            if until is not None and t_out > until:
                self._audio_pending = pkt
                return
            if self._audio_transcode:
                self._transcode_audio(pkt)
            else:
                if pkt.pts is not None:
                    pkt.pts -= a_off
                if pkt.dts is not None:
                    pkt.dts -= a_off
                pkt.stream = self._audio_out
                self._out.mux(pkt)

    def _transcode_audio(self, pkt) -> None:
        atb = Fraction(self._audio_stream_in.time_base)
        for fr in pkt.decode():
            if fr.pts is not None:
                t = float(fr.pts * atb) - self.offset_s
                fr.pts = int(round(t * fr.sample_rate))
                fr.time_base = Fraction(1, fr.sample_rate)
            self._out.mux(self._audio_out.encode(fr))

    def _finish_audio(self) -> None:
        if self._audio_done:
            return
        self._audio_done = True
        if self._audio_transcode and self._audio_out is not None:
            self._out.mux(self._audio_out.encode(None))

    # -- closing

    def close(self) -> None:
        """Flush the encoder, copy the rest of the audio, write the container index and close."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.frames_written == 0:
                raise OutputError(f"no frame was written to {self.path}", hint="check --start/--end")
            self._clamp_last_duration()
            self._mux_video(self._video.encode(None))
            self._pump_audio(None)
            self._out.close()
        except av.error.FFmpegError as e:
            self._abort()
            raise OutputError(f"cannot finish writing {self.path} ({e})", hint="check disk space") from e
        except BaseException:
            self._abort()
            raise
        finally:
            if self._audio_in is not None:
                self._audio_in.close()
                self._audio_in = None

    def _clamp_last_duration(self) -> None:
        """Do not let the last frame outlast the source's video end (an edit list may cut it short)."""
        end = self.like.end_time
        if end is None or self._last_pts is None or self.like.is_image:
            return
        if self.end is not None and self.end < end:
            end = self.end
        end_ticks = int(round((end - (self.start or 0.0)) / self._tb))
        d = self._durations.get(self._last_pts)
        if d is not None and 0 < end_ticks - self._last_pts < d:
            self._durations[self._last_pts] = end_ticks - self._last_pts

    def _abort(self) -> None:
        """Close everything without caring about errors (the caller's atomic_output removes the file)."""
        self._closed = True
        for c in (self._audio_in, getattr(self, "_out", None)):
            if c is not None:
                try:
                    c.close()
                except Exception:  # noqa: BLE001 - already failing; the original error matters
                    pass
        self._audio_in = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()
