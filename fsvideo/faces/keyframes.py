"""Detect faces on keyframes and track them in between by optical flow (``--track flow``).

The structure (keyframes, shot cuts, ``--detect-every``, stats) is shared with the region mode,
``--track roi`` (:class:`~fsvideo.faces.roi.RoiDetector`, a subclass that replaces the optical flow
by the detector's own search in a region around each face); :func:`with_keyframes` builds either.

A full detection (dlib HOG on a 640 px copy + 68 landmarks) costs about 115 ms a frame on one CPU
core and capped ``fsvideo edit`` at about 8.5 frames/s (issue 11).  Most of that is the box
search; the 68-point fit in a known box costs about 1 ms.  :class:`KeyframeDetector` wraps any
:class:`~fsvideo.faces.detect.FaceDetector` that can fit landmarks in given boxes
(:meth:`~fsvideo.faces.detect.FaceDetector.landmarks_in_boxes`) and, frame by frame:

1. **Keyframes** run the wrapped detector unchanged (their faces *are* the per-frame detection):
   the first frame, every ``every`` frames, a shot cut, and any frame where tracking is unsure.
2. **Other frames** move each face's previous landmarks into this frame with pyramidal Lucas-Kanade
   optical flow of its brow, eye and nose points (forward and backward, on the face's region shrunk
   to a ~40 px eye distance; a least-squares similarity of the followed points), place a box on them
   the way the detector places its boxes on landmarks (the mean over all keyframe detections so far
   of the box's centre offset and size in units of the landmarks' RMS radius: a box drawn from the
   detector's average, not from one keyframe's quantised HOG box), and fit the 68 landmarks in it,
   averaged over that box and two copies shifted by ``fit_shift`` (the fit depends on its box;
   averaging brings it nearer the per-frame detections, with less jitter).  The faces are marked
   :attr:`~fsvideo.faces.detect.Face.tracked`, so the stabiliser does not run its own flow
   refinement on them a second time (measured: that doubled the distance to per-frame detection),
   and carry the flow's translation (:attr:`~fsvideo.faces.detect.Face.motion`), which the
   stabiliser follows instead of measuring it again.
3. **Tracking confidence** is checked on every tracked face; any failure makes the frame a keyframe:
   too few landmarks followed with a small forward-backward error (``max_fb_error`` eye distances),
   a scale step out of ``max_scale_step``, the fitted landmarks far from the flow-moved ones
   (``max_fit_error`` eye distances: an occlusion or a drifting fit), an implausible shape (eye
   distance changed by more than ``max_scale_step``), or a box mostly outside the image.
4. **Shot cuts** (:class:`ShotCuts`): a 32-bin grey histogram of a ~64 px thumbnail (Bhattacharyya
   distance) or its mean absolute difference jumps.  About 0.1 ms a frame at 1080p.

Faces entering the picture are found at the next keyframe (at most ``every`` frames later, or at
the cut that brings them); faces leaving lose their flow or fit and trigger a keyframe that no longer
finds them.  The faces returned look like the detector's (box, score of their last detection, 68
landmarks), so :class:`~fsvideo.faces.track.FaceTracker` gives them the same track ids and the
no-face policies of :class:`~fsvideo.faces.stream.FaceAligner` apply unchanged.

The object keeps state between calls: push the frames of one stream in order, one worker, and
:meth:`KeyframeDetector.reset` (or a new object) for another stream.

Example::

    det = KeyframeDetector(make_detector("dlib", max_side=640), every=keyframe_interval("1s", fps=30))
    for image in frames:                      # uint8 [H, W, 3] RGB, in order
        faces = det.detect(image)             # list[Face], largest first, 68 landmarks each
    print(det.stats)                          # keyframes by reason

``with_keyframes(detector, detect_every, fps, track)`` builds one from a ``--detect-every`` value
and a ``--track`` mode (and returns ``detector`` itself for ``0``: every frame).
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from fsvideo.errors import InputError
from fsvideo.faces.detect import Face, FaceDetector, _sorted, check_image
from fsvideo.faces.jitter import RIGID_LANDMARKS
from fsvideo.faces.landmark_flow import eye_distance

log = logging.getLogger(__name__)

#: Eye distance (px) the optical flow between keyframes runs at (larger faces are shrunk for it).
_FLOW_EYE = 40.0

#: Default ``--detect-every``: a full detection at least every this many seconds ("0": every frame).
DEFAULT_DETECT_EVERY = "1s"
#: ``--track``: how faces are followed between full detections (:func:`with_keyframes`).
TRACK_MODES = ("roi", "flow")
DEFAULT_TRACK = "roi"


def keyframe_interval(detect_every, fps: float | None) -> int:
    """Frames between full detections for a ``--detect-every`` value; 1 means every frame.

    ``detect_every``: seconds as a number or ``"0.5s"``, frames as ``"12f"`` (an int is seconds
    too), ``0`` for every frame.  A bad value is an :class:`~fsvideo.errors.InputError`.

    >>> keyframe_interval("1s", 30), keyframe_interval(0.5, 24), keyframe_interval("10f", 30), keyframe_interval(0, 30)
    (30, 12, 10, 1)
    """
    text = str(detect_every).strip().lower()
    unit = "s"
    if text.endswith(("f", "s")):
        text, unit = text[:-1].strip(), text[-1]
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 0 or (unit == "f" and value != int(value)):
        raise InputError(f"--detect-every {detect_every!r} is not a duration",
                         hint="use seconds (1, 0.5s), frames (12f), or 0 to detect on every frame")
    if unit == "f":
        return max(1, int(value))
    if value == 0:
        return 1
    return max(1, int(round(value * float(fps or 25.0))))


class ShotCuts:
    """Shot-cut test on a ~64 px grey thumbnail: histogram jump or picture jump.

    ``push(image)`` is True when ``image`` (uint8 [H, W, 3]) starts a new shot: the Bhattacharyya
    distance of the 32-bin grey histograms of consecutive thumbnails exceeds ``hist_threshold``, or
    their mean absolute difference exceeds ``diff_threshold`` (a fraction of 255).  On the shared
    clips, cuts score 0.23-1.0 (histogram) and camera or head motion at most 0.06 (diff: 0.07).
    """

    def __init__(self, hist_threshold: float = 0.15, diff_threshold: float = 0.1, side: int = 64):
        self.hist_threshold = float(hist_threshold)
        self.diff_threshold = float(diff_threshold)
        self.side = int(side)
        self._prev: tuple[np.ndarray, np.ndarray] | None = None

    def reset(self) -> None:
        self._prev = None

    def push(self, image: np.ndarray) -> bool:
        import cv2
        step = max(1, max(image.shape[:2]) // self.side)
        thumb = cv2.cvtColor(np.ascontiguousarray(image[::step, ::step]), cv2.COLOR_RGB2GRAY)
        hist = cv2.calcHist([thumb], [0], None, [32], [0, 256])
        hist /= max(float(hist.sum()), 1.0)
        prev, self._prev = self._prev, (thumb.astype(np.float32), hist)
        if prev is None or prev[0].shape != thumb.shape:
            return prev is not None
        if cv2.compareHist(prev[1], hist, cv2.HISTCMP_BHATTACHARYYA) > self.hist_threshold:
            return True
        return float(np.abs(self._prev[0] - prev[0]).mean()) / 255.0 > self.diff_threshold


@dataclass
class KeyframeStats:
    """Frames seen, full detections and why (``first``, ``interval``, ``cut``, ``lost``...), faces
    tracked between keyframes, and frames without a face left without a full detection (``skipped``,
    the region mode's ``empty_every``)."""

    frames: int = 0
    keyframes: int = 0
    reasons: Counter = field(default_factory=Counter)
    tracked_faces: int = 0
    skipped: int = 0

    def __str__(self) -> str:
        why = ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items()))
        skipped = f"; {self.skipped} frames without a face not searched" if self.skipped else ""
        return (f"{self.keyframes} full detections in {self.frames} frames ({why}); "
                f"{self.tracked_faces} faces tracked between them{skipped}")


