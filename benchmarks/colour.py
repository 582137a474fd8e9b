"""The reader's and the writer's colour conversions on real 1080p frames: milliseconds a frame and error.

Usage::

    python benchmarks/colour.py                  # the shared 1080p clip's frames read as BT.709
    python benchmarks/colour.py --frames 24 --opencv-threads 1

The shared 1080p clip is untagged (BT.601); its decoded planes are tagged BT.709 here (no file is
written), as most HD video is.  YUV -> RGB: swscale's exact path (what the reader used for BT.709),
swscale's default (biased), :class:`~fsvideo.video.colour.Yuv420ToRgb` (the reader's now), and
OpenCV's BT.601 conversion of the untagged frames for comparison.  Error: against swscale's exact
conversion of the same chroma samples (4:4:4, each sample over its 2x2 block: the reader's siting;
max and mean per channel), and the mean against swscale's exact 4:2:0 conversion (which interpolates
the chroma).  RGB -> YUV (the writer): swscale's exact path against
:func:`~fsvideo.video.colour.rgb_to_yuv420_matrix` and the BT.601 OpenCV path.  The machine's load
average is printed: on a shared machine the numbers move with it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from av.video.reformatter import VideoReformatter  # noqa: E402

from fsvideo.video.colour import EXACT_COLOUR, Yuv420ToRgb, rgb_to_yuv420, rgb_to_yuv420_matrix  # noqa: E402
from fsvideo.video.synth import nearest_444  # noqa: E402

CLIP = Path(os.environ.get("FSVIDEO_SHARED", REPO.parent / "shared")) / "media/videos/other/lt-FP006542HD02.mp4"


def ms_per_frame(fn, items, repeats: int = 5) -> float:
    """Median over ``repeats`` passes of the mean milliseconds of ``fn`` on each of ``items``."""
    fn(items[0])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x in items:
            fn(x)
        times.append((time.perf_counter() - t0) / len(items) * 1000)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", type=Path, default=CLIP, help="an 8-bit 4:2:0 video (default: the shared 1080p clip)")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--opencv-threads", type=int, default=None, help="cv2.setNumThreads (default: OpenCV's)")
    a = ap.parse_args(argv)
    if a.opencv_threads is not None:
        cv2.setNumThreads(a.opencv_threads)
    with av.open(str(a.clip)) as c:
        untagged = [f for f, _ in zip(c.decode(video=0), range(a.frames))]
    with av.open(str(a.clip)) as c:
        tagged = [f for f, _ in zip(c.decode(video=0), range(a.frames))]
    for f in tagged:
        f.colorspace, f.color_range = 1, 1
    exact, default = VideoReformatter(), VideoReformatter()
    new, bt601 = Yuv420ToRgb(), Yuv420ToRgb()

    def sws_exact(f):
        return exact.reformat(f, format="rgb24", src_color_range=1, interpolation=EXACT_COLOUR).to_ndarray()

    def sws_default(f):
        return default.reformat(f, format="rgb24", src_color_range=1).to_ndarray()

    print(f"{a.clip.name}: {tagged[0].width}x{tagged[0].height}, {len(tagged)} frames; OpenCV threads "
          f"{cv2.getNumThreads()}; ms a frame (median of 5 passes)")
    print("YUV -> RGB                           ms     vs swscale exact, same chroma: max  mean R G B   "
          "| vs swscale 4:2:0: mean R G B")
    refs = [sws_exact(nearest_444(f)).astype(np.int16) for f in tagged[:3]]
    whole = [sws_exact(f).astype(np.int16) for f in tagged[:3]]
    for name, fn, frames in (("swscale exact (BT.709, was)", sws_exact, tagged),
                             ("swscale default (biased)", sws_default, tagged),
                             ("Yuv420ToRgb (BT.709, now)", new, tagged),
                             ("OpenCV BT.601 (untagged clip)", bt601, untagged)):
        line = f"{name:32s} {ms_per_frame(fn, frames):6.2f}"
        if frames is tagged:
            d = np.concatenate([(fn(f) - r).reshape(-1, 3) for f, r in zip(tagged, refs)])
            w = np.concatenate([(fn(f) - r).reshape(-1, 3) for f, r in zip(tagged, whole)])
            line += (f"     {np.abs(d).max():3d}  {np.array2string(d.mean(0), precision=3)}"
                     f"   | {np.array2string(w.mean(0), precision=3)}")
        print(line)
    images = [new(f) for f in tagged]
    writer, scratch = VideoReformatter(), {}

    def sws_rgb_to_yuv(img):
        return writer.reformat(av.VideoFrame.from_ndarray(img, format="rgb24"), format="yuv420p", dst_colorspace=1,
                               dst_color_range=1, interpolation=EXACT_COLOUR)

    print("RGB -> YUV 4:2:0                     ms")
    for name, fn in (("swscale exact (BT.709, was)", sws_rgb_to_yuv),
                     ("rgb_to_yuv420_matrix (BT.709, now)", lambda i: rgb_to_yuv420_matrix(i, 1, False, scratch=scratch)),
                     ("rgb_to_yuv420_matrix (full range)", lambda i: rgb_to_yuv420_matrix(i, 1, True, scratch=scratch)),
                     ("rgb_to_yuv420 (BT.601, OpenCV)", rgb_to_yuv420)):
        print(f"{name:36s} {ms_per_frame(fn, images):6.2f}")
    load = os.getloadavg()
    print(f"load average (1, 5, 15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
