"""Face front end: detection, alignment, stabilisation, paste-back (ms per frame), and jitter.

Run:  python benchmarks/faces.py [--frames 60] [--clips pyfeat-single_face.mp4 liveportrait-d18.mp4]

For each clip (first N frames of ../shared/media/videos/other/<clip>, or N frames from frame S for
``<clip>:S``; lt-FP006542HD02.mp4 is 1080p; the hamilton clip from frame 120, inside its second shot):

* detection (dlib HOG + 68 landmarks) at full size and on a 320 / 640 px copy,
* alignment to 1024: the exact FFHQ procedure and the fast cv2 path,
* stabilisation (FaceStabilizer with optical flow, default strength) per frame,
* the landmark blend mask and the paste-back of a 1024 crop (alpha blend; Poisson; fastest of 7),
* stabilisers (``--stabilize`` values, and the default without following the flow's motion, as it
  was before), on the longest run of frames with a face:
  - jitter: ``crop_jitter`` (mean frame-to-frame motion of brow/eye/nose landmarks inside 256 px
    crops, followed by optical flow), lower is steadier;
  - lag: the time shift (frames, cross-correlation of the face centre's velocity, sub-frame) of
    the stabilised face centre behind the per-frame detections; 0 means no delay;
  - offset: mean distance of the stabilised face centre from the detected one, in 256 px crop
    pixels (how far the crop trails or undershoots a moving head).

``--only stabilise`` skips the timings.

``--only tracking`` compares per-frame detection with the two ways of following faces between full
detections (``--detect-every``, default 1 s): ``--track flow`` (optical flow,
:class:`~fsvideo.faces.keyframes.KeyframeDetector`) and ``--track roi`` (the detector's own search in a
region around each face, :class:`~fsvideo.faces.roi.RoiDetector`), on the first ``--frames`` (default
300) frames of the issue-11 clips, and prints a markdown table:

* detect-stage frames/s of each (the wrapped dlib HOG on a 640 px copy, as ``edit`` runs it), and
  their ratio to per-frame detection, measured in the same run (the load average is printed);
* jitter (``crop_jitter`` at 256, over runs of one track, split at shot cuts) of the stabilised
  crops (as ``edit`` aligns them) and, in brackets, of the raw ones;
* the mean landmark distance (px at 256) to the raw per-frame detection, stabilised (raw);
* the same for per-frame detection on every frame shifted by (3, 5) px (``shift``): the detector
  against itself, the noise any other sampling of it shows (the scale for the other columns);
* frames with a face, and the full detections each mode ran (with why).

``--only empty`` measures the region mode's policy for frames without a face (``empty_every``, see
:class:`~fsvideo.faces.roi.RoiDetector`) on the clips with face-less stretches (``EMPTY_CLIPS``, the
``:rev`` suffix plays a clip backwards, so its face comes in): for each ``--empty-every`` value
(frames), with and without ``recall`` (searching the region a face left), the detect frames/s
against per-frame detection in the same run, the full detections, and the frames where per-frame
detection has a face the mode has not (a face found late), with the longest such run.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from fsvideo.faces import DlibDetector, Face, FaceStabilizer, align_face, align_face_fast, align_quad_fast, landmark_mask, paste_back  # noqa: E402
from fsvideo.faces.align import quad_size  # noqa: E402
from fsvideo.faces.jitter import crop_jitter, landmark_distance, track_jitter  # noqa: E402
from fsvideo.faces.keyframes import DEFAULT_DETECT_EVERY, TRACK_MODES, ShotCuts, with_keyframes  # noqa: E402
from fsvideo.faces.registry import DEFAULT_DETECT_SIDE  # noqa: E402
from fsvideo.faces.stabilize import stabilize_sequence, stabilizer_options  # noqa: E402
from fsvideo.faces.stream import FaceAligner  # noqa: E402
from fsvideo.video import VideoReader  # noqa: E402

DEFAULT_CLIPS = ["pyfeat-single_face.mp4", "liveportrait-d18.mp4",
                 "styleganex-pexels-anthony-shkraba-production-8136210.mp4", "cremad-1001_DFA_ANG_XX.flv",
                 "lt-FP006542HD02.mp4", "facerec-short_hamilton_clip.mp4:120"]
#: Clips of ``--only tracking``: 480p, 1080p, multi-shot, occluded, face leaving and coming back.
TRACKING_CLIPS = ["liveportrait-d18.mp4", "lt-FP006542HD02.mp4", "facerec-short_hamilton_clip.mp4",
                  "pyfeat-WolfgangLanger_Pexels.mp4", "pyfeat-face_noface.mov"]
#: Clips of ``--only empty``: the shared clips with face-less stretches (per-frame detection, first 500
#: frames: 107 of 275 frames of the hamilton clip, 97 of 169 of face_noface, all 95 of no_face).
EMPTY_CLIPS = ["facerec-short_hamilton_clip.mp4", "pyfeat-face_noface.mov", "pyfeat-face_noface.mov:rev",
               "pyfeat-no_face.mp4"]


def _ms(fn, items, repeat: int = 1) -> float:
    t = time.perf_counter()
    for _ in range(repeat):
        for it in items:
            fn(it)
    return 1000 * (time.perf_counter() - t) / (repeat * len(items))


def _best(fn, repeat: int = 7) -> float:
    """Fastest of ``repeat`` calls, in ms (robust to a loaded machine)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return 1000 * best


