"""How far a video split in time (``--split-time``) moves the face crops at a seam, by context length.

A span edited on its own starts the face stabiliser afresh.  Its look-ahead (at most
``FaceStabilizer.delay`` frames, 0.4 s at the defaults) is covered by any context, but its
optical-flow refinement is a recursive filter: each frame's landmarks blend the detection with the
previous frame's landmarks tracked forward, so a different start fades only as fast as that blend
forgets.  This measures, on shared clips, the largest distance (pixels, and in units of the face
size) between the crop quads of a single run and of a run split in the middle, for the frames
after the seam, for several context lengths; and, as the scale it should be small against, the
frame-to-frame motion of the stabilised quads of the single run (median).

    python benchmarks/split_seams.py [--context 0 0.5 1 2 4] [--clips ...]

Detections are computed once per clip (dlib) and replayed, so only the stabiliser differs.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media" / "videos" / "other"
CLIPS = ["pyfeat-single_face.mp4", "facerec-short_hamilton_clip.mp4", "liveportrait-d18.mp4",
         "cremad-1001_DFA_ANG_XX.flv"]


def quads(frames, detections, fps, lo, hi, stabilize=0.03):
    """Stabilised quad of the largest face for frames[lo:hi] pushed as one stream: {index: [4, 2]}."""
    from fsvideo.faces.stream import FaceAligner
    fa = FaceAligner(None, fps, output_size=64, policy="largest", sigma_s=stabilize)
    out = {}
    done = []
    for i in range(lo, hi):
        done += fa.push(i, frames[i], detections[i])
    done += fa.flush()
    for ff in done:
        if ff.faces:
            out[ff.index] = ff.faces[0].aligned.quad
    return out


def measure(path: Path, contexts, max_frames: int = 300) -> dict:
    from fsvideo.faces.detect import make_detector
    from fsvideo.video import VideoReader, probe
    info = probe(path)
    fps = float(info.fps)
    frames = [f.image for _, f in zip(range(max_frames), VideoReader(path))]
    det = make_detector("dlib")
    detections = [det.detect(f) for f in frames]
    n = len(frames)
    k = n // 2
    full = quads(frames, detections, fps, 0, n)
    size = np.median([np.linalg.norm(q[0] - q[3]) for q in full.values()])
    motion = np.median([np.abs(full[i] - full[i - 1]).max() for i in full if i - 1 in full])
    rows = []
    for c in contexts:
        ctx = int(round(c * fps))
        after = quads(frames, detections, fps, max(0, k - ctx), n)
        before = quads(frames, detections, fps, 0, min(n, k + ctx))
        d_after = [np.abs(after[i] - full[i]).max() for i in range(k, n) if i in after and i in full]
        d_before = [np.abs(before[i] - full[i]).max() for i in range(0, k) if i in before and i in full]
        worst = max(d_after + d_before + [0.0])
        rows.append({"context_s": c, "max_px": round(float(worst), 4), "max_rel": round(float(worst / size), 6),
                     "mean_px_after": round(float(np.mean(d_after)) if d_after else 0.0, 4)})
    return {"clip": path.name, "frames": n, "fps": round(fps, 3), "face_px": round(float(size), 1),
            "median_motion_px": round(float(motion), 3), "by_context": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--context", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0, 4.0])
    ap.add_argument("--clips", nargs="+", default=CLIPS)
    ap.add_argument("--max-frames", type=int, default=300)
    args = ap.parse_args()
    res = [measure(MEDIA / c, args.context, args.max_frames) for c in args.clips]
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
