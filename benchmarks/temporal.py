"""Temporal quality of ``fsvideo edit`` outputs: stabilisers, alpha vs Poisson blending, keyframe tracking.

Run:  python benchmarks/temporal.py [--seconds 1] [--clips pyfeat-single_face.mp4 cremad-1001_DFA_ANG_XX.flv]

Each clip of ../shared/media/videos/other is edited (first ``--seconds``) through the public API
(:func:`fsvideo.edit_video`) with tiny random models (64 px, seeded) and one random direction: the
figures measure the pipeline around the generator (alignment, stabilisation, blending, encoding),
not the generator.  Each output is then measured against its source with
:class:`fsvideo.metrics.temporal.TemporalEvaluator` (what ``fsvideo metrics --edited`` runs) and a
markdown table is printed: STIT's TL-ID / TG-ID, flicker (warping error, 8-bit levels) inside and
outside the face with the source's floor, background PSNR / max |diff| outside the dilated face
region, and landmark jitter (crop pixels at 256) against the source's.

The outputs are encoded as ``fsvideo edit`` does by default (libx264, ``--crf``, default 18), so the
background figures include what re-encoding the frames costs; ``--crf 0`` isolates the pipeline.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

import fsvideo  # noqa: E402
from fsvideo.faces.detect import DlibDetector  # noqa: E402
from fsvideo.metrics.identity import load_identity  # noqa: E402
from fsvideo.metrics.temporal import TemporalEvaluator  # noqa: E402
from fsvideo.models.random_init import random_model, save_official_checkpoints  # noqa: E402


def _settings():
    """(label, RunOptions overrides): stabilisers with alpha blending, Poisson (all on per-frame
    detection, as first measured), then the two ways of following faces between full detections."""
    default = fsvideo.RunOptions().stabilize
    pf = {"detect_every": 0}
    return [("stabilise off", {**pf, "stabilize": 0.0}),
            (f"stabilise default ({default:g} s)", pf),
            ("stabilise strong (0.1 s)", {**pf, "stabilize": 0.1}),
            ("official filter (--stabilize official)", {**pf, "stabilize": "official"}),
            ("Poisson blending (default stabilise)", {**pf, "blend": "poisson"}),
            ("keyframe tracking (--detect-every 1 --track flow)", {"detect_every": 1, "track": "flow"}),
            ("region detection (--detect-every 1 --track roi)", {"detect_every": 1, "track": "roi"})]


def _tiny(folder: Path) -> tuple[str, str, str]:
    model = random_model(64, seed=0)
    enc, gen = save_official_checkpoints(model, folder)
    d = np.random.default_rng(1).standard_normal((1, model.generator.n_latent * 64)).astype(np.float32)
    np.save(folder / "dir.npy", d / np.linalg.norm(d))
    return str(gen), str(enc), str(folder / "dir.npy")


def _f(v, digits: int) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    return "inf" if v == float("inf") else f"{v:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="Edit the first S seconds of each clip.")
    ap.add_argument("--clips", nargs="+", default=["pyfeat-single_face.mp4", "cremad-1001_DFA_ANG_XX.flv"])
    ap.add_argument("--crf", type=int, default=18, help="Output quality (fsvideo edit's default 18; 0: lossless).")
    ap.add_argument("--shared", default=os.environ.get("FSVIDEO_SHARED", str(REPO.parent / "shared")))
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    media = Path(args.shared) / "media" / "videos" / "other"
    identity = load_identity("auto")
    ev = TemporalEvaluator(DlibDetector(), identity)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        gen, enc, direction = _tiny(t)
        for clip in args.clips:
            src = media / clip
            for label, over in _settings():
                opts = fsvideo.RunOptions(generator=gen, encoder=enc, detector="dlib", end=args.seconds,
                                          crf=args.crf, overwrite=True, **over)
                out = t / f"{Path(clip).stem}.edit.mp4"
                t0 = time.perf_counter()
                s = fsvideo.edit_video(src, out, edits=[fsvideo.EditRequest(direction, 1.0)], options=opts)
                dt = time.perf_counter() - t0
                r = ev.evaluate(out, src)
                if not r.ok:
                    print(f"{clip} / {label}: not measured: {r.reason}", file=sys.stderr)
                    continue
                rows.append((clip, label, s.frames, r.metrics))
                print(f"done {clip} / {label}: {s.frames} frames, edit {s.frames / dt:.1f} frames/s", file=sys.stderr)
    print(f"\nTemporal quality of `fsvideo edit` outputs: first {args.seconds:g} s of each clip, tiny random "
          f"models (64 px), libx264 crf {args.crf}; identity network {identity.name}; flicker in 8-bit levels "
          "(source = floor), jitter in crop pixels at 256.\n")
    print("| clip | setting | TL-ID | TG-ID | flicker face (src) | flicker bg (src) | bg PSNR dB | bg max | "
          "jitter (src) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for clip, label, n, m in rows:
        print(f"| {clip} ({n} fr) | {label} | {_f(m['tl_id'], 3)} | {_f(m['tg_id'], 3)} | "
              f"{_f(m['warp_face'], 2)} ({_f(m['warp_face_source'], 2)}) | "
              f"{_f(m['warp_bg'], 2)} ({_f(m['warp_bg_source'], 2)}) | {_f(m['bg_psnr'], 2)} | "
              f"{_f(m['bg_max_abs'], 0)} | {_f(m['jitter'], 3)} ({_f(m['jitter_source'], 3)}) |")


if __name__ == "__main__":
    main()
