"""Blend masks at the face's size in the frame against masks at the crop's size (issue 11 point 6).

Usage::

    python benchmarks/mask_side.py                     # 480p and 1080p clips, 60 frames each
    python benchmarks/mask_side.py --frames 120 --json

The ``mask`` stage computes each face's mask at :func:`fsvideo.faces.blend.mask_side` (the crop's
side in frame pixels, rounded up to a fixed side) instead of at the crop's own 1024 px.  This runs
``track_align`` (dlib landmarks on every frame, the default stabiliser, 1024 px crops), then the
``mask`` and ``blend`` stages twice on the same packets: once with masks at the crop's side (the
previous path, ``MaskStage(sides=None)``) and once with the default sides, and compares the blended
frames.  Two stand-ins for the generated face:

* ``edit``: the crop with its colours moved (red +40, blue -40 grey levels), an edit's order of size;
* ``invert``: 255 - crop, the worst case: the face differs from the frame by up to 255 everywhere, so
  any difference between the two masks shows at full strength.

It prints, per clip and stand-in, the largest and the mean absolute difference (grey levels, over
the pixels the reference paste changed), the share of those pixels more than 2 levels apart, the
mask sides used, and the ``mask`` and ``blend`` stages' milliseconds per frame on each path (one
process, the two paths one after the other: compare them within a run on a shared machine).  The clips are read from
``$FSVIDEO_SHARED`` (default ``../shared``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

MEDIA = Path(os.environ.get("FSVIDEO_SHARED", REPO.parent / "shared")) / "media" / "videos" / "other"
CLIPS = {"480p": MEDIA / "liveportrait-d18.mp4", "1080p": MEDIA / "lt-FP006542HD02.mp4"}
STAND_INS = {
    "edit": lambda c: np.clip(c.astype(np.int16) + np.array([40, 0, -40], np.int16), 0, 255).astype(np.uint8),
    "invert": lambda c: 255 - c,
}


def aligned_packets(clip: Path, frames: int, size: int = 1024) -> list[dict]:
    """``track_align``'s packets (``faces``, ``aligned``, ``image``) for the first ``frames`` frames."""
    from fsvideo.faces import make_detector
    from fsvideo.faces.stream import FaceAligner
    from fsvideo.pipeline.face_stages import TrackAlignStage
    from fsvideo.video import VideoReader, probe
    info = probe(clip)
    det = make_detector("dlib", max_side=640)
    stage = TrackAlignStage(FaceAligner(None, float(info.fps or 25), output_size=size, source=clip.name))
    packets = [{"index": i, "image": f.image, "detections": det.detect(f.image)}
               for i, f in zip(range(frames), VideoReader(clip, info=info))]
    return stage.process(packets) + stage.flush()


def masks_and_blend(packets: list[dict], fps: float, sides, stand_in) -> tuple[list[np.ndarray], float, float, Counter]:
    """The blended frames, the mask and blend stages' seconds per frame and the mask sides used."""
    from fsvideo.pipeline.face_stages import BlendStage, MaskStage
    mask, blend = MaskStage(fps, sides=sides), BlendStage()
    ps = [{"image": p["image"], "faces": p["faces"],
           "generated": np.stack([stand_in(a.image) for a in p["aligned"]]) if p["aligned"] else
           np.zeros((0, 1, 1, 3), np.uint8)} for p in packets]
    t0 = time.perf_counter()
    ps = mask.process(ps)
    mask_s = (time.perf_counter() - t0) / max(1, len(ps))
    sides_used = Counter(m.shape[0] for p in ps for m in p["masks"])
    t0 = time.perf_counter()
    ps = blend.process(ps)
    blend_s = (time.perf_counter() - t0) / max(1, len(ps))
    return [p["output"] for p in ps], mask_s, blend_s, sides_used


def compare(label: str, clip: Path, frames: int) -> list[dict]:
    from fsvideo.faces.blend import MASK_SIDES
    from fsvideo.video import probe
    fps = float(probe(clip).fps or 25)
    packets = aligned_packets(clip, frames)
    rows = []
    for name, stand_in in STAND_INS.items():
        ref, ref_s, ref_b, _ = masks_and_blend(packets, fps, None, stand_in)
        got, got_s, got_b, sides = masks_and_blend(packets, fps, MASK_SIDES, stand_in)
        diffs, changed_n, over2 = [], 0, 0
        for p, r, g in zip(packets, ref, got):
            changed = (r != p["image"]).any(axis=2) | (g != p["image"]).any(axis=2)
            d = np.abs(r.astype(np.int16) - g)[changed]
            diffs.append(d)
            changed_n += int(changed.sum())
            over2 += int((d.max(axis=1) > 2).sum()) if d.size else 0
        d = np.concatenate([x.ravel() for x in diffs]) if diffs else np.zeros(1)
        rows.append(dict(clip=label, file=clip.name, frames=len(packets), stand_in=name,
                         max_diff=int(d.max()), mean_diff=round(float(d.mean()), 4),
                         share_over_2=round(over2 / max(1, changed_n), 5), sides=dict(sides),
                         mask_ms_crop=round(1000 * ref_s, 2), mask_ms_frame=round(1000 * got_s, 2),
                         blend_ms_crop=round(1000 * ref_b, 2), blend_ms_frame=round(1000 * got_b, 2)))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", nargs="+", default=list(CLIPS), choices=list(CLIPS))
    ap.add_argument("--frames", type=int, default=60, help="frames per clip (from the start)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    a = ap.parse_args(argv)
    if a.frames < 1:
        ap.error("--frames must be at least 1")
    rows = [r for c in a.clips for r in compare(c, CLIPS[c], a.frames)]
    load = os.getloadavg()
    if a.json:
        print(json.dumps(dict(rows=rows, load_average=load), indent=1))
        return
    print(f"{'clip':<7}{'stand-in':<9}{'frames':>7}{'max':>6}{'mean':>8}{'>2 lv':>8}{'mask ms 1024 / S':>18}"
          f"{'blend ms 1024 / S':>19}  sides S")
    for r in rows:
        print(f"{r['clip']:<7}{r['stand_in']:<9}{r['frames']:>7}{r['max_diff']:>6}{r['mean_diff']:>8.3f}"
              f"{100 * r['share_over_2']:>7.2f}%{r['mask_ms_crop']:>10.2f} /{r['mask_ms_frame']:>6.2f}"
              f"{r['blend_ms_crop']:>11.2f} /{r['blend_ms_frame']:>6.2f}  {r['sides']}")
    print(f"differences in grey levels over the pixels either paste changed; load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
