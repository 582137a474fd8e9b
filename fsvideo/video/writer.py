"""Encoding: :class:`VideoWriter` writes uint8 HxWx3 RGB frames with the source's timing, rotation and colour.

Timing.  Frames are written with the source's timestamps (VFR stays VFR) and durations, shifted so
that output time 0 is the trim start; the last frame never outlasts the source's video end.  An AVI
keeps no timestamps: its frames go on a clock of one tick a frame.

Rotation.  By default (``keep_rotation=True``) the writer turns the upright images back to the
stored orientation and writes the source's display matrix, so the output carries the source's
rotation metadata and its coded pictures have the source's orientation.  ``keep_rotation=False``
writes upright pictures and no rotation metadata.  Both play the same.  (GIF has no rotation
metadata: it always gets upright pictures.)

Pixel aspect.  An anamorphic source (non-square pixels, e.g. 720x576 stored for 16:9) keeps its
sample aspect ratio (``VideoInfo.sar``), so the output shows at the source's display size.  GIF has
no pixel aspect (it showed squeezed): its frames are stretched to square pixels (1024x576 there).

Odd sizes.  4:2:0 (and 4:2:2) encoders need even sizes.  The writer pads an odd width/height by one
pixel, repeating the last column/row (never scales, so the original pixels stay untouched); the
output is then one pixel larger than the source in that dimension.  ``yuv444p`` needs no padding.

Colour.  RGB -> YUV uses the source's colour matrix and range (as tagged; BT.601 when untagged),
the inverse of what the reader did, and the output carries the same tags, so a decode -> encode
round trip does not shift colours whichever way a player interprets them (both ways rounded, a
full-range 4:2:0 output converted exactly: :mod:`fsvideo.video.colour`).  GIF frames get an
adaptive 256-colour palette each (Pillow's octree quantiser).

Which encoder runs (``codec="auto"``, NVENC on a GPU, the preset) is decided in
:mod:`fsvideo.video.encoders`; the audio is copied by :class:`~fsvideo.video.audio.AudioPassthrough`,
the subtitles carried by :class:`~fsvideo.video.subtitles.SubtitlePassthrough` (same trim and shift).

Example::

    info = probe("talk.mp4")
    with atomic_output("out.mp4") as tmp, VideoWriter(tmp, info, audio_from=info.path) as w:
        for frame in VideoReader(info.path):
            w.write(frame.image, pts=frame.pts, duration=frame.duration)
    print(w.encoder)   # e.g. "libx264"
"""
from __future__ import annotations

import logging
import math
import os
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter

from fsvideo.cores import codec_threads
from fsvideo.errors import InputError, OutputError
from fsvideo.video.aspect import square_size, to_square_pixels, upright_pixel_aspect
from fsvideo.video.audio import AudioPassthrough
from fsvideo.video.colour import encoder_frame, is_rgb, pix_fmt_bits, pixel_conversion
from fsvideo.video.encoders import DEFAULT_PRESET, check_video_extension, choose_encoder, encoder_options
from fsvideo.video.images import check_image
from fsvideo.video.probe import VideoInfo
from fsvideo.video.subtitles import SubtitlePassthrough

log = logging.getLogger(__name__)

# Containers that keep a frame rate instead of timestamps: frames are written on a 1/fps clock
# (a variable frame rate is rounded to it; B-frames are read back in order by the reader).
_FRAME_CLOCK_FORMATS = (".avi",)
# AVI: an AAC priming packet before 0 would make the muxer shift every stream, the video by a slot.
_MUXER_OPTIONS = {".avi": {"avoid_negative_ts": "disabled"}}
# Container tags a muxer writes itself: not carried from the source.
_MUXER_OWN_TAGS = frozenset({"major_brand", "minor_version", "compatible_brands", "encoder", "duration"})