def _row(label: str, value: float, unit: str) -> None:
    print(f"  {label + ':':42s} {value:8.2f} {unit}")


def _frames(path: Path, n: int):
    """``n`` frames of ``path`` (``clip.mp4:S``: from frame S) and the frame rate."""
    name, _, start = path.name.partition(":")
    start = int(start or 0)
    r = VideoReader(path.with_name(name))
    frames = []
    for fr in r:
        if fr.index >= start + n:
            break
        if fr.index >= start:
            frames.append(fr.image)
    return frames, float(r.info.fps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=None, help="frames per clip (60; 300 with --only tracking)")
    ap.add_argument("--clips", nargs="+", default=None, help="clip names in ../shared/media/videos/other")
    ap.add_argument("--only", choices=["stabilise", "tracking", "empty"], default=None, help="run only this part")
    ap.add_argument("--empty-every", default="1,2,4,8,15", help="--only empty: frame counts to compare")
    ap.add_argument("--detect-every", default=DEFAULT_DETECT_EVERY,
                    help="keyframe interval of --only tracking (seconds, or 12f frames)")
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
    if args.only == "tracking":
        _tracking(media, args.clips or TRACKING_CLIPS, args.frames or 300, args.detect_every)
        return
    if args.only == "empty":
        _empty(media, args.clips or EMPTY_CLIPS, args.frames or 300, args.detect_every,
               [int(k) for k in args.empty_every.split(",")])
        return
    args.clips = args.clips or DEFAULT_CLIPS
    args.frames = args.frames or 60
    print(f"CPU threads: 1 (cv2, torch); first {args.frames} frames of each clip")
    for clip in args.clips:
        frames, fps = _frames(media / clip, args.frames)
        h, w = frames[0].shape[:2]
        print(f"\n== {clip}: {w}x{h}, {fps:g} fps, {len(frames)} frames")
        sub = frames[:10]
        for ms_ in (() if args.only else (None, 640, 320)):
            det = DlibDetector(max_side=ms_)
            t = _ms(det.detect, sub)
            _row(f"detect dlib HOG, boxes at {'full size' if ms_ is None else f'{ms_} px'}", t, "ms/frame")
        det = DlibDetector(max_side=320)
        lms = [(f[0].landmarks if f else None) for f in (det.detect(im) for im in frames)]
        ok = [i for i, lm in enumerate(lms) if lm is not None]
        print(f"  faces found in {len(ok)}/{len(frames)} frames (boxes at 320 px)")
        if len(ok) < 2:
            continue
        if args.only:
            _stabilisers(frames, lms, ok, fps)
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
        _row("landmark mask (1024 crop)", _best(lambda: landmark_mask(a.landmarks, 1024)), "ms/face")
        for poisson in (False, True):
            t = _best(lambda: paste_back(pairs[0][0], a.image, a.matrix, mask, poisson=poisson))
            _row(f"paste back 1024 crop, {'Poisson' if poisson else 'alpha blend'}", t, "ms/face")
        _stabilisers(frames, lms, ok, fps)


def _lag(raw: np.ndarray, smooth: np.ndarray, max_lag: int = 8) -> float:
    """Frames by which ``smooth`` [T, 2] trails ``raw`` [T, 2] (velocity cross-correlation peak,
    refined with a parabola through its neighbours)."""
    vr, vs = np.diff(raw, axis=0), np.diff(smooth, axis=0)
    vr, vs = vr - vr.mean(0), vs - vs.mean(0)
    lags = np.arange(-max_lag, max_lag + 1)
    c = np.array([(vr[max(0, -k):len(vr) - max(0, k)] * vs[max(0, k):len(vs) - max(0, -k)]).sum()
                  for k in lags])
    i = int(np.argmax(c))
    if 0 < i < len(c) - 1:
        den = c[i - 1] - 2 * c[i] + c[i + 1]
        return float(lags[i] + (0.5 * (c[i - 1] - c[i + 1]) / den if den else 0.0))
    return float(lags[i])


