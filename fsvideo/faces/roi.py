"""Region-of-interest detection: the detector's own box search, run only around the faces it found
on the previous frame (the default fast detect stage, ``--track roi``).

Per-frame dlib detection spends about 50 ms of its 60 ms a 1080p frame scanning the whole 640 px
copy for faces (HOG, upsampled once); the 68-point fit in the box found costs about 1 ms.  Between
full detections, :class:`RoiDetector` runs the *same* HOG search, but only in a region around each
face of the previous frame (its box grown by ``margin`` of its side each way, shrunk to a level of
the full search's pyramid where the face is about 100 px, corners on that level's HOG cells:
:meth:`~fsvideo.faces.detect.DlibDetector.boxes_near`), and fits the 68 landmarks in the box
found, on the full-resolution frame, exactly as :meth:`~fsvideo.faces.detect.FaceDetector.detect`
does.
So every face is still a detection: the detector's box and its score, never a box moved by optical
flow (the ``flow`` mode of :class:`~fsvideo.faces.keyframes.KeyframeDetector`, which measured up
to 29 % further from per-frame detection on the multi-shot clip).  Its faces are not marked
``tracked``: the stabiliser refines them by optical flow as it does per-frame detections.

A full-frame detection (the wrapped detector unchanged) runs on:

* the first frame, every ``every`` frames (faces entering beside a tracked one are found there)
  and shot cuts (:class:`~fsvideo.faces.keyframes.ShotCuts`): as the flow mode;
* ``empty``: a frame without a tracked face (nothing to search around), at most every
  ``empty_every`` frames (``--detect-every`` aside; :func:`~fsvideo.faces.keyframes.with_keyframes`
  makes it 0.25 s, :data:`DEFAULT_EMPTY_EVERY`).  The frames in between
  have no face (the no-face policy applies), so a face appearing in an empty picture is found at
  most ``empty_every - 1`` frames after its first frame, and on that frame if a shot cut brings it;
* ``back``: a frame without a tracked face where the region search finds a face around one of the
  faces that left less than ``recall`` frames ago (default ``every``): a face per-frame detection
  lost for a few frames (a weak or turned face, a hand before it) is found again at once;
* ``lost``: a region where the search finds no face overlapping the previous box by at least
  ``min_iou`` (the face left, turned away or moved too far), or two tracks settling on one face;
* ``new``: a region where the search finds a second face no track explains;
* ``weak``: a face found in its region with a score under ``sure_score`` (0.5), where per-frame
  detection itself flickers between finding and missing it: the full search decides, as it would.

The full detection runs on the same frame, so no face found by per-frame detection is lost: a
face the region misses is looked for in the whole picture at once.  The one exception is a face
entering an empty picture away from where one left, without a cut: up to ``empty_every - 1``
frames late (``empty_every=1``: every face-less frame searched, exactly per-frame detection's
faces).  Searching every face-less frame made the mode only 1.6-1.9x faster than per-frame detection
on clips with long face-less stretches; see ``DEFAULT_EMPTY_EVERY`` for the measured trade-off.

Example::

    det = with_keyframes(make_detector("dlib", max_side=640), "1s", fps=30, track="roi")
    for image in frames:                      # uint8 [H, W, 3] RGB, in order
        faces = det.detect(image)             # list[Face], largest first, 68 landmarks each
    print(det.stats)                          # full detections by reason
"""
from __future__ import annotations

import numpy as np

from fsvideo.faces.detect import Face, FaceDetector, _sorted
from fsvideo.faces.keyframes import KeyframeDetector, _Track
from fsvideo.faces.track import box_iou

#: Region mode, no face tracked: a full detection at least every this long (:func:`with_keyframes`
#: makes it frames).  Measured on the shared clips with face-less stretches (``benchmarks/faces.py
#: --only empty``): 0.25 s (8 frames at 30 fps) searches 7.7x less than every frame on
#: pyfeat-face_noface's 97 face-less frames, and missed no frame with a face there nor on the
#: multi-shot clip (faces come back at cuts or in the region they left); a face entering elsewhere
#: is found at most 7 frames late.
DEFAULT_EMPTY_EVERY = "0.25s"


