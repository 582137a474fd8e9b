"""The reader's one swscale context per video gives the same pixels as PyAV's per-frame ``to_ndarray``."""
from __future__ import annotations

import av
import numpy as np
import pytest

from fsvideo.video import VideoReader


@pytest.mark.parametrize("name", ["lt-FP006542HD02.mp4", "cremad-1001_DFA_ANG_XX.flv", "liveportrait-d18.mp4"])
def test_reader_pixels_equal_to_ndarray(media_dir, name):
    path = media_dir / "videos" / "other" / name
    with av.open(str(path)) as c:
        want = [f.to_ndarray(format="rgb24", src_color_range=int(f.color_range) or None)
                for f, _ in zip(c.decode(video=0), range(4))]
    got = [f.image for f, _ in zip(VideoReader(path), range(4))]
    assert len(got) == len(want) == 4
    assert not np.array_equal(got[0], got[-1])           # frames kept alive are not one reused buffer
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
