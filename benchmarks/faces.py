"""Face front end: detection, alignment, stabilisation, paste-back (ms per frame), and jitter.

Run:  python benchmarks/faces.py [--frames 60] [--clips pyfeat-single_face.mp4 liveportrait-d18.mp4]

For each clip (first N frames of ../shared/media/videos/other/<clip>):

* detection (dlib HOG + 68 landmarks) at full size and on a 320 / 640 px copy,
* alignment to 1024: the exact FFHQ procedure and the fast cv2 path,
* stabilisation (FaceStabilizer with optical flow, default strength) per frame,
* paste-back of a 1024 crop (alpha blend; Poisson),
* jitter: ``crop_jitter`` (mean frame-to-frame motion of brow/eye/nose landmarks inside 256 px
  crops, followed by optical flow) without stabilisation, with the default and the official
  strength, and with the optical flow alone.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fsvideo.faces import (DlibDetector, FaceStabilizer, align_face, align_face_fast,  # noqa: E402
                           align_quad_fast, landmark_mask, paste_back)
from fsvideo.faces.stabilize import crop_jitter, stabilize_sequence  # noqa: E402
from fsvideo.video import VideoReader  # noqa: E402


def _ms(fn, items, repeat: int = 1) -> float:
    t = time.perf_counter()
    for _ in range(repeat):
        for it in items:
            fn(it)
    return 1000 * (time.perf_counter() - t) / (repeat * len(items))


def _row(label: str, value: float, unit: str) -> None:
    print(f"  {label + ':':42s} {value:8.2f} {unit}")


def _frames(path: Path, n: int):
    r = VideoReader(path)
    frames = []
    for fr in r:
        if fr.index >= n:
            break
        frames.append(fr.image)
    return frames, float(r.info.fps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--clips", nargs="+", default=["pyfeat-single_face.mp4", "liveportrait-d18.mp4",
                                                    "styleganex-pexels-anthony-shkraba-production-8136210.mp4",
                                                    "cremad-1001_DFA_ANG_XX.flv"])
    ap.add_argument("--shared", default=os.environ.get("FSVIDEO_SHARED", str(REPO.parent / "shared")))
    args = ap.parse_args()
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass
    import cv2
    cv2.setNumThreads(1)
    media = Path(args.shared) / "media" / "videos" / "other"
    print(f"CPU threads: 1 (cv2, torch); first {args.frames} frames of each clip")
    for clip in args.clips:
        frames, fps = _frames(media / clip, args.frames)
        h, w = frames[0].shape[:2]
        print(f"\n== {clip}: {w}x{h}, {fps:g} fps, {len(frames)} frames")
        sub = frames[:10]
        for ms_ in (None, 640, 320):
            det = DlibDetector(max_side=ms_)
            t = _ms(det.detect, sub)
            _row(f"detect dlib HOG, boxes at {'full size' if ms_ is None else f'{ms_} px'}", t, "ms/frame")
        det = DlibDetector(max_side=320)
        lms = [(f[0].landmarks if f else None) for f in (det.detect(im) for im in frames)]
        ok = [i for i, lm in enumerate(lms) if lm is not None]
        print(f"  faces found in {len(ok)}/{len(frames)} frames (boxes at 320 px)")
        if len(ok) < 2:
            continue
        pairs = [(frames[i], lms[i]) for i in ok[:10]]
        t = _ms(lambda p: align_face(p[0], p[1], 1024), pairs[:3])
        _row("align exact FFHQ (1024, T=4096)", t, "ms/face")
        for size in (1024, 256):
            t = _ms(lambda p: align_face_fast(p[0], p[1], size), pairs)
            _row(f"align fast cv2 ({size})", t, "ms/face")
        for flow in (True, False):
            def run(_):
                st = FaceStabilizer(fps, optical_flow=flow)
                for i, (im, lm) in enumerate(zip(frames, lms)):
                    st.push(i, im, lm)
                st.flush()
            t = _ms(run, [0]) / len(frames)
            _row(f"stabilise ({'with' if flow else 'no'} optical flow)", t, "ms/frame")
        a = align_face_fast(*pairs[0], 1024)
        mask = landmark_mask(a.landmarks, 1024)
        for poisson in (False, True):
            t = _ms(lambda _: paste_back(pairs[0][0], a.image, a.matrix, mask, poisson=poisson), range(4))
            _row(f"paste back 1024 crop, {'Poisson' if poisson else 'alpha blend'}", t, "ms/face")
        # Jitter on the frames with a face (consecutive run from the start).
        run_end = next((k for k, i in enumerate(ok) if i != k), len(ok))
        fr, lm = frames[:run_end], lms[:run_end]
        raw = [align_face_fast(im, l, 256) for im, l in zip(fr, lm)]
        rows = [("none (each frame aligned alone)",
                 crop_jitter([x.image for x in raw], [x.landmarks for x in raw]))]
        for name, kw in [("default (flow + sigma 0.03 s / 0.06 s)", {}),
                         ("official strength (flow + 0.1 s / 0.2 s)", {"sigma_s": 0.1}),
                         ("optical flow only", {"sigma_s": 0.0}),
                         ("smoothing only (sigma 0.03 s, no flow)", {"optical_flow": False})]:
            st = stabilize_sequence(lm, fps, images=fr, **kw)
            al = [align_quad_fast(fr[s.index], s.quad, 256, landmarks=s.landmarks)
                  for s in st if s.quad is not None]
            rows.append((name, crop_jitter([x.image for x in al], [x.landmarks for x in al])))
        print(f"  jitter over {run_end} frames (px at 256, mean frame-to-frame landmark motion in the crop):")
        for name, j in rows:
            print(f"    {name:42s} {j:6.3f}  ({j / rows[0][1]:.0%})")


if __name__ == "__main__":
    main()
