"""Valid but awkward media through the reader and writer: non-square pixels, colour ranges, bit depths."""
from __future__ import annotations

from fractions import Fraction

import pytest

from fsvideo.utils import atomic_output
from fsvideo.video import VideoReader, VideoWriter, probe
from fsvideo.video.synth import make_test_clip


def roundtrip(src, dst, **kw):
    """decode -> encode the way the pipeline does (the source's info, audio and timing)."""
    info = probe(src)
    with atomic_output(dst) as tmp, VideoWriter(tmp, info, audio_from=src, preset="ultrafast", **kw) as w:
        for f in VideoReader(src, info=info):
            w.write_frame(f)
    return info, probe(dst)


@pytest.mark.parametrize("ext", [".mp4", ".mkv", ".mov"])
def test_anamorphic_output_keeps_the_pixel_aspect(tmp_path, ext):
    """720x576 stored for a 16:9 picture (SAR 64:45): the output keeps the SAR, so it still shows 1024x576
    (it was written with square pixels: a 5:4 picture, every face squeezed to 70 % of its width)."""
    src = tmp_path / "pal169.mp4"
    make_test_clip(src, n_frames=3, width=720, height=576, sar=Fraction(64, 45), audio=False)
    info, out = roundtrip(src, tmp_path / f"out{ext}")
    assert info.sar == Fraction(64, 45) and (info.width, info.height) == (720, 576)
    assert out.sar == Fraction(64, 45) and (out.width, out.height) == (720, 576)


def test_anamorphic_rotated_and_written_upright_turns_the_pixel_aspect(tmp_path):
    """A phone clip stored sideways with non-square pixels, written upright: the aspect turns with the picture."""
    src = tmp_path / "rot.mp4"
    make_test_clip(src, n_frames=2, width=64, height=48, sar=Fraction(4, 3), rotation=90, audio=False)
    _, out = roundtrip(src, tmp_path / "up.mp4", keep_rotation=False)
    assert out.rotation == 0 and out.sar == Fraction(3, 4)