def _stabilisers(frames, lms, ok, fps) -> None:
    """Jitter, lag and offset of each stabiliser on the longest run of frames with a face."""
    runs = np.split(np.asarray(ok), np.flatnonzero(np.diff(ok) != 1) + 1)
    run = max(runs, key=len)
    fr, lm = [frames[i] for i in run], [lms[i] for i in run]
    run_end = len(run)
    raw = [align_face_fast(im, x, 256) for im, x in zip(fr, lm)]
    raw_c = np.stack([x[17:48].mean(0) for x in lm])
    scale = 256.0 / np.mean([quad_size(a.quad) for a in raw])       # frame px -> 256 crop px
    rows = [("none (each frame aligned alone)", crop_jitter([x.image for x in raw], [x.landmarks for x in raw]),
             0.0, 0.0)]
    variants = [("fsvideo 0.03 s (default)", stabilizer_options("fsvideo", fps)),
                ("default, not following the motion (before)", dict(stabilizer_options("fsvideo", fps),
                                                                     follow_motion=False)),
                ("fsvideo 0.1 s (official sigma at 30 fps)", stabilizer_options("fsvideo", fps, 0.1)),
                ("official (flow px, gaussian 3 / 6 frames)", stabilizer_options("official", fps)),
                ("optical flow only", {"sigma_s": 0.0}),
                ("smoothing only (0.03 s, no flow)", {"optical_flow": False})]
    for name, kw in variants:
        st = [s for s in stabilize_sequence(lm, fps, images=fr, **kw) if s.quad is not None]
        al = [align_quad_fast(fr[s.index], s.quad, 256, landmarks=s.landmarks) for s in st]
        c = np.stack([s.landmarks[17:48].mean(0) for s in st])
        off = float(np.linalg.norm(c - raw_c[[s.index for s in st]], axis=1).mean() * scale)
        rows.append((name, crop_jitter([x.image for x in al], [x.landmarks for x in al]),
                     _lag(raw_c[[s.index for s in st]], c), off))
    print(f"  stabilisers over {run_end} frames from frame {run[0]} of those read (jitter: px at 256; lag: frames; "
          "offset: px at 256):")
    for name, j, lag, off in rows:
        print(f"    {name:44s} jitter {j:6.3f} ({j / rows[0][1]:4.0%})  lag {lag:+5.2f}  offset {off:5.2f}")

def _copy(faces):
    return [Face(box=f.box.copy(), score=f.score, landmarks=f.landmarks.copy(), tracked=f.tracked, motion=f.motion)
            for f in faces]


def _timed(det, frames):
    """Each frame's faces and the detector's frames/s over ``frames``."""
    t = time.perf_counter()
    out = [det.detect(im) for im in frames]
    return out, len(frames) / (time.perf_counter() - t)


def _aligned(frames, faces, fps, stabilize):
    """FaceAligner (policy largest, 256 px crops) on precomputed faces: [(index, TrackedFace | None)]."""
    fa = FaceAligner(None, fps, output_size=256, stabilize=stabilize)
    done = []
    for i, (im, fs) in enumerate(zip(frames, faces)):
        done += fa.push(i, im, _copy(fs))
    done += fa.flush()
    return [(ff.index, ff.faces[0] if ff.faces else None) for ff in done]


def _quality(out, per_frame, cuts, frames=None) -> tuple[float, float, int, float]:
    """(jitter on ``frames``, distance to per-frame detection, frames with a face, jitter on every
    frame with a face) of one aligned run."""
    dist = [d for i, f in out if f is not None
            for d in [landmark_distance(f.landmarks, [p.landmarks for p in per_frame[i]])] if d is not None]
    return (track_jitter(out, cuts, frames), float(np.mean(dist)) if dist else float("nan"),
            sum(f is not None for _, f in out), track_jitter(out, cuts))