class RoiDetector(KeyframeDetector):
    """Full detection on keyframes, the detector's box search in a region around each face in
    between (see the module docstring).

    Args:
        detector: the wrapped detector; it must implement
            :meth:`~fsvideo.faces.detect.FaceDetector.boxes_near` and
            :meth:`~fsvideo.faces.detect.FaceDetector.landmarks_in_boxes`.
        every: frames between full detections (1: every frame).
        cuts: detect shot cuts (a full detection at each).
        margin: the region around a face's previous box, in box sides on each side (0.4: a head
            moving 40 % of its width in one frame is still inside; measured on liveportrait-d18,
            0.3 let the box jump between two pyramid levels: 1.8x the frame-to-frame landmark
            motion of per-frame detection, 0.4: 1.07x).
        min_iou: least overlap of the box found with the previous box of that face.
        sure_score: a face found in its region scoring below this is checked by a full detection
            on the same frame: near the detector's threshold (0) per-frame detection flickers
            between finding and missing a face, and the region's search, sampled differently, would
            not flicker on the same frames (measured on the multi-shot clip: scores 0.01-0.3 where the
            full search found nothing, and up to 0.5 apart on the same face).
        empty_every: with no face tracked, a full detection only every this many frames (1: every
            frame, as per-frame detection); the frames in between have no face.
        recall: frames after the last face left during which its region is still searched on
            face-less frames (a face found there: a full detection at once); default ``every``.
    """

    _uses_gray = False

    def __init__(self, detector: FaceDetector, every: int = 30, *, cuts: bool = True, margin: float = 0.4,
                 min_iou: float = 0.3, sure_score: float = 0.5, empty_every: int = 1, recall: int | None = None):
        if int(empty_every) < 1:
            raise ValueError(f"empty_every must be >= 1 frame, got {empty_every}")
        self.empty_every = int(empty_every)
        self.recall = int(every if recall is None else recall)
        super().__init__(detector, every, cuts=cuts)
        self.name = f"{detector.name}+roi"
        self.margin = float(margin)
        self.min_iou = float(min_iou)
        self.sure_score = float(sure_score)

    def reset(self) -> None:
        super().reset()
        self._gone: list[np.ndarray] = []    # boxes of the faces tracked before the picture emptied
        self._gone_at = 0                     # the frame (stats.frames) it emptied on

    def _keyframe(self, image: np.ndarray, reason: str) -> list[Face]:
        before = [t.box for t in self._tracks]
        faces = super()._keyframe(image, reason)
        if not self._tracks and before and reason != "cut":
            self._gone, self._gone_at = before, self.stats.frames
        elif self._tracks or reason == "cut":
            self._gone = []
        return faces

    def _empty(self, image: np.ndarray) -> list[Face] | str:
        """No face tracked: a full detection only every ``empty_every`` frames, or as soon as a face
        is back in the region of one that left less than ``recall`` frames ago; else no face."""
        if self._since >= self.empty_every:
            return "empty"
        if self._gone and self.stats.frames - self._gone_at <= self.recall:
            try:
                if any(self.detector.boxes_near(image, self._gone, self.margin)):
                    return "back"
            except NotImplementedError:
                return "empty"
        self.stats.skipped += 1
        return []

    def _follow(self, prev, gray, image: np.ndarray) -> list[Face] | str:
        """This frame's faces found in the regions, or why a full detection must run."""
        if not self._tracks:
            return self._empty(image)
        last = np.stack([t.box for t in self._tracks])
        try:
            found = self.detector.boxes_near(image, last, self.margin)
        except NotImplementedError:                                   # e.g. dlib's CNN: every frame
            return "no region search"
        picked = []
        for i, cands in enumerate(found):
            if not cands:
                return "lost"
            iou = box_iou(np.stack([b for b, _ in cands]), last)          # [candidates, tracks]
            j = int(np.argmax(iou[:, i]))
            if iou[j, i] < self.min_iou:
                return "lost"
            if (iou.max(axis=1) < self.min_iou).any():
                return "new"
            if cands[j][1] < self.sure_score:
                return "weak"
            picked.append(cands[j])
        boxes = np.stack([b for b, _ in picked])
        same = box_iou(boxes, boxes) > 0.5
        if same.sum() > len(boxes):                                       # two tracks, one face
            return "lost"
        lms = self.detector.landmarks_in_boxes(image, boxes)
        self._tracks = [_Track(b, lm, sc) for (b, sc), lm in zip(picked, lms)]
        return _sorted([Face(box=b.copy(), score=sc, landmarks=lm.copy()) for (b, sc), lm in zip(picked, lms)])


__all__ = ["DEFAULT_EMPTY_EVERY", "RoiDetector"]
