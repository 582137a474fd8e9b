"""The reader's fast conversions give PyAV's per-frame ``to_ndarray`` pixels (rounded, :mod:`fsvideo.video.colour`):
OpenCV's for 8-bit 4:2:0 with a linear matrix (within its chroma interpolation), one swscale context for the others."""
from __future__ import annotations

import av
import numpy as np
import pytest

from fsvideo.video import VideoReader, probe
from fsvideo.video.colour import EXACT_COLOUR, Yuv420ToRgb
from fsvideo.video.synth import BT709, make_test_clip, nearest_444, reencode


def _want(path, n=4):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24", src_color_range=int(f.color_range) or None, interpolation=EXACT_COLOUR)
                for f, _ in zip(c.decode(video=0), range(n))]


@pytest.mark.parametrize("name", ["lt-FP006542HD02.mp4", "cremad-1001_DFA_ANG_XX.flv", "liveportrait-d18.mp4"])
def test_reader_pixels_equal_to_ndarray(media_dir, name):
    path = media_dir / "videos" / "other" / name
    want = _want(path)
    got = [f.image for f, _ in zip(VideoReader(path), range(4))]
    assert len(got) == len(want) == 4
    assert not np.array_equal(got[0], got[-1])           # frames kept alive are not one reused buffer
    for g, w in zip(got, want):
        d = g.astype(np.int16) - w
        assert np.abs(d).mean() < 0.5 and np.abs(d.reshape(-1, 3).mean(0)).max() < 0.15


@pytest.mark.parametrize("pix_fmt", ["yuv420p10le", "yuv444p"])
def test_other_formats_use_one_swscale_context(tmp_path, pix_fmt):
    src = tmp_path / "clip.mp4"
    make_test_clip(src, n_frames=3, pix_fmt=pix_fmt, audio=False)
    for g, w in zip([f.image for f in VideoReader(src)], _want(src), strict=True):
        np.testing.assert_array_equal(g, w)


# ---------------------------------------------------------------- other matrices than BT.601: OpenCV too

def _planes(frame) -> list[np.ndarray]:
    return [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width] for p in frame.planes]


def _exact(frame, kr: float, kb: float) -> np.ndarray:
    """float64 [H, W, 3] RGB of ``frame`` by the formula (Kr, Kb of its matrix), chroma as :func:`nearest_444`."""
    y, u, v = (a.astype(np.float64) for a in _planes(nearest_444(frame)))
    if int(frame.color_range) == 2:
        u, v = u - 128, v - 128
    else:
        y, u, v = (y - 16) * 255 / 219, (u - 128) * 255 / 224, (v - 128) * 255 / 224
    r, b = y + 2 * (1 - kr) * v, y + 2 * (1 - kb) * u
    return np.stack([r, (y - kr * r - kb * b) / (1 - kr - kb), b], -1)


def _swscale(frame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24", src_color_range=int(frame.color_range), interpolation=EXACT_COLOUR)


@pytest.mark.parametrize("colorspace, color_range, kr_kb", [(1, 1, (0.2126, 0.0722)), (1, 2, (0.2126, 0.0722)),
                                                            (9, 1, (0.2627, 0.0593)), (6, 2, (0.299, 0.114))])
def test_fast_conversion_is_swscales_exact_one(media_dir, colorspace, color_range, kr_kb):
    """BT.709 (most HD video), BT.2020 and full-range 4:2:0 took swscale's exact path, 5-15 ms a 1080p frame: they
    go through OpenCV too.  Real 1080p frames read with each matrix: within a level of swscale's exact conversion
    of the same chroma samples and of the formula, no bias, nor against swscale's 4:2:0 conversion (which
    interpolates the chroma)."""
    convert = Yuv420ToRgb()
    with av.open(str(media_dir / "videos/other/lt-FP006542HD02.mp4")) as c:
        for frame, _ in zip(c.decode(video=0), range(2)):
            frame.colorspace, frame.color_range = colorspace, color_range
            got = convert(frame)
            assert got.shape == (1080, 1920, 3) and got.dtype == np.uint8
            d = got.astype(np.int16) - _swscale(nearest_444(frame))
            assert np.abs(d).max() <= 1 and np.abs(d.reshape(-1, 3).mean(0)).max() < 0.03
            assert np.abs(got - np.clip(_exact(frame, *kr_kb), 0, 255)).max() < 1
            d = got.astype(np.int16) - _swscale(frame)
            assert np.abs(d.reshape(-1, 3).mean(0)).max() < 0.05 and np.abs(d).mean() < 0.2


@pytest.mark.parametrize("size", [None, (202, 114)])            # 202: rows padded in the decoder's planes
def test_reader_converts_a_bt709_source_in_opencv(media_dir, tmp_path, size):
    """The reader takes the fast path for a BT.709-tagged source, with the BT.709 matrix (read as BT.601 its
    colours would be visibly off)."""
    src = tmp_path / "bt709.mp4"
    reencode(media_dir / "videos/other/liveportrait-d18.mp4", src, 3, colour=BT709, **dict(zip(("width", "height"),
                                                                                             size or ())))
    assert probe(src).color == BT709
    want, as_601 = [], []
    with av.open(str(src)) as c:
        for frame in c.decode(video=0):
            want.append(Yuv420ToRgb()(frame))
            assert np.abs(want[-1].astype(np.int16) - _swscale(nearest_444(frame))).max() <= 1
            frame.colorspace = 6
            as_601.append(Yuv420ToRgb()(frame))
    got = [f.image for f in VideoReader(src)]
    assert len(got) == len(want) == 3
    for g, w, o in zip(got, want, as_601):
        np.testing.assert_array_equal(g, w)
        assert np.abs(g.astype(np.int16) - o).mean() > 1


@pytest.mark.parametrize("colorspace", [0, 8, 10])         # RGB, YCgCo, BT.2020 constant luminance: no matrix
def test_other_colorspaces_stay_with_swscale(colorspace):
    frame = av.VideoFrame(64, 48, "yuv420p")
    frame.colorspace = colorspace
    assert Yuv420ToRgb()(frame) is None
