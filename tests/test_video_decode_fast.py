"""The reader's fast conversions give PyAV's per-frame ``to_ndarray`` pixels (rounded, :mod:`fsvideo.video.colour`):
OpenCV's for 8-bit BT.601 4:2:0 (within its chroma interpolation), one swscale context for the others."""
from __future__ import annotations

import av
import numpy as np
import pytest

from fsvideo.video import VideoReader
from fsvideo.video.colour import EXACT_COLOUR
from fsvideo.video.synth import make_test_clip


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
