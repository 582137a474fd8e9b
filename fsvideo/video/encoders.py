"""Which video encoder writes an output, and with which options.

The output's extension decides the format (``.mp4``, ``.mov``, ``.m4v``, ``.mkv``, ``.webm``,
``.gif``).  ``codec="auto"`` picks the extension's natural encoder: H.264 for MP4/MOV/MKV (NVIDIA's
hardware ``h264_nvenc`` when this FFmpeg has it and a CUDA GPU answers, else ``libx264``), VP9 for
WebM, FFmpeg's ``gif`` encoder for GIF.  A named codec the container cannot hold (``libx264`` in a
``.gif``) gives way to the extension's encoder with a warning: the extension is what the user
asked for.  An extension that is not a video format is an :class:`~fsvideo.errors.OutputError`
naming the user's file and the extensions that work.

Speed and quality.  ``preset`` is the x264/x265 speed/quality trade-off (``ultrafast`` ..
``veryslow``), mapped onto VP9's ``-cpu-used`` and NVENC's ``p1`` .. ``p7``.  The default,
:data:`DEFAULT_PRESET` (``veryfast``), was chosen by measurement (``benchmarks/encode.py`` on the
shared 1080p clip, 2 CPU cores): 31.6 CPU ms per 1080p frame against 81.6 for ``medium`` (about
55-60 frames/s on two idle cores, above the 40 frames/s target), PSNR against the source 43.23 dB
against ``medium``'s 43.49 at crf 18, with 17 % fewer bits (table in the benchmark's docstring).
x264 runs frame threads, as the ``ffmpeg`` command line does (PyAV's default, slice threads, makes
x264 split each frame instead, which scales worse).
"""
from __future__ import annotations

import logging
from fractions import Fraction

import av
import av.error

from fsvideo.errors import InputError, OutputError

log = logging.getLogger(__name__)

#: Codec names the writer accepts (``auto`` chooses from the output's extension).
VIDEO_CODECS = ("auto", "libx264", "h264_nvenc", "libx265", "libvpx-vp9", "gif")

#: x264 presets, fastest first.
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")

#: The default preset (see the module docstring and ``benchmarks/encode.py`` for the measurement).
DEFAULT_PRESET = "veryfast"

# What ``auto`` tries for each output extension, in order (the first this FFmpeg can use wins).
_AUTO = {".mp4": ("h264_nvenc", "libx264"), ".m4v": ("h264_nvenc", "libx264"),
         ".mov": ("h264_nvenc", "libx264"), ".mkv": ("h264_nvenc", "libx264"),
         ".flv": ("h264_nvenc", "libx264"), ".avi": ("h264_nvenc", "libx264"),
         ".ts": ("h264_nvenc", "libx264"), ".webm": ("libvpx-vp9",), ".gif": ("gif",)}

#: Output extensions the video writer can write.
VIDEO_EXTENSIONS = tuple(_AUTO)

# Preset names mapped onto libvpx-vp9's -cpu-used (0 slowest .. 8 fastest) and NVENC's p1 (fastest) .. p7.
_VP9_SPEED = {"ultrafast": 8, "superfast": 7, "veryfast": 6, "faster": 5, "fast": 4, "medium": 3,
              "slow": 2, "slower": 1, "veryslow": 0}
_NVENC_PRESET = {"ultrafast": "p1", "superfast": "p2", "veryfast": "p3", "faster": "p3", "fast": "p4",
                 "medium": "p4", "slow": "p5", "slower": "p6", "veryslow": "p7"}


def codec_report() -> dict[str, bool]:
    """Which video encoders (and the AAC/Opus audio fallbacks) this FFmpeg build has.

    ``h264_nvenc`` is reported as usable only when a CUDA GPU also answers.
    """
    report = {c: c in av.codecs_available for c in VIDEO_CODECS if c != "auto"}
    report["h264_nvenc"] = nvenc_usable(256, 256)
    report.update({c: c in av.codecs_available for c in ("aac", "libopus")})
    return report


