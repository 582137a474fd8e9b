"""Lucas-Kanade optical flow of one face's landmarks between consecutive frames, for the stabiliser.

:class:`LandmarkFlow` keeps the previous grey frame and landmarks of one face track and, for each
new frame, follows those landmarks into it (pyramidal Lucas-Kanade, ``cv2.calcOpticalFlowPyrLK``,
window ``eye_distance / 4``, ``maxLevel=5``, criteria (COUNT|EPS, 10, 0.03): the official video
pipeline's call, spec section 4).  It gives the stabiliser two things:

* :meth:`LandmarkFlow.refine`: the official blend of the detected landmarks with the followed ones,
  ``(1 - a) * detected + a * tracked``, ``a = exp(-(d / scale)**2)``, d the distance between the
  previous landmark and the detected one (a landmark that moved far is trusted to the detector);
* :attr:`LandmarkFlow.motion`: the face's translation since the previous frame, the median motion of
  its brow, eye and nose points (iBUG 17-47) that agree with that median within ``max_spread`` eye
  distances, or None when fewer than ``min_points`` of them do (blur, occlusion: LK's points then
  scatter).  A forward-backward check (each point followed back into the previous frame) was tried
  instead: neither test rejected a single one of the 1796 flow steps on the five clips of
  ``benchmarks/faces.py --only tracking``, with the same jitter, and the forward-backward check costs
  a second LK pass (2.3 ms a frame at 1080p).  The stabiliser smooths the landmarks *relative to
  this motion*, so that real head or camera motion, however fast or jerky (a hand-held camera,
  24 fps film with every 5th frame repeated), is followed exactly and only the detector's noise is
  smoothed away (:mod:`fsvideo.faces.stabilize`).
"""
from __future__ import annotations

import numpy as np

from fsvideo.faces.jitter import RIGID_LANDMARKS as RIGID  # brows, nose, eyes (iBUG 17-47)

_CRITERIA = (3, 10, 0.03)  # cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 10 iterations, eps 0.03


def eye_distance(lm: np.ndarray) -> float:
    """Distance between the eye centres of float [68, 2] landmarks (pixels)."""
    return float(np.linalg.norm(lm[42:48].mean(0) - lm[36:42].mean(0)))


class LandmarkFlow:
    """Optical flow of one track's landmarks from frame to frame (see the module docstring).

    Args:
        max_spread: farthest a rigid point's motion may be from their median, in eye distances.
        min_points: fewest rigid points (of 31) within it for :attr:`motion` to be measured.

    Per frame: :meth:`track` with the frame (uint8 [H, W, 3] RGB, or None) and whether the previous
    landmarks are still valid (False after a cut or a frame without the face), then optionally
    :meth:`refine`, then :meth:`remember` with the landmarks the next frame should follow.
    """

    def __init__(self, max_spread: float = 0.05, min_points: int = 10):
        self.max_spread = float(max_spread)
        self.min_points = int(min_points)
        self._gray: np.ndarray | None = None
        self._lm: np.ndarray | None = None
        self.tracked: np.ndarray | None = None  # float64 [68, 2] previous landmarks followed into this frame
        self.valid: np.ndarray | None = None    # bool [68]: followed (status 1, finite)
        self.motion: np.ndarray | None = None   # float64 [2] face translation since the previous frame
        self.followed: np.ndarray | None = None  # float64 [68, 2] the previous frame's landmarks

    def track(self, image: np.ndarray | None, follow: bool = True) -> None:
        """Follow the remembered landmarks into ``image``; sets :attr:`tracked`, :attr:`valid`,
        :attr:`motion` (None where nothing could be followed).  ``follow=False``: only keep
        ``image`` for the next frame."""
        import cv2
        self.tracked = self.valid = self.motion = self.followed = None
        if image is None:
            self._gray = self._lm = None
            return
        gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        prev_gray, prev_lm = (self._gray, self._lm) if follow else (None, None)
        self._gray, self._lm = gray, None
        if prev_gray is None or prev_lm is None or prev_gray.shape != gray.shape:
            return
        eye = max(eye_distance(prev_lm), 1.0)
        s = max(5, int(eye / 4))
        p0 = prev_lm.astype(np.float32).reshape(-1, 1, 2)
        p1, status, _ = cv2.calcOpticalFlowPyrLK(prev_gray, gray, p0, None, winSize=(s, s), maxLevel=5,
                                                 criteria=_CRITERIA)
        tracked = p1.reshape(-1, 2).astype(np.float64)
        valid = (status.ravel() == 1) & np.all(np.isfinite(tracked), axis=1)
        self.tracked, self.valid, self.followed = tracked, valid, prev_lm
        # The rigid points' motions that agree with their median (a rigid face moves them alike).
        rig = np.flatnonzero(valid[RIGID]) + RIGID.start
        if len(rig) < self.min_points:
            return
        moves = tracked[rig] - prev_lm[rig]
        agree = np.linalg.norm(moves - np.median(moves, axis=0), axis=1) < self.max_spread * eye
        if agree.sum() >= self.min_points:
            self.motion = np.median(moves[agree], axis=0)

    def refine(self, lm: np.ndarray, scale: float, scale_px: float | None = None) -> np.ndarray:
        """The official blend of detected ``lm`` [68, 2] with :attr:`tracked`; the blend's distance
        scale is ``scale`` eye distances, or ``scale_px`` pixels when given (official: 10 px)."""
        if self.tracked is None:
            return lm
        d = np.linalg.norm(self.followed - lm, axis=1)
        alpha = np.exp(-(d / (scale_px or scale * max(eye_distance(self.followed), 1.0))) ** 2)
        alpha[~self.valid] = 0.0
        tracked = np.where(self.valid[:, None], self.tracked, lm)
        return (1.0 - alpha[:, None]) * lm + alpha[:, None] * tracked

    def remember(self, lm: np.ndarray | None) -> None:
        """The landmarks [68, 2] of this frame that the next frame follows (None: nothing to follow)."""
        self._lm = None if lm is None else np.asarray(lm, dtype=np.float64)