def _tracking(media: Path, clips, n: int, detect_every) -> None:
    """Per-frame detection vs keyframes + flow / region tracking: speed, jitter, distance (see the docstring)."""
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    rows = []
    for clip in clips:
        frames, fps = _frames(media / clip, n)
        h, w = frames[0].shape[:2]
        det = DlibDetector(max_side=DEFAULT_DETECT_SIDE)
        runs = {"pf": _timed(det, frames)}
        per_frame = runs["pf"][0]
        wrapped = {m: with_keyframes(det, detect_every, fps, track=m) for m in TRACK_MODES}
        for m, d in wrapped.items():
            runs[m] = _timed(d, frames)
        # The per-frame detector again on the frames shifted by (3, 5) px, landmarks shifted back:
        # how far it disagrees with itself (its own noise, the scale the other columns compare to).
        shifted = [[Face(f.box + [3, 5, 3, 5], f.score, f.landmarks + [3, 5]) for f in det.detect(im[5:, 3:])]
                   for im in frames]
        sc = ShotCuts()
        cuts = {i for i, im in enumerate(frames) if sc.push(im) and i}
        q = {}
        for name, faces in [(m, r[0]) for m, r in runs.items()] + [("shift", shifted)]:
            raw = _aligned(frames, faces, fps, False)
            q[name] = _quality(raw, per_frame, cuts)
            # stabilised jitter on the raw run's frames (like with like); bridged frames counted apart
            q[name + "+stab"] = _quality(_aligned(frames, faces, fps, True), per_frame, cuts,
                                         {i for i, f in raw if f is not None})
        fps_ = {m: r[1] for m, r in runs.items()}
        rows.append((clip, f"{w}x{h}", len(frames), fps_, q, {m: d.stats for m, d in wrapped.items()}))
        print(f"  {clip}: " + ", ".join(f"{m} {v:.1f} frames/s" for m, v in fps_.items())
              + "; " + "; ".join(f"{m}: {d.stats}" for m, d in wrapped.items()), flush=True)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"\nDetect stage (dlib HOG at {DEFAULT_DETECT_SIDE} px + 68 landmarks), --detect-every {detect_every}; "
          "pf: per-frame detection, shift: per-frame on the frame shifted 3, 5 px (its own noise), flow / roi: "
          "--track flow / roi. jitter: crop px at 256, stabilised (raw), on the frames the raw run has a face; "
          "distance: mean landmark px at 256 to the raw "
          "per-frame detection, stabilised (raw)\n")
    cols = ("pf", "shift", "flow", "roi")
    print("| clip | size | frames | fps pf / flow / roi | " + " | ".join(f"jitter {c}" for c in cols) + " | "
          + " | ".join(f"distance {c}" for c in cols) + " | frames with face pf / flow / roi "
          "| full detections flow | full detections roi |")
    print("|---" * (4 + 2 * len(cols) + 3) + "|")
    for clip, size, nf, f, q, st in rows:
        why = {m: f"{s.keyframes} ({', '.join(f'{k} {v}' for k, v in sorted(s.reasons.items()))})" for m, s in st.items()}
        print(f"| {clip} | {size} | {nf} | {f['pf']:.1f} / {f['flow']:.1f} / {f['roi']:.1f} "
              f"({f['flow'] / f['pf']:.1f}x / {f['roi'] / f['pf']:.1f}x) | "
              + " | ".join(f"{q[c + '+stab'][0]:.3f} ({q[c][0]:.3f})" for c in cols) + " | "
              + " | ".join(f"{q[c + '+stab'][1]:.2f} ({q[c][1]:.2f})" for c in cols)
              + f" | {q['pf'][2]} / {q['flow'][2]} / {q['roi'][2]} | {why['flow']} | {why['roi']} |")


def _empty(media: Path, clips, n: int, detect_every, ks) -> None:
    """The region mode's face-less-frame policy: speed against faces found late (see the docstring)."""
    from fsvideo.faces.keyframes import keyframe_interval
    from fsvideo.faces.roi import RoiDetector
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    print("| clip | frames (without a face) | empty_every | recall | frames/s pf / roi | full detections roi "
          "| frames with a face found late | longest |")
    print("|---" * 8 + "|")
    for clip in clips:
        name, _, rev = clip.partition(":rev")
        frames, fps = _frames(media / name, n)
        frames = frames[::-1] if clip.endswith(":rev") else frames
        det = DlibDetector(max_side=DEFAULT_DETECT_SIDE)
        per_frame, pf_fps = _timed(det, frames)
        want = [len(f) for f in per_frame]
        every = keyframe_interval(detect_every, fps)
        for recall in (every, 0):
            for k in ks:
                rd = RoiDetector(det, every, empty_every=k, recall=recall)
                got, fps_ = _timed(rd, frames)
                late = [i for i, f in enumerate(got) if len(f) < want[i]]
                runs = np.split(np.asarray(late), np.flatnonzero(np.diff(late) != 1) + 1) if late else []
                why = ", ".join(f"{r} {v}" for r, v in sorted(rd.stats.reasons.items()))
                print(f"| {clip} | {len(frames)} ({want.count(0)}) | {k} | {recall} | {pf_fps:.1f} / {fps_:.1f} "
                      f"({fps_ / pf_fps:.1f}x) | {rd.stats.keyframes} ({why}) | {len(late)} "
                      f"| {max((len(r) for r in runs), default=0)} |", flush=True)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