def nvenc_usable(width: int, height: int, pix_fmt: str = "yuv420p", rate: Fraction = Fraction(25)) -> bool:
    """Whether ``h264_nvenc`` opens for this size and format (needs the encoder in FFmpeg and a CUDA GPU).

    Opening a real encoder is the only reliable test: the encoder is listed in builds that run on
    machines without a GPU, and NVENC has size and session limits.  It fails in milliseconds
    without a GPU.
    """
    if "h264_nvenc" not in av.codecs_available or pix_fmt not in ("yuv420p", "nv12", "yuv444p"):
        return False
    try:
        cc = av.CodecContext.create("h264_nvenc", "w")
        cc.width, cc.height, cc.pix_fmt = int(width), int(height), pix_fmt
        cc.time_base = 1 / Fraction(rate)
        cc.open()
    except (av.error.FFmpegError, ValueError, OSError) as e:
        log.debug("h264_nvenc unavailable: %s", e)
        return False
    return True


def check_video_extension(path, shown=None) -> str:
    """Return the lower-case extension of ``path`` if the writer can write it, else raise OutputError.

    ``shown`` is the name to put in the message (the user's output, not a temporary name).
    """
    ext = path.suffix.lower()
    if ext not in _AUTO:
        what = f"a {path.suffix} file" if path.suffix else "a file without an extension"
        raise OutputError(f"{shown or path}: cannot write a video to {what}",
                          hint=f"use one of {', '.join(VIDEO_EXTENSIONS)}")
    return ext


def choose_encoder(ext: str, codec: str, holds: set[str], width: int, height: int, pix_fmt: str,
                   shown: str) -> str:
    """The encoder that writes a ``ext`` file: ``codec`` when the container ``holds`` it, else the extension's.

    Args:
        ext: the output's extension (checked by :func:`check_video_extension`).
        codec: one of :data:`VIDEO_CODECS`.
        holds: canonical codec names the output container can hold (``OutputContainer.supported_codecs``).
        width, height, pix_fmt: the stored picture, to test whether NVENC opens with them.
        shown: the user's output name, for messages.
    """
    if codec not in VIDEO_CODECS:
        raise InputError(f"unknown video codec {codec!r}", hint=f"use one of {', '.join(VIDEO_CODECS)}")
    if codec != "auto":
        if codec not in av.codecs_available:
            raise InputError(f"this FFmpeg build has no {codec} encoder", hint="choose another --codec (or auto)")
        if av.Codec(codec, "w").canonical_name in holds:
            if codec != "h264_nvenc" or nvenc_usable(width, height, pix_fmt):
                return codec
            log.warning("%s: h264_nvenc does not open here (no CUDA GPU?); using libx264", shown)
            return "libx264"
    for name in _AUTO[ext]:
        if name == "h264_nvenc":
            if nvenc_usable(width, height, pix_fmt):
                return name
        elif name in av.codecs_available:
            if codec != "auto":
                log.warning("%s: a %s file cannot hold %s video; writing %s", shown, ext, codec, name)
            return name
    raise OutputError(f"{shown}: this FFmpeg build has no encoder for {ext} files",
                      hint=f"use another extension ({', '.join(VIDEO_EXTENSIONS)})")


def encoder_options(codec: str, crf: int, preset: str) -> dict[str, str]:
    """FFmpeg private options for ``codec`` at quality ``crf`` (lower is better) and speed ``preset``."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}", hint=f"use one of {', '.join(PRESETS)}")
    if codec in ("libx264", "libx265"):
        opts = {"crf": str(int(crf)), "preset": preset}
        if codec == "libx265":
            opts["x265-params"] = "log-level=error"
        return opts
    if codec == "libvpx-vp9":
        return {"crf": str(int(crf)), "b": "0", "deadline": "good", "cpu-used": str(_VP9_SPEED[preset]),
                "row-mt": "1"}
    if codec == "h264_nvenc":  # constant quality (VBR with cq, no bitrate cap), like crf
        return {"preset": _NVENC_PRESET[preset], "tune": "hq", "rc": "vbr", "cq": str(int(crf)), "b": "0"}
    return {}  # gif: lossless apart from the palette
