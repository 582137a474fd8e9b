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
