"""RGB <-> YUV conversions that round instead of truncating, so a decode -> encode keeps the colours.

Measured on real clips (mean colour of the frames against the exact BT.601/709 formulas), swscale's
default conversions are biased:

* YUV -> RGB (the reader): the fast path truncates, every frame about one level dark (R, G, B
  -0.86, -1.42, -1.14 on the shared 1080p clip; -1.05, -1.52, -1.24 at 640x360).  With
  :data:`EXACT_COLOUR` (rounded, chroma interpolated to full width) the bias is under 0.02 level,
  but the conversion costs 5-14 ms a 1080p frame instead of 0.5-1.5 (2 loaded cores).  8-bit 4:2:0
  goes through OpenCV instead (:class:`Yuv420ToRgb`, rounded, bias under 0.04 level, 0.12-0.13 level
  from swscale's exact conversion on average: its chroma is not interpolated): limited-range BT.601
  (or untagged, which swscale also reads as BT.601) in 0.4-1.5 ms with the planes' copy, BT.709 (most
  HD video), BT.2020 and full range in 1.3-2.5 ms against swscale's 7-14 (``benchmarks/colour.py``).
* RGB -> limited-range BT.601 4:2:0 (the writer's common case; :func:`encoder_frame` picks the path)
  goes through OpenCV (:func:`rgb_to_yuv420`: rounded, chroma from 2x2 means, about 2 ms a 1080p frame
  against 3.3 ms for swscale's rounded path).
* RGB -> full-range YUV (the writer, for a full-range source: phones' ``yuvj420p``, webcams' MJPEG,
  PNG/FFV1 RGB video): swscale centres the chroma half a level low, whatever its flags and bit depth
  (-0.5 in Cb and Cr, 2 levels of R and B after the round trip of a ``yuvj420p`` clip).
  :func:`rgb_to_yuv420_matrix` converts with the exact matrix instead (cv2, 5-8 ms a 1080p frame on 2
  loaded cores, about swscale's time; the numpy version it replaced took 145), as
  it does limited-range BT.709 and BT.2020 (swscale's chroma filter is not the 2x2 mean that undoes the
  reader's siting: 0.2 % of the pixels 2-4 levels off after a decode -> encode of a BT.709 clip).
"""
from __future__ import annotations

import functools

import av
import av.error
import numpy as np
from av.video.reformatter import Interpolation

#: swscale flags: rounded (ACCURATE_RND), chroma interpolated to / from full width (FULL_CHR_H_INT).
EXACT_COLOUR = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT

# (Kr, Kb) of each FFmpeg colorspace (AVColorSpace); anything else (unspecified, RGB) is what swscale
# assumes untagged: BT.601.
_KR_KB = {1: (0.2126, 0.0722), 4: (0.30, 0.11), 5: (0.299, 0.114), 6: (0.299, 0.114), 7: (0.212, 0.087),
          9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}
# Those whose YUV is a matrix of R'G'B' as swscale reads it (2, unspecified: BT.601); BT.2020 constant
# luminance (10) is not, YCgCo (8) and RGB (0) have no Kr, Kb.
_MATRIX_COLORSPACES = frozenset({1, 2, 4, 5, 6, 7, 9})


def _rgb_to_yuv(colorspace: int | None, full: bool) -> np.ndarray:
    """float64 [4, 4] affine map of (R, G, B, 1), 0..255, to (Y, Cb, Cr, 1) with ``colorspace``'s
    matrix, full range (chroma centred on 128) or limited (Y 16..235, chroma 16..240)."""
    kr, kb = _KR_KB.get(int(colorspace or 0), (0.299, 0.114))
    kg = 1.0 - kr - kb
    ys, cs, y0 = (1.0, 1.0, 0.0) if full else (219 / 255, 224 / 255, 16.0)
    return np.array([[ys * kr, ys * kg, ys * kb, y0],
                     [-cs * kr / (2 * (1 - kb)), -cs * kg / (2 * (1 - kb)), cs / 2, 128.0],
                     [cs / 2, -cs * kg / (2 * (1 - kr)), -cs * kb / (2 * (1 - kr)), 128.0],
                     [0.0, 0.0, 0.0, 1.0]])