def _frame(lm: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre and RMS radius of landmarks [68, 2]: the frame boxes are expressed in."""
    c = lm.mean(0)
    return c, float(np.sqrt(((lm - c) ** 2).sum(1).mean()))


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares ``dst ~ s * R @ src + t`` of point sets [N, 2]: (s, R [2, 2], t [2])."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    var = float((a ** 2).sum())
    if var <= 1e-9:
        return 1.0, np.eye(2), md - ms
    c = float((a * b).sum())                                      # sum of dot products
    d = float((a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).sum())      # sum of cross products
    s = math.hypot(c, d) / var
    th = math.atan2(d, c)
    rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    return s, rot, md - s * rot @ ms


@dataclass
class _Track:
    box: np.ndarray        # float [4] box the landmarks were fitted in
    landmarks: np.ndarray  # float64 [68, 2]
    score: float           # score of its last full detection
    motion: np.ndarray | None = None  # float64 [2] flow translation of its rigid landmarks since the last frame


class KeyframeDetector(FaceDetector):
    """Full detection on keyframes, optical-flow tracking in between (see the module docstring).

    Args:
        detector: the wrapped detector; it must implement
            :meth:`~fsvideo.faces.detect.FaceDetector.landmarks_in_boxes`.
        every: frames between full detections (1: every frame, the wrapped detector alone).
        cuts: detect shot cuts (a keyframe at each).
        max_fb_error: largest Lucas-Kanade forward-backward error of a followed landmark, in eye
            distances.
        min_followed: least fraction of the brow/eye/nose landmarks followed.
        max_scale_step: largest face scale change between consecutive frames (a factor).
        max_fit_error: largest mean distance, in eye distances, between the fitted landmarks and
            the previous ones moved by the flow.
        min_inside: least fraction of a box inside the image.
        fit_shift: landmarks between keyframes are the mean of the fits in the tracked box and in
            two copies shifted by this fraction of its size (0: one fit).
    """

    #: Keeps state from frame to frame: a pipeline must run it in one worker, frames in order.
    stateful = True
    #: The optical flow between keyframes reads the previous frame's grey picture.
    _uses_gray = True

    def __init__(self, detector: FaceDetector, every: int = 30, *, cuts: bool = True,
                 max_fb_error: float = 0.05, min_followed: float = 0.6, max_scale_step: float = 1.15,
                 max_fit_error: float = 0.12, min_inside: float = 0.7, fit_shift: float = 0.03):
        if int(every) < 1:
            raise ValueError(f"every must be >= 1 frame, got {every}")
        self.detector = detector
        self.every = int(every)
        self.name = f"{detector.name}+keyframes"
        self.cuts = ShotCuts() if cuts else None
        self.max_fb_error = float(max_fb_error)
        self.min_followed = float(min_followed)
        self.max_scale_step = float(max_scale_step)
        self.max_fit_error = float(max_fit_error)
        self.min_inside = float(min_inside)
        self.fit_shift = float(fit_shift)
        self.reset()

    def reset(self) -> None:
        """Forget the tracked faces (the next frame is a keyframe)."""
        self._tracks: list[_Track] = []
        self._prev_gray: np.ndarray | None = None
        self._shape: tuple | None = None
        self._since = 0               # frames since the last keyframe
        self._rel_sum = np.zeros(4)   # detector box in landmark frames (centre dx, dy, w, h / radius), summed
        self._rel_n = 0
        self.stats = KeyframeStats()
        if self.cuts is not None:
            self.cuts.reset()

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces of the next frame of the stream (uint8 [H, W, 3] RGB), largest first."""
        import cv2
        image = np.ascontiguousarray(check_image(image))
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if self._uses_gray else None
        prev, self._prev_gray = self._prev_gray, gray
        shape, self._shape = self._shape, image.shape
        cut = self.cuts.push(image) if self.cuts is not None else False
        self.stats.frames += 1
        self._since += 1
        if shape != image.shape:
            reason = "first"
        elif cut:
            reason = "cut"
        elif self._since >= self.every:
            reason = "interval"
        else:
            faces = self._follow(prev, gray, image)
            if not isinstance(faces, str):
                self.stats.tracked_faces += len(faces)
                return faces
            reason = faces
        return self._keyframe(image, reason)

    # ------------------------------------------------------------------------------------- steps

    def _keyframe(self, image: np.ndarray, reason: str) -> list[Face]:
        faces = self.detector.detect(image)
        self.stats.keyframes += 1
        self.stats.reasons[reason] += 1
        self._since = 0
        self._tracks = []
        for f in faces:
            if f.landmarks is None:
                continue
            lm = np.asarray(f.landmarks, dtype=np.float64)
            box = np.asarray(f.box, dtype=np.float64)
            c, r = _frame(lm)
            if r > 1.0:
                self._rel_sum += [((box[0] + box[2]) / 2 - c[0]) / r, ((box[1] + box[3]) / 2 - c[1]) / r,
                                  (box[2] - box[0]) / r, (box[3] - box[1]) / r]
                self._rel_n += 1
            self._tracks.append(_Track(box, lm, float(f.score)))
        log.debug("frame %d: keyframe (%s), %d faces", self.stats.frames - 1, reason, len(faces))
        return faces

    def _flow(self, prev: np.ndarray, gray: np.ndarray, t: _Track):
        """The track's box moved by the flow of its rigid landmarks, and those landmarks moved;
        None when too few are followed or the motion is implausible."""
        import cv2
        h, w = gray.shape
        x0, y0, x1, y1 = t.box
        m = 0.5 * max(x1 - x0, y1 - y0)
        rx0, ry0 = int(max(0, math.floor(x0 - m))), int(max(0, math.floor(y0 - m)))
        rx1, ry1 = int(min(w, math.ceil(x1 + m))), int(min(h, math.ceil(y1 + m)))
        if rx1 - rx0 < 16 or ry1 - ry0 < 16:
            return None
        eye = max(eye_distance(t.landmarks), 1.0)
        # The flow only moves the box: run it on the region shrunk to an eye distance of about
        # _FLOW_EYE px (a 1080p close-up costs a tenth), in region pixels scaled back after.
        k = min(1.0, _FLOW_EYE / eye)
        a, b = prev[ry0:ry1, rx0:rx1], gray[ry0:ry1, rx0:rx1]
        if k < 0.9:
            a = cv2.resize(a, None, fx=k, fy=k, interpolation=cv2.INTER_LINEAR)
            b = cv2.resize(b, None, fx=k, fy=k, interpolation=cv2.INTER_LINEAR)
        else:
            k = 1.0
        win = max(9, int(eye * k / 4) | 1)
        origin = np.array([rx0, ry0], dtype=np.float64)
        p0 = ((t.landmarks[RIGID_LANDMARKS] - origin) * k).astype(np.float32).reshape(-1, 1, 2)
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 10, 0.03)
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(a, b, p0, None, winSize=(win, win), maxLevel=3, criteria=crit)
        back, st2, _ = cv2.calcOpticalFlowPyrLK(b, a, p1, None, winSize=(win, win), maxLevel=3, criteria=crit)
        fb = np.linalg.norm((back - p0).reshape(-1, 2), axis=1) / k
        ok = (st1.ravel() == 1) & (st2.ravel() == 1) & np.isfinite(fb) & (fb < self.max_fb_error * eye)
        if ok.mean() < self.min_followed:
            return None
        s, rot, tr = _similarity(p0.reshape(-1, 2)[ok].astype(np.float64) / k,
                                 p1.reshape(-1, 2)[ok].astype(np.float64) / k)
        if not (1 / self.max_scale_step <= s <= self.max_scale_step):
            return None
        c = np.array([(x0 + x1) / 2, (y0 + y1) / 2]) - origin
        c = s * rot @ c + tr + origin
        half = s * np.array([x1 - x0, y1 - y0]) / 2
        moved = s * (t.landmarks - origin) @ rot.T + tr + origin
        if self._rel_n:
            rel = self._rel_sum / self._rel_n
            mc, r = _frame(moved)
            c, half = mc + rel[:2] * r, rel[2:] * r / 2
        return np.concatenate([c - half, c + half]), moved

    def _inside(self, box: np.ndarray, shape) -> float:
        h, w = shape[:2]
        area = max(1e-9, (box[2] - box[0]) * (box[3] - box[1]))
        iw = max(0.0, min(box[2], w) - max(box[0], 0))
        ih = max(0.0, min(box[3], h) - max(box[1], 0))
        return iw * ih / area

    def _follow(self, prev: np.ndarray, gray: np.ndarray, image: np.ndarray) -> list[Face] | str:
        """Tracked faces of this frame, or why a full detection must run (``"lost"``: a face's
        tracking is unsure)."""
        if not self._tracks:
            return []
        moved = []
        for t in self._tracks:
            m = self._flow(prev, gray, t)
            if m is None or self._inside(m[0], image.shape) < self.min_inside:
                return "lost"
            moved.append(m)
        try:
            fitted = self._fit(image, [m[0] for m in moved])
        except NotImplementedError:
            return "lost"
        tracks = []
        for t, (box, lm_flow), lm in zip(self._tracks, moved, fitted):
            eye = eye_distance(t.landmarks)
            ratio = eye_distance(lm) / max(eye, 1e-6)
            if not (1 / self.max_scale_step <= ratio <= self.max_scale_step):
                return "lost"
            err = float(np.linalg.norm(lm[RIGID_LANDMARKS] - lm_flow[RIGID_LANDMARKS], axis=1).mean())
            if err > self.max_fit_error * eye:
                return "lost"
            motion = np.median(lm_flow[RIGID_LANDMARKS] - t.landmarks[RIGID_LANDMARKS], axis=0)
            tracks.append(_Track(box, lm, t.score, motion))
        self._tracks = tracks
        return _sorted([Face(box=t.box.copy(), score=t.score, landmarks=t.landmarks.copy(), tracked=True,
                             motion=t.motion.copy()) for t in tracks])

    def _fit(self, image: np.ndarray, boxes: list[np.ndarray]) -> list[np.ndarray]:
        """Landmarks fitted in each box, averaged over the box and two copies shifted diagonally by
        ``fit_shift`` of its size (a fit depends on its box; the detector's boxes vary from frame
        to frame, and the average is nearer the per-frame detections, with less jitter)."""
        shifts = [0.0, self.fit_shift, -self.fit_shift] if self.fit_shift > 0 else [0.0]
        k = len(shifts)
        many = [b + sh * np.array([b[2] - b[0], b[3] - b[1]] * 2) for b in boxes for sh in shifts]
        lms = self.detector.landmarks_in_boxes(image, many)
        return [np.mean(lms[i * k:(i + 1) * k], axis=0) for i in range(len(boxes))]


