"""Synthetic test clips made with PyAV: a moving pattern plus a sine tone, any size, rate or format.

Used by the tests, the benchmarks and ``fsvideo doctor`` (no media download needed)::

    make_test_clip("clip.mp4", n_frames=48, width=64, height=48, fps=25, audio=True)
"""
from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np


def pattern(i: int, width: int, height: int) -> np.ndarray:
    """Frame ``i`` of the test pattern: uint8 [H, W, 3] RGB.

    Red ramps with the frame number, a green block marks the top-left corner (so rotations and
    flips can be told apart) and blue ramps left to right.
    """
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 0] = (i * 5) % 256
    img[: max(1, height // 2), : max(1, width // 3), 1] = 255
    img[..., 2] = (np.arange(width)[None, :] * 255 // max(1, width - 1)).astype(np.uint8)
    return img


def make_test_clip(path: str | os.PathLike, *, n_frames: int = 48, width: int = 64, height: int = 48,
                   fps: int | Fraction = 25, audio: bool = True, tone_hz: float = 440.0, sample_rate: int = 44100,
                   vfr: bool = False, pix_fmt: str = "yuv420p", rotation: int = 0, codec: str = "libx264",
                   audio_codec: str = "aac", images: list[np.ndarray] | None = None,
                   sar: Fraction | None = None) -> list[float]:
    """Write a test clip and return the presentation times of its frames (seconds; the muxer may
    change the time base, so ticks would not compare).

    Args:
        n_frames, width, height, fps: the video (``fps`` is the nominal rate).
        audio: add a mono sine tone of ``tone_hz`` as long as the video (``audio_codec``).
        vfr: variable frame rate: every third frame lasts 1.5 frame periods (time base 1/1000).
        pix_fmt: the stored pixel format (``yuv420p10le`` for 10-bit; ``yuv444p`` allows odd sizes).
        rotation: counter-clockwise display rotation written as a display matrix (0, 90, 180, -90).
        codec: the video encoder.
        sar: sample aspect ratio of the stored pixels (an anamorphic clip: ``Fraction(64, 45)``).
        images: upright uint8 [H, W, 3] RGB frames to write instead of the pattern (e.g. frames of a
            clip with a face); they set ``n_frames``, ``width`` and ``height``, and are stored turned
            back by ``rotation`` so that a player (and :class:`~fsvideo.video.VideoReader`) shows
            them upright.
    """
    if images is not None:
        n_frames = len(images)
        k = (-rotation // 90) % 4
        stored = [np.ascontiguousarray(np.rot90(im, k=k)) for im in images]
        height, width = stored[0].shape[:2]
    fps = Fraction(fps)
    out = av.open(str(path), "w")
    try:
        s = out.add_stream(codec, rate=fps, options={"preset": "ultrafast", "crf": "20"}
                           if codec in ("libx264", "libx265") else {})
        s.width, s.height, s.pix_fmt = width, height, pix_fmt
        tb = Fraction(1, 1000) if vfr else 1 / (fps * 100)
        s.codec_context.time_base = tb
        s.time_base = tb
        if rotation:
            s.set_display_rotation(rotation)
        if sar:
            s.codec_context.sample_aspect_ratio = Fraction(sar)
        a = None
        if audio:
            a = out.add_stream(audio_codec, rate=sample_rate)
            a.layout = "mono"
        t = 0
        times = []
        for i in range(n_frames):
            img = stored[i] if images is not None else pattern(i, width, height)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = t, tb
            times.append(float(t * tb))
            out.mux(s.encode(f))
            t += int(round(Fraction(3, 2) / fps / tb)) if (vfr and i % 3 == 0) else int(round(1 / fps / tb))
        out.mux(s.encode(None))
        if a is not None:
            n = int(float(t * tb) * sample_rate)
            x = (0.3 * np.sin(2 * np.pi * tone_hz * np.arange(n) / sample_rate)).astype(np.float32)
            for i in range(0, n, 1024):
                fr = av.AudioFrame.from_ndarray(x[None, i:i + 1024], format="flt", layout="mono")
                fr.sample_rate, fr.pts = sample_rate, i
                out.mux(a.encode(fr))
            out.mux(a.encode(None))
    finally:
        out.close()
    return times


def add_subtitles(video: str | os.PathLike, srt: str | os.PathLike, dst: str | os.PathLike,
                  language: str | None = None) -> None:
    """Write ``dst`` (an .mkv): the video and audio packets of ``video`` plus the SRT file ``srt`` as a
    subtitle stream tagged ``language`` (copied, nothing re-encoded)."""
    with av.open(str(video)) as a, av.open(str(srt)) as s, av.open(str(dst), "w") as o:
        keep = [*a.streams.video[:1], *a.streams.audio]
        outs = {st.index: o.add_stream_from_template(st) for st in keep}
        so = o.add_stream_from_template(s.streams.subtitles[0])
        if language:
            so.metadata["language"] = language
        for pkt in a.demux(*keep):
            if pkt.dts is not None:
                pkt.stream = outs[pkt.stream.index]
                o.mux(pkt)
        for pkt in s.demux(s.streams.subtitles[0]):
            if pkt.size:
                pkt.stream = so
                o.mux(pkt)


#: Colour tags of most HD video (phones, cameras, YouTube): BT.709 matrix, primaries and transfer, limited range.
BT709 = {"colorspace": 1, "color_primaries": 1, "color_trc": 1, "color_range": 1}


def reencode(src: str | os.PathLike, dst: str | os.PathLike, frames: int, *, width: int | None = None,
             height: int | None = None, colour: dict[str, int] | None = None) -> None:
    """Write ``dst``: the first ``frames`` frames of ``src``'s video as ``yuv420p`` H.264 (crf 12, no
    audio), scaled to ``width`` x ``height`` (area average; default the source's size) and tagged with
    ``colour`` (e.g. :data:`BT709`: the same YUV planes, to be read with another matrix)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        v = inp.streams.video[0]
        s = out.add_stream("libx264", rate=v.average_rate, options={"crf": "12", "preset": "veryfast"})
        s.width, s.height = width or v.codec_context.width, height or v.codec_context.height
        s.pix_fmt = "yuv420p"
        for key, value in (colour or {}).items():
            setattr(s.codec_context, key, value)
        for i, fr in enumerate(inp.decode(v)):
            if i >= frames:
                break
            fr = fr.reformat(width=s.width, height=s.height, format="yuv420p", interpolation="AREA")
            for key in ("colorspace", "color_range"):
                if key in (colour or {}):
                    setattr(fr, key, colour[key])
            fr.pts = None
            out.mux(s.encode(fr))
        out.mux(s.encode(None))


def nearest_444(frame: av.VideoFrame) -> av.VideoFrame:
    """8-bit 4:2:0 ``frame`` as ``yuv444p`` with each chroma sample over its 2x2 block (the siting of the
    reader's OpenCV conversions, :class:`~fsvideo.video.colour.Yuv420ToRgb`), same colour tags: converted
    by swscale, the reference those conversions are checked and measured against."""
    out = av.VideoFrame(frame.width, frame.height, "yuv444p")
    for k, (src, dst) in enumerate(zip(frame.planes, out.planes)):
        a = np.frombuffer(src, np.uint8).reshape(src.height, src.line_size)[:, :src.width]
        a = a.repeat(2, 0).repeat(2, 1) if k else a
        dst.update(np.ascontiguousarray(np.pad(a, ((0, 0), (0, dst.line_size - a.shape[1])))))
    out.colorspace, out.color_range = frame.colorspace, frame.color_range
    return out