@functools.lru_cache(maxsize=None)
def _yuv_to_rgb_fixed(colorspace: int, full: bool) -> np.ndarray:
    """float32 [3, 4] for ``cv2.transform`` of uint8 (Y, Cb, Cr) to RGB: the exact matrix (the inverse
    of :func:`_rgb_to_yuv`) as OpenCV's 8-bit transform computes it, coefficients in steps of 1/1024
    and the sum rounded.  Rounding the coefficients alone left a bias (-0.05 level in B on the shared
    1080p clip read as BT.709): the offsets take it back at the middle of the range, so the error is
    zero on average and within a level everywhere."""
    m = np.linalg.inv(_rgb_to_yuv(colorspace, full))[:3]
    q = np.round(m[:, :3] * 1024) / 1024
    centre = np.array([127.5 if full else 125.5, 128.0, 128.0])
    offset = np.round((m[:, 3] + (m[:, :3] - q) @ centre) * 1024) / 1024
    out = np.hstack([q, offset[:, None]]).astype(np.float32)
    out.flags.writeable = False
    return out


def _buffer(scratch: dict | None, name: str, shape: tuple[int, ...], dtype=np.uint8) -> np.ndarray:
    """``scratch[name]`` (kept from frame to frame: fresh 1080p planes each frame, page faults on 10-30 MB,
    cost more than the conversions themselves), made anew when its shape changes; a new array without
    ``scratch``."""
    a = None if scratch is None else scratch.get(name)
    if a is None or a.shape != shape or a.dtype != dtype:
        a = np.empty(shape, dtype)
        if scratch is not None:
            scratch[name] = a
    return a


