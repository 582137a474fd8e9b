"""How much a face moves inside its aligned crops: the jitter measure of the stabiliser.

Used by ``benchmarks/faces.py`` and the stabilisation tests to compare stabilisers on real clips.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

#: Landmarks that move with the head, not with speech: brows, nose, eyes (iBUG 17-47).
RIGID_LANDMARKS = slice(17, 48)


def crop_jitter(crops: Sequence[np.ndarray], landmarks: Sequence[np.ndarray], points=RIGID_LANDMARKS) -> float:
    """Mean frame-to-frame motion (crop pixels) of the face's landmarks inside successive aligned crops.

    For each pair of consecutive crops, the crop-``t`` landmarks ``points`` (brows, nose, eyes by
    default: they move with the head, not with speech) are followed into crop ``t + 1`` with
    pyramidal Lucas-Kanade optical flow on the crop pixels, and their mean displacement is taken.
    This measures how the face moves *in the crop* (what the encoder sees), independently of the
    landmarks any stabiliser used.  A perfectly stable crop of a still head gives 0.

    Args:
        crops: uint8 [O, O, 3] aligned crops of consecutive frames.
        landmarks: float [68, 2] landmarks in each crop's coordinates (``AlignedFace.landmarks``).
    """
    import cv2
    if len(crops) != len(landmarks) or len(crops) < 2:
        raise ValueError("crop_jitter needs at least 2 crops and one landmark array per crop")
    size = crops[0].shape[0]
    win = max(9, (size // 16) | 1)
    motions = []
    prev = cv2.cvtColor(np.ascontiguousarray(crops[0]), cv2.COLOR_RGB2GRAY)
    for t in range(len(crops) - 1):
        nxt = cv2.cvtColor(np.ascontiguousarray(crops[t + 1]), cv2.COLOR_RGB2GRAY)
        p = np.asarray(landmarks[t], dtype=np.float32)[points].reshape(-1, 1, 2)
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01)
        q, st, _ = cv2.calcOpticalFlowPyrLK(prev, nxt, p, None, winSize=(win, win), maxLevel=3, criteria=crit)
        ok = st.ravel() == 1
        if ok.any():
            motions.append(float(np.linalg.norm((q - p).reshape(-1, 2)[ok], axis=1).mean()))
        prev = nxt
    return float(np.mean(motions)) if motions else float("nan")


def track_jitter(faces, cuts=(), frames=None) -> float:
    """:func:`crop_jitter` over a clip's aligned faces, averaged over its runs (weighted by pairs).

    ``faces``: one entry per frame in order, ``(index, face)`` with ``face`` a
    :class:`~fsvideo.faces.stream.TrackedFace` or None.  A run is consecutive frames of one track id;
    it also ends at the frame indices in ``cuts`` (flow across a shot cut measures nothing).
    ``frames``: if given, only these frame indices count (the others end runs), so that two runs
    of a clip are compared on the same frame pairs: a stabilised run also has the frames it bridged
    over missed detections, which an unstabilised run leaves without a face.
    NaN when no run has two frames.
    """
    runs, prev = [], None
    for i, f in faces:
        if f is None or (frames is not None and i not in frames):
            prev = None
            continue
        if prev is None or f.track_id != prev or i in cuts:
            runs.append([])
        runs[-1].append(f.aligned)
        prev = f.track_id
    runs = [r for r in runs if len(r) > 1]
    if not runs:
        return float("nan")
    return float(np.average([crop_jitter([a.image for a in r], [a.landmarks for a in r]) for r in runs],
                            weights=[len(r) - 1 for r in runs]))


def landmark_distance(landmarks: np.ndarray, references: Sequence[np.ndarray], size: int = 256) -> float | None:
    """Mean distance of float [68, 2] ``landmarks`` to the nearest of ``references`` (each [68, 2],
    e.g. a frame's per-frame detections), in pixels of a ``size`` crop of that reference (its FFHQ
    quad side maps to ``size``); None without references."""
    from fsvideo.faces.align import ffhq_quad
    if landmarks is None or not len(references):
        return None
    ref = min(references, key=lambda r: float(np.linalg.norm(r.mean(0) - landmarks.mean(0))))
    return float(np.linalg.norm(landmarks - ref, axis=1).mean()) * size / ffhq_quad(ref)[1]