def _can(detector, method: str) -> bool:
    """Whether ``detector`` overrides :class:`FaceDetector`'s ``method``; ``boxes_near`` is also
    called on no boxes, since a backend may refuse it by configuration (dlib's CNN)."""
    if getattr(type(detector), method, None) in (None, getattr(FaceDetector, method)):
        return False
    if method == "boxes_near":
        try:
            detector.boxes_near(np.zeros((8, 8, 3), np.uint8), [])
        except NotImplementedError:
            return False
    return True


def with_keyframes(detector: FaceDetector | None, detect_every=DEFAULT_DETECT_EVERY, fps: float | None = None,
                   track: str = DEFAULT_TRACK, **kwargs) -> FaceDetector | None:
    """``detector`` wrapped for a ``--detect-every`` value (see :func:`keyframe_interval`) and a
    ``--track`` mode: ``roi`` (:class:`~fsvideo.faces.roi.RoiDetector`, the detector's own search
    in a region around each face) or ``flow`` (:class:`KeyframeDetector`, optical flow).  Returns
    ``detector`` itself when that means every frame, when it is None, or when it cannot run the
    mode (then every frame is detected, with a log line: a FAN detector, say, is never silently
    traded for a less accurate tracker).  ``kwargs`` go to the class; ``roi`` gets ``empty_every``
    from :data:`~fsvideo.faces.roi.DEFAULT_EMPTY_EVERY` at ``fps`` unless given (at most ``every``)."""
    if track not in TRACK_MODES:
        raise InputError(f"--track {track!r} is not a tracking mode", hint=f"use one of {', '.join(TRACK_MODES)}")
    every = keyframe_interval(detect_every, fps)
    if detector is None or every <= 1 or isinstance(detector, KeyframeDetector):
        return detector
    if not _can(detector, "landmarks_in_boxes") or (track == "roi" and not _can(detector, "boxes_near")):
        log.info("detector %s cannot track (%s) between keyframes: detecting on every frame", detector.name, track)
        return detector
    if track == "roi":
        from fsvideo.faces.roi import DEFAULT_EMPTY_EVERY, RoiDetector
        kwargs.setdefault("empty_every", min(every, keyframe_interval(DEFAULT_EMPTY_EVERY, fps)))
        return RoiDetector(detector, every, **kwargs)
    return KeyframeDetector(detector, every, **kwargs)


__all__ = ["DEFAULT_DETECT_EVERY", "DEFAULT_TRACK", "TRACK_MODES", "KeyframeDetector", "KeyframeStats", "ShotCuts",
           "keyframe_interval", "with_keyframes"]