def rgb_to_yuv420_matrix(image: np.ndarray, colorspace: int | None, full: bool, pix_fmt: str = "yuv420p",
                         scratch: dict | None = None) -> av.VideoFrame:
    """An 8-bit 4:2:0 frame (``pix_fmt`` ``yuv420p``, or ``yuvj420p`` when ``full``) of uint8 [H, W, 3]
    RGB ``image`` (even H and W), with the exact ``colorspace`` matrix (None: BT.601), full or limited
    range: each luma sample rounded, each chroma sample the rounded mean of its 2x2 block (exact sums
    converted in float), the inverse of :class:`Yuv420ToRgb`'s siting, so that a decode -> encode keeps
    the planes.  ``scratch``: a dict the caller keeps for one video (see :func:`_buffer`).  OpenCV,
    about as fast as swscale's rounded path, which centres full-range chroma half a level low (the mean
    of the chroma in numpy took 100 ms a 1080p frame)."""
    import cv2

    h, w = image.shape[:2]
    image = np.ascontiguousarray(image)
    m = _rgb_to_yuv(colorspace, full)[:3].astype(np.float32)
    # Each output from one transform to one channel: OpenCV computes those in float and rounds.
    y = cv2.transform(image, m[:1], dst=_buffer(scratch, "y", (h, w)))
    # (numpy adds the row pairs faster than OpenCV, OpenCV the strided pixel pairs: 0.4 + 1 ms at 1080p)
    rows = np.add(image[0::2], image[1::2], out=_buffer(scratch, "rows", (h // 2, w, 3), np.uint16),
                  dtype=np.uint16).reshape(-1, 6)                             # pixel pairs of row pairs
    sums = cv2.add(rows[:, :3], rows[:, 3:], dst=_buffer(scratch, "sums", (h // 2 * (w // 2), 3), np.uint16))
    sums = sums.reshape(h // 2, w // 2, 3)                                    # each 2x2 block's sum
    chroma = [cv2.transform(sums, np.hstack([m[k:k + 1, :3] / 4, m[k:k + 1, 3:]]),
                            dst=_buffer(scratch, f"c{k}", (h // 2, w // 2), np.uint16)) for k in (1, 2)]
    frame = av.VideoFrame(w, h, pix_fmt)
    for plane, a in zip(frame.planes, (y, *(c.astype(np.uint8) for c in chroma))):
        if plane.line_size != a.shape[1]:
            a = np.pad(a, ((0, 0), (0, plane.line_size - a.shape[1])))
        plane.update(np.ascontiguousarray(a))
    frame.color_range = av.video.reformatter.ColorRange.JPEG if full else av.video.reformatter.ColorRange.MPEG
    if colorspace:
        frame.colorspace = int(colorspace)
    return frame


class Yuv420ToRgb:
    """Converts 8-bit 4:2:0 frames (``yuv420p``, ``yuvj420p``) of even size whose matrix is linear
    (BT.601 or untagged, BT.709, BT.2020 non-constant luminance, FCC, SMPTE 240M), limited or full
    range, to uint8 [H, W, 3] RGB with OpenCV (rounded, fast).  Calling it returns None for any other
    frame (convert that with swscale and :data:`EXACT_COLOUR`).

    Each 2x2 block of pixels takes its block's chroma sample, as OpenCV's own conversion does for the
    common case, limited-range BT.601 or untagged.  The others go through one ``cv2.transform`` of
    (Y, Cb, Cr) with the exact matrix (:func:`_yuv_to_rgb_fixed`): within a level of the exact
    conversion and no bias, 1-3 ms a 1080p frame where swscale's exact path takes 5-15 (2 loaded
    cores).  One converter serves one video: it keeps its scratch planes from frame to frame
    (:func:`_buffer`).
    """

    def __init__(self):
        self._scratch: dict[str, np.ndarray] = {}

    def _buffer(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        return _buffer(self._scratch, name, shape)

    def __call__(self, frame: av.VideoFrame) -> np.ndarray | None:
        import cv2

        w, h = frame.width, frame.height
        name, colorspace = frame.format.name, int(frame.colorspace)
        if name not in ("yuv420p", "yuvj420p") or colorspace not in _MATRIX_COLORSPACES or w % 2 or h % 2:
            return None
        full = name == "yuvj420p" or int(frame.color_range) == 2
        y, u, v = (np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width] for p in frame.planes)
        if not full and colorspace in (2, 5, 6):
            i420 = self._buffer("i420", (h * 3 // 2, w))
            i420[:h] = y
            chroma = i420[h:].reshape(2, -1)
            chroma[0] = u.ravel()
            chroma[1] = v.ravel()
            return cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)
        # Each pair of rows as one row twice as wide: its chroma row doubled horizontally, then tiled
        # (cheaper than scaling the chroma planes to full size).
        if y.strides[0] != w:                   # padded rows: a pair is contiguous only without padding
            packed = self._buffer("y", (h, w))
            packed[:] = y
            y = packed
        pairs = [cv2.repeat(cv2.resize(c, (w, h // 2), dst=self._buffer(f"{k}1", (h // 2, w)),
                                       interpolation=cv2.INTER_NEAREST), 1, 2, dst=self._buffer(f"{k}2", (h // 2, 2 * w)))
                 for k, c in (("u", u), ("v", v))]
        yuv = cv2.merge([y.reshape(h // 2, 2 * w), *pairs], dst=self._buffer("yuv", (h // 2, 2 * w, 3)))
        return cv2.transform(yuv, _yuv_to_rgb_fixed(colorspace, full)).reshape(h, w, 3)


def rgb_to_yuv420(image: np.ndarray) -> av.VideoFrame:
    """A limited-range BT.601 ``yuv420p`` frame of uint8 [H, W, 3] RGB ``image`` (even H and W), converted
    by OpenCV: the inverse of :class:`Yuv420ToRgb` for that case.  Luma is within 0.6 level of exact, chroma that of
    each 2x2 block's mean colour rounded twice (under 1 level; swscale's rounded conversion is up to 2
    levels off); about 1 ms a 1080p frame against 3.3 for swscale's rounded path."""
    import cv2

    h, w = image.shape[:2]
    i420 = cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420)
    # OpenCV takes each 2x2 block's chroma from its top-left pixel (aliasing a sharp colour edge): the
    # chroma comes from the blocks' mean colours instead (linear, so the mean of the four chromas)
    mean = cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    i420[h:] = cv2.cvtColor(cv2.resize(mean, (w, h), interpolation=cv2.INTER_NEAREST), cv2.COLOR_RGB2YUV_I420)[h:]
    return av.VideoFrame.from_ndarray(i420, format="yuv420p")


def encoder_frame(image: np.ndarray, pix_fmt: str, colorspace: int | None, color_range: int | None,
                  reformatter, scratch: dict | None = None) -> av.VideoFrame:
    """The ``pix_fmt`` frame an encoder takes for uint8 [H, W, 3] RGB ``image`` (sizes even where the
    chroma is subsampled), converted with ``colorspace`` (None: BT.601) and ``color_range`` (2: full):
    OpenCV for 8-bit 4:2:0 (:func:`rgb_to_yuv420`, :func:`rgb_to_yuv420_matrix` with ``scratch``, a
    dict kept for the video), a palette for GIF, and ``reformatter`` (one swscale context a video)
    rounded with :data:`EXACT_COLOUR` otherwise."""
    if pix_fmt == "pal8":
        return palette_frame(image)
    if color_range == 2 and pix_fmt in ("yuv420p", "yuvj420p"):
        return rgb_to_yuv420_matrix(image, colorspace, True, pix_fmt, scratch)          # swscale's is biased
    if pix_fmt == "yuv420p" and colorspace in (None, 5, 6):
        return rgb_to_yuv420(image)
    if pix_fmt == "yuv420p" and colorspace in _MATRIX_COLORSPACES:       # BT.709, BT.2020...: the reader's siting
        return rgb_to_yuv420_matrix(image, colorspace, False, scratch=scratch)
    return reformatter.reformat(av.VideoFrame.from_ndarray(image, format="rgb24"), format=pix_fmt,
                                dst_colorspace=colorspace, dst_color_range=color_range, interpolation=EXACT_COLOUR)


def palette_frame(img: np.ndarray) -> av.VideoFrame:
    """A ``pal8`` frame of uint8 [H, W, 3] RGB ``img`` with its own 256-colour palette (for GIF)."""
    from PIL import Image

    q = Image.fromarray(img, "RGB").quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    pal = np.zeros((256, 4), np.uint8)  # PyAV takes the palette as A, R, G, B bytes per entry
    rgb = np.asarray(q.getpalette()[: 256 * 3], np.uint8).reshape(-1, 3)
    pal[:, 0] = 255
    pal[: len(rgb), 1:] = rgb
    return av.VideoFrame.from_ndarray((np.asarray(q, np.uint8), pal), format="pal8")


def pix_fmt_bits(pix_fmt: str) -> int:
    """Bits per component of ``pix_fmt`` (8 when unknown)."""
    try:
        return max(c.bits for c in av.VideoFormat(pix_fmt).components)
    except (ValueError, av.error.FFmpegError):
        return 8


def is_rgb(pix_fmt: str) -> bool:
    """``pix_fmt`` stores RGB (PNG, FFV1 ``bgr0``, QuickTime Animation ``argb``...), not YUV."""
    try:
        return bool(av.VideoFormat(pix_fmt).is_rgb)
    except (ValueError, av.error.FFmpegError):
        return False


_HDR_TRC = {16: "PQ", 18: "HLG"}     # AVColorTransferCharacteristic of HDR transfer functions


def pixel_conversion(src_pix_fmt: str, src_trc: int | None, out_pix_fmt: str) -> list[str]:
    """What writing a ``src_pix_fmt`` source as ``out_pix_fmt`` loses, in words (empty: nothing).

    fsvideo edits 8-bit RGB frames, so a deeper source is rounded to 8 bits whatever the output; an
    output of the same depth as the source at least keeps its format (an HDR10 file must be 10-bit)."""
    try:
        src, out = av.VideoFormat(src_pix_fmt), av.VideoFormat(out_pix_fmt)
    except (ValueError, av.error.FFmpegError):
        return []
    if out.has_palette or src.has_palette:
        return []
    parts = []
    src_bits, out_bits = pix_fmt_bits(src_pix_fmt), pix_fmt_bits(out_pix_fmt)
    if src_bits > 8:
        parts.append(f"{src_bits}-bit edited in 8 bits" + (f", written {out_bits}-bit" if out_bits > 8 else ""))
    if src.is_rgb and not out.is_rgb:
        parts.append("RGB to YUV")
    if len(src.components) >= 3 and (out.chroma_width(4), out.chroma_height(4)) < (src.chroma_width(4),
                                                                                 src.chroma_height(4)):
        names = {(4, 4): "4:4:4", (2, 4): "4:2:2", (2, 2): "4:2:0", (4, 2): "4:4:0", (1, 4): "4:1:1"}
        s, o = ((f.chroma_width(4), f.chroma_height(4)) for f in (src, out))
        if not src.is_rgb:
            parts.append(f"{names.get(s, 'full')} chroma to {names.get(o, 'subsampled')}")
        else:
            parts[-1] += f" {names.get(o, 'subsampled')}"
    if any(c.is_alpha for c in src.components) and not any(c.is_alpha for c in out.components):
        parts.append("alpha channel dropped")
    hdr = _HDR_TRC.get(int(src_trc or 0))
    if hdr and out_bits < 10:
        parts.append(f"HDR ({hdr}) in 8 bits, its colour tags kept")
    return parts