def container_tags(source: dict, comment: str | None = None) -> dict[str, str]:
    """The tags an output container gets: the source's (``source``: its ``container.metadata``) but
    those its muxer writes itself (brands, encoder), with ``comment`` in place of the source's."""
    tags = {k: v for k, v in source.items() if k.lower() not in _MUXER_OWN_TAGS}
    if comment:
        tags = {k: v for k, v in tags.items() if k.lower() != "comment"} | {"comment": comment}
    return tags


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
        path: output file; the extension sets the format (``.mp4``, ``.m4v``, ``.mov``, ``.mkv``,
            ``.webm``, ``.gif``).  Give it the temporary path of :func:`fsvideo.utils.atomic_output`;
            the writer writes where told.
        like: the source's :class:`VideoInfo` (frame rate, time base, rotation, colour tags).
        codec: ``auto`` (default: from the extension, NVENC on a CUDA GPU), ``libx264``,
            ``h264_nvenc``, ``libx265``, ``libvpx-vp9`` or ``gif``.  A codec the container cannot
            hold gives way to the extension's (with a warning).
        crf: constant-quality factor (lower is better; 18 is visually lossless for x264; NVENC's cq).
        preset: speed/quality trade-off, ``ultrafast`` .. ``veryslow`` (see
            :data:`~fsvideo.video.encoders.DEFAULT_PRESET`); mapped for VP9 and NVENC.
        pix_fmt: ``yuv420p``, ``yuv420p10le``, ``yuv444p``... (ignored for GIF, which is palette-based).
            Default: ``yuv420p`` (plays everywhere), ``yuv420p10le`` for a 10-bit source written with
            libx265 (HEVC Main 10, what HDR10 needs).  What the output loses against the source
            (bit depth, chroma, RGB, HDR in 8 bits) is said in one warning.
        audio_from: a file whose audio and subtitle streams are copied packet by packet (None: none).
        start, end: the trim the frames were read with (seconds, player clock): the output clock
            starts at ``start`` and only the audio in ``[start, end)`` is copied.
        width, height: upright output size when it differs from ``like`` (e.g. a side-by-side
            comparison); default ``like.width``/``like.height``.
        keep_rotation: write the source's rotation metadata and turn frames back to the stored
            orientation (default), or write upright frames without rotation metadata.
        threads: encoder threads (0 lets FFmpeg choose from the cores, :func:`fsvideo.cores.codec_threads`).
        shown: the name to use in messages (the user's output when ``path`` is a temporary name).
        comment: the container's ``comment`` tag: how the video was made (players show it; GIF keeps
            none).  The source's other tags (title, creation_time, location...) are kept, as ffmpeg keeps them.

    Attributes:
        encoder: the encoder that runs (e.g. ``libx264``, ``h264_nvenc``, ``gif``), for the run summary.
        encoder_options: the options it was opened with (``preset``, ``crf``...).
        frames_written: frames encoded so far.

    Use as a context manager; ``close`` flushes the encoder and copies the remaining audio::

        with VideoWriter(tmp, info, audio_from=info.path) as w:
            for f in VideoReader(info.path):
                w.write(f.image, pts=f.pts, duration=f.duration)
    """

    def __init__(self, path: str | os.PathLike, like: VideoInfo, *, codec: str = "auto", crf: int = 18,
                 preset: str = DEFAULT_PRESET, pix_fmt: str | None = None,
                 audio_from: str | os.PathLike | None = None, start: float | None = None,
                 end: float | None = None, width: int | None = None, height: int | None = None,
                 keep_rotation: bool = True, threads: int = 0, shown: str | os.PathLike | None = None,
                 comment: str | None = None):
        if not 0 <= int(crf) <= 63:
            raise InputError(f"crf {crf} is out of range", hint="use 0 (best) .. 51 (x264/x265) or 63 (vp9)")
        self.path = Path(path)
        self.shown = str(shown or self.path)
        ext = check_video_extension(self.path, self.shown)
        self.like = like
        self.width = int(width or like.width)
        self.height = int(height or like.height)
        self.rotation = like.rotation if keep_rotation and ext != ".gif" else 0
        self._stretch = upright_pixel_aspect(like) if ext == ".gif" else 1.0   # GIF: upright, square pixels
        self.offset_s = like.start_time + (start or 0.0)  # output t=0 is this source time (absolute seconds)
        self.start = start
        self.end = end
        self.frames_written = 0
        self._closed = False
        self._last_pts: int | None = None
        self._durations: dict[int, int] = {}
        self._audio: AudioPassthrough | None = None
        self._subs: SubtitlePassthrough | None = None
        if ext == ".gif":
            pix_fmt = "pal8"
        auto_pix_fmt = pix_fmt is None
        pix_fmt = pix_fmt or "yuv420p"

        # Stored (coded) size: upright size turned back by the rotation, then padded for chroma.
        cw, ch = (self.height, self.width) if self.rotation in (90, -90) else (self.width, self.height)
        cw, ch = square_size(cw, ch, self._stretch)
        even_w, even_h = _chroma_even(pix_fmt)
        self._pad = ((ch % 2) if even_h else 0, (cw % 2) if even_w else 0)
        if any(self._pad):
            log.info("%s: padding %dx%d to even size %dx%d for %s", self.shown, cw, ch, cw + self._pad[1],
                     ch + self._pad[0], pix_fmt)
        try:
            self._out = av.open(str(self.path), mode="w", options=_MUXER_OPTIONS.get(ext, {}))
        except (av.error.FFmpegError, ValueError) as e:
            raise OutputError(f"cannot write {self.shown} ({e})", hint="check the output folder") from e
        self._out.metadata.update(container_tags(getattr(like, "tags", {}), comment))
        try:
            w, h = cw + self._pad[1], ch + self._pad[0]
            self.encoder = choose_encoder(ext, codec, self._out.supported_codecs, w, h, pix_fmt, self.shown)
            if auto_pix_fmt and self.encoder == "libx265" and pix_fmt_bits(like.pix_fmt) > 8:
                pix_fmt = "yuv420p10le"
            self._warn_conversion(pix_fmt)
            self.encoder_options = encoder_options(self.encoder, crf, preset)
            self._setup_video(pix_fmt, w, h, threads)
            if audio_from is not None:
                end_abs = None if end is None else like.start_time + end
                self._audio = AudioPassthrough(self._out, Path(audio_from), offset_s=self.offset_s,
                                               start=start, end_abs=end_abs, shown=self.shown)
                self._subs = SubtitlePassthrough(self._out, Path(audio_from), offset_s=self.offset_s,
                                                 start=start, end_abs=end_abs, shown=self.shown)
        except BaseException:
            self._abort()
            raise
        log.info("%s: encoding with %s %s", self.shown, self.encoder, self.encoder_options)

    @property
    def codec(self) -> str:
        """The encoder that runs (alias of :attr:`encoder`)."""
        return self.encoder

    def _setup_video(self, pix_fmt: str, w: int, h: int, threads: int) -> None:
        like = self.like
        tb = like.time_base if not like.is_image else Fraction(1, 25)
        rate = like.fps if not like.is_image else Fraction(25)
        # AVI stores no timestamps, only a frame rate: its clock ticks once a frame (a finer one made the
        # muxer index an empty frame for every unused tick: 96 entries and "600 fps" for 4 frames).
        self._frame_clock = self.path.suffix.lower() in _FRAME_CLOCK_FORMATS and not like.is_image
        if self._frame_clock:
            tb = 1 / Fraction(rate)
            self.encoder_options = {**self.encoder_options, "bf": "0"}   # no reordering: a frame, a slot
        self._tb = tb
        try:
            s = self._out.add_stream(self.encoder, rate=rate, options=self.encoder_options)
        except (av.error.FFmpegError, ValueError) as e:
            raise OutputError(f"{self.shown}: cannot use {self.encoder} in a {self.path.suffix} file ({e})",
                              hint="use .mp4 or .mkv, or another --codec") from e
        s.width, s.height = w, h
        try:
            s.pix_fmt = pix_fmt
        except (ValueError, av.error.FFmpegError) as e:
            raise InputError(f"unknown pixel format {pix_fmt!r}", hint="use yuv420p") from e
        cc = s.codec_context
        cc.time_base = tb
        s.time_base = tb
        # x264 (and x265) parallelise best over frames; PyAV's default asks for slice threads.
        cc.thread_type = "FRAME" if self.encoder in ("libx264", "libx265") else cc.thread_type
        cc.thread_count = int(threads) or codec_threads()     # (0: FFmpeg's choice, but within a CPU quota)
        if self.encoder == "libx265" and self.path.suffix.lower() in (".mp4", ".mov", ".m4v"):
            s.codec_tag = "hvc1"  # what Apple players want for HEVC in MP4
        color = (like.color or {}) if pix_fmt != "pal8" else {}
        if color and is_rgb(like.pix_fmt) and color.get("colorspace") in (None, 0, 2):
            color = {**color, "colorspace": 6}   # RGB has no matrix: tag the BT.601 it is converted with
        for key in ("colorspace", "color_range", "color_primaries", "color_trc"):
            if color.get(key):
                try:
                    setattr(cc, key, color[key])
                except (AttributeError, ValueError, TypeError):
                    log.debug("cannot set %s on the encoder", key)
        if self.rotation:
            s.set_display_rotation(self.rotation)
        sar = self._sample_aspect()
        if sar != 1:
            cc.sample_aspect_ratio = sar
        self._video = s
        # 2 is "unspecified": leave swscale its default (BT.601) rather than ask for a conversion.
        self._src_colorspace = color.get("colorspace") if color.get("colorspace") not in (None, 0, 2) else None
        self._color_range = color.get("color_range") or None
        self._reformatter = VideoReformatter()  # one swscale context for the whole video
        self._scratch: dict = {}                # and the OpenCV conversions' scratch planes

    def _warn_conversion(self, pix_fmt: str) -> None:
        like = self.like
        if like.is_image:
            return
        lost = pixel_conversion(like.pix_fmt, (like.color or {}).get("color_trc"), pix_fmt)
        if getattr(like, "interlaced", False):
            lost.append("interlaced fields written as progressive frames, not deinterlaced")
        if lost:
            tip = ("; --codec libx265 keeps 10 bits" if pix_fmt_bits(like.pix_fmt) > 8 and pix_fmt_bits(pix_fmt) <= 8
                   and "hevc" in self._out.supported_codecs else "")
            log.warning("%s: the source is %s, written as %s (%s%s)", self.shown, like.pix_fmt, pix_fmt,
                        "; ".join(lost), tip)

    def _sample_aspect(self) -> Fraction:
        """The output's pixel aspect: the source's (an anamorphic 720x576 16:9 clip stays 16:9), inverted
        when the picture is written upright from a source stored turned by 90 degrees; 1 for GIF."""
        sar = Fraction(getattr(self.like, "sar", 1) or 1)
        if self.path.suffix.lower() == ".gif":
            return Fraction(1)
        turned = self.like.rotation in (90, -90) and self.rotation not in (90, -90)
        return 1 / sar if turned else sar

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
        check_image(image, "image", (self.height, self.width))
        tb = self._tb
        offset = int(math.floor(self.offset_s / tb + 1e-9))
        if self._frame_clock and pts is not None:         # the frame slot the source's stamp falls in
            out_pts = math.floor((float(pts * self.like.time_base) - self.offset_s) / tb + 1e-3)
            duration = max(1, round(duration * self.like.time_base / tb)) if duration else None
        elif pts is not None:
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

        img = to_square_pixels(image, self._stretch)
        if self.rotation:
            img = np.rot90(img, k=(-self.rotation // 90) % 4)
        if any(self._pad):
            img = np.pad(img, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
        img = np.ascontiguousarray(img)
        frame = encoder_frame(img, self._video.pix_fmt, self._src_colorspace, self._color_range, self._reformatter,
                              self._scratch)
        frame.pts = out_pts
        frame.time_base = tb
        self._mux_video(self._video.encode(frame))
        self.frames_written += 1
        for passthrough in (self._audio, self._subs):
            if passthrough is not None:
                passthrough.pump(float(out_pts * tb))

    def write_frame(self, frame, image: np.ndarray | None = None) -> None:
        """Write ``image`` (default ``frame.image``) with the timing of source ``frame`` (a reader Frame)."""
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

    # -- closing

    def close(self) -> None:
        """Flush the encoder, copy the rest of the audio, write the container index and close."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.frames_written == 0:
                raise OutputError(f"no frame was written to {self.shown}", hint="check --start/--end")
            self._clamp_last_duration()
            self._mux_video(self._video.encode(None))
            for passthrough in (self._audio, self._subs):
                if passthrough is not None:
                    passthrough.pump(None)
            self._out.close()
        except av.error.FFmpegError as e:
            self._abort()
            raise OutputError(f"cannot finish writing {self.shown} ({e})", hint="check disk space") from e
        except BaseException:
            self._abort()
            raise
        finally:
            self._close_sources()

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

    def _close_sources(self) -> None:
        for passthrough in (self._audio, self._subs):
            if passthrough is not None:
                passthrough.close()

    def _abort(self) -> None:
        """Close everything without caring about errors (the caller's atomic_output removes the file)."""
        self._closed = True
        self._close_sources()
        out = getattr(self, "_out", None)
        if out is not None:
            try:
                out.close()
            except Exception:  # noqa: BLE001 - already failing; the original error matters
                pass

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()
