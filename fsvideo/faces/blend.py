"""Blend masks of generated faces and their smoothing over time (the paste-back: :mod:`fsvideo.faces.paste`).

* :func:`landmark_mask` -- a feathered face hull from 68 landmarks (jaw line + brows raised to cover
  the forehead), for when no face parser is available.
* :func:`parsing_mask` -- the official pipeline's mask from a face-parsing label map (BiSeNet, 19
  CelebAMask-HQ classes): labels {1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13} = skin, brows, eyes,
  eyeglasses, earring, nose, mouth, lips (no hair, ears, neck or cloth), feathered.
* :func:`face_mask` -- picks one of the two: the parser (a ready-built callable handed in by the
  caller; this module never loads weights) when given, else the landmarks.
* :func:`mask_side` -- the side to compute a face's mask at: the crop's side in frame pixels, rounded
  up to one of :data:`MASK_SIDES` (a 1024 px crop 400 frame pixels wide gets a 448 px mask).
* :class:`MaskSmoother` -- exponential smoothing of a track's masks over time (time constant in
  seconds), so the blend edge does not flicker; its state is resampled when the mask side changes.
  :class:`TrackMasks` keeps one per track, frame after frame, and picks each track's mask side, as
  the render's ``mask`` stage and the studio's previews both do.

Masks are float32 [S, S] in [0, 1] covering the aligned crop [O, O]: the same square, on an S-pixel grid
(pixel centres at integers in each grid, so crop pixel u is mask pixel (u + 0.5) S / O - 0.5,
:func:`grid_map`).  S = O is the crop's own grid; the pipeline's ``mask`` stage computes them at
:func:`mask_side`, since the paste-back samples the mask at frame resolution anyway.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Iterable, Sequence

import numpy as np

from fsvideo.faces.detect import check_image
from fsvideo.faces.paste import check_matrix, grid_map

log = logging.getLogger(__name__)

#: BiSeNet (CelebAMask-HQ) labels inside the official pipeline's blend mask.
FACE_LABELS = (1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13)

#: ``parser(face uint8 [O, O, 3] RGB) -> int label map [h, w]`` (any h, w; resized to O x O).
FaceParser = Callable[[np.ndarray], np.ndarray]

#: Time constant (seconds) of the blend masks' smoothing over time.
MASK_TAU_S = 0.08

#: The weight below which an earlier frame's mask no longer counts (:func:`mask_history_frames`):
#: times 255, under a quarter of a grey level.
MASK_HISTORY_WEIGHT = 2.0 ** -10


#: How far (pixels of its own grid) a feathered edge lies outside the true one: the distance transform
#: runs to the nearest outside pixel's centre (0.5 px out), the anti-aliased hull counts touched pixels
#: in (0.25 px more; parsing masks are cut at half coverage).  Measured on the shared 480p and 1080p clips:
#: a 448-768 px mask inset by the difference to the 1024 px grid's has the 1024 px mask's mean alpha in
#: the frame within 1e-4 (hull), 8e-4 (parsing), against 1.3-6e-3 without.
HULL_EDGE_PX, PARSING_EDGE_PX = 0.75, 0.5


def _feather(binary: np.ndarray, feather_px: float, inset_px: float = 0.0) -> np.ndarray:
    """Float32 alpha: 0 outside ``binary``, rising smoothly to 1 over ``feather_px`` pixels inside,
    starting ``inset_px`` pixels inside the edge."""
    import cv2
    b = (binary > 0).astype(np.uint8)
    if feather_px <= 0:
        return b.astype(np.float32)
    out = np.zeros(b.shape, np.float32)
    x, y, w, h = cv2.boundingRect(b)
    if w == 0 or h == 0:
        return out
    # Only the face's box (plus a ring of outside pixels, where there is one) is computed: the exact
    # Euclidean distance to the nearest outside pixel is the same as over the whole crop.
    x0, y0, x1, y1 = max(0, x - 1), max(0, y - 1), min(b.shape[1], x + w + 1), min(b.shape[0], y + h + 1)
    # Distance to the nearest outside pixel; pad so the crop border does not count as outside.
    pad = int(math.ceil(feather_px)) + 1
    bp = cv2.copyMakeBorder(b[y0:y1, x0:x1], pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    t = np.ascontiguousarray(cv2.distanceTransform(bp, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[pad:-pad, pad:-pad])
    if inset_px:
        np.subtract(t, float(inset_px), out=t)
        np.maximum(t, 0.0, out=t)
    # smoothstep of clip(dist / feather, 0, 1), in place (distances are >= 0; same operations and
    # order as t * t * (3 - 2 t), so the same bits, without five box-sized temporaries)
    np.divide(t, float(feather_px), out=t)
    np.minimum(t, 1.0, out=t)
    s = np.multiply(t, 2.0)
    np.subtract(3.0, s, out=s)
    np.multiply(t, t, out=t)
    np.multiply(t, s, out=out[y0:y1, x0:x1])
    return out


#: The sides a pipeline mask is computed at (:func:`mask_side`): at most 1.25x the crop's side in the
#: frame from 256 px up (1.5x from 128), so the paste-back never box-filters it first (it does over
#: 1.5x); few, so a track's consecutive masks mostly share one and the smoother blends them as they are.
MASK_SIDES = (128, 192, 256, 320, 384, 448, 512, 640, 768, 896, 1024)


def mask_side(matrix, crop_size: int, current: int | None = None, sides=MASK_SIDES) -> int:
    """The side S to compute a face's blend mask at: the smallest of ``sides`` not under the crop's
    side in frame pixels (``crop_size`` times the frame pixels per crop pixel of ``matrix``, crop ->
    frame [3, 3]), at most ``crop_size``.

    Why: the paste-back samples the mask once per frame pixel; a mask with more pixels than that
    only costs time (a 1024 px crop of a 480p face is about 400 frame pixels wide: 6x the pixels).
    ``current`` (the track's last side) is kept while it covers the crop and the crop is not 10 % under
    the next smaller side: a face near a boundary does not switch sides every frame.
    """
    m = check_matrix(matrix)
    need = crop_size * math.sqrt(abs(np.linalg.det(m[:2, :2])))
    ladder = sorted(int(s) for s in sides if s < crop_size) + [int(crop_size)]
    side = next((s for s in ladder if s >= need), ladder[-1])
    if current is not None and current in ladder and side < current and need <= current:
        below = ladder[ladder.index(current) - 1] if ladder.index(current) > 0 else 0
        if need > 0.9 * below:
            side = current
    return side


def face_hull_points(landmarks, forehead: float = 0.35) -> np.ndarray:
    """Outline of the face: float64 [27, 2], the jaw line and the brows raised by ``forehead``.

    The 68 points stop at the brows; raising them by ``forehead`` of the brow-to-chin distance covers
    the forehead.  Same coordinates as ``landmarks`` (float [68, 2]).
    """
    from fsvideo.faces.align import check_landmarks
    lm = check_landmarks(landmarks)
    brows = lm[17:27].copy()
    up = lm[8] - lm[27]  # chin minus nose bridge top: the face's "down" direction and length
    brows -= forehead * up
    return np.concatenate([lm[0:17], brows[::-1]])


def landmark_mask(landmarks, size: int, *, forehead: float = 0.35, feather: float = 0.04,
                  inset: float = 0.0) -> np.ndarray:
    """Feathered face-hull mask float32 [size, size] in [0, 1] from landmarks in crop pixels.

    Args:
        landmarks: float [68, 2] iBUG landmarks in the crop's pixel coordinates
            (``AlignedFace.landmarks``).
        size: crop side O.
        forehead: the brow points are raised by this fraction of the brow-to-chin distance to cover
            the forehead (the 68 points stop at the brows).
        feather: width of the soft edge as a fraction of ``size`` (inside the hull).
        inset: pixels inside the hull where the soft edge starts (:func:`face_mask` sets it for a
            mask on a coarser grid than the crop's, see :data:`HULL_EDGE_PX`).
    """
    import cv2
    pts = face_hull_points(landmarks, forehead)
    hull = cv2.convexHull(np.round(pts * 16).astype(np.int32))  # 4 fractional bits
    binary = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(binary, hull, 1, lineType=cv2.LINE_AA, shift=4)
    return _feather(binary, feather * size, inset)


def parsing_mask(label_map: np.ndarray, size: int, *, labels=FACE_LABELS, feather: float = 0.02,
                 inset: float = 0.0) -> np.ndarray:
    """Feathered mask float32 [size, size] of ``labels`` in an int label map [h, w] (any size);
    ``feather`` and ``inset`` as in :func:`landmark_mask`."""
    import cv2
    lab = np.asarray(label_map)
    if lab.ndim != 2:
        raise ValueError(f"label_map must be an int [h, w] label image, got shape {lab.shape}")
    binary = np.isin(lab, np.asarray(labels)).astype(np.float32)
    if binary.shape != (size, size):
        binary = cv2.resize(binary, (size, size), interpolation=cv2.INTER_LINEAR)
    return _feather(binary > 0.5, feather * size, inset)


def face_mask(face: np.ndarray, landmarks=None, parser: FaceParser | None = None, *, size: int | None = None,
              **kwargs) -> np.ndarray:
    """Blend mask float32 [S, S] for an aligned face uint8 [O, O, 3].

    With ``parser`` (a ready-built callable returning a label map) the official label set is used;
    if the parser finds no face pixels the landmark hull is used instead.  Without a parser,
    ``landmarks`` (crop coordinates, float [68, 2]) are required.  ``size`` is the mask's side S
    (default O; e.g. :func:`mask_side`): the same square on a coarser grid, feathered over the same
    fraction of it, its edge inset so that it lies where the O px mask has it (:data:`HULL_EDGE_PX`).
    """
    check_image(face, "face")
    crop = face.shape[0]
    if face.shape[1] != crop:
        raise ValueError(f"face must be square, got {face.shape}")
    size = crop if size is None else int(size)
    if size < 2:
        raise ValueError(f"mask size must be at least 2 pixels, got {size}")
    if parser is not None:
        m = parsing_mask(parser(face), size, inset=PARSING_EDGE_PX * (1.0 - size / crop), **kwargs)
        if m.max() > 0 or landmarks is None:
            return m
        log.debug("face parser found no face pixels; using the landmark hull")
        kwargs = {}
    if landmarks is None:
        raise ValueError("face_mask needs landmarks when no parser is given")
    return hull_mask(landmarks, crop, size, **kwargs)


def hull_mask(landmarks, crop: int, size: int | None = None, **kwargs) -> np.ndarray:
    """The landmark-hull mask float32 [S, S] of a crop of side ``crop`` (landmarks float [68, 2] in its
    pixels) on a grid of side ``size`` (default ``crop``), inset as :func:`face_mask` does."""
    size = crop if size is None else int(size)
    if size != crop:
        from fsvideo.faces.align import check_landmarks, transform_points
        landmarks = transform_points(np.linalg.inv(grid_map(size, crop)), check_landmarks(landmarks))
    return landmark_mask(landmarks, size, inset=HULL_EDGE_PX * (1.0 - size / crop), **kwargs)


def resample_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A float32 mask [h, w] on another grid ``shape`` over the same square (area filter down,
    bilinear up; cv2.resize's pixel centres are :func:`~fsvideo.faces.paste.grid_map`'s)."""
    import cv2
    down = shape[0] * shape[1] < mask.shape[0] * mask.shape[1]
    return cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_AREA if down else cv2.INTER_LINEAR)


class MaskSmoother:
    """Exponential moving average of one track's masks over time.

    ``tau_s`` is the time constant in seconds (converted with ``fps``), so the smoothing looks the
    same at 25 and 50 fps; 0 disables it.  Causal: no frame delay.  Call :meth:`reset` when the
    track is lost or the scene cuts.  A mask of another side than the last one (the face grew or
    shrank in the frame, :func:`mask_side`) is blended with the state resampled to its side (area
    filter down, bilinear up: the same square, so the average carries on).
    """

    def __init__(self, fps: float, tau_s: float = MASK_TAU_S):
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.alpha = 1.0 if tau_s <= 0 else 1.0 - math.exp(-1.0 / (tau_s * fps))
        self.state: np.ndarray | None = None

    def reset(self) -> None:
        self.state = None

    @property
    def side(self) -> int | None:
        """The side of the last mask (None before the first or after :meth:`reset`)."""
        return None if self.state is None else int(self.state.shape[0])

    def __call__(self, mask: np.ndarray) -> np.ndarray:
        m = np.asarray(mask, dtype=np.float32)
        if self.state is not None and self.state.shape != m.shape:
            if self.state.ndim != 2 or m.ndim != 2:
                self.state = None
            else:
                self.state = resample_mask(self.state, m.shape)
        if self.state is None:
            self.state = m.copy()
            return m.copy()
        # state += alpha * (m - state), in one temporary that then carries the copy handed out
        # (the same float32 operations in the same order: the same bits; 1024 px masks are 4 MiB)
        d = np.subtract(m, self.state)
        d *= self.alpha
        self.state += d
        np.copyto(d, self.state)
        return d


class TrackMasks:
    """The blend masks of a video's faces smoothed per track, frame after frame: one
    :class:`MaskSmoother` per track, started at the track's first frame and dropped on the first
    frame without it (a track that comes back starts afresh).

    The render's ``mask`` stage (:mod:`fsvideo.pipeline.face_stages`) and the studio's previews both
    smooth through this class, so a previewed frame gets the render's mask when it is fed the same
    frames before it.
    """

    def __init__(self, fps: float, tau_s: float = MASK_TAU_S, sides: Sequence[int] | None = MASK_SIDES):
        self.fps, self.tau_s, self.sides = fps, tau_s, sides
        self._smoothers: dict[int, MaskSmoother] = {}

    def side(self, track: int, matrix, crop_size: int) -> int | None:
        """The side to compute ``track``'s next mask at (:func:`mask_side`, keeping the track's last
        side near a boundary); None (the crop's side) when ``sides`` is None."""
        if self.sides is None:
            return None
        sm = self._smoothers.get(int(track))
        return mask_side(matrix, crop_size, None if sm is None else sm.side, self.sides)

    def __call__(self, tracks, masks: list[np.ndarray]) -> list[np.ndarray]:
        """Smoothed masks (float32 [O, O] each) of one frame's faces, ``tracks[k]`` the track of ``masks[k]``."""
        out = [self._smoothers.setdefault(int(t), MaskSmoother(self.fps, self.tau_s))(m) for t, m in zip(tracks, masks)]
        seen = {int(t) for t in tracks}
        for tid in list(self._smoothers):          # a track that left: its next mask starts afresh
            if tid not in seen:
                del self._smoothers[tid]
        return out


def mask_history_start(tracks_of: Callable[[int], Iterable[int] | None], i: int, first: int = 0,
                       keep: set[int] | None = None) -> int:
    """The first frame (not before ``first``) whose blend masks still count in frame ``i``'s.

    :class:`TrackMasks` smooths each track over its unbroken run and starts afresh after a frame
    without it, so frame ``i``'s masks depend on the frames back to where the earliest of its faces
    (of ``keep``; None: all) appeared: a render that starts there gives frame ``i`` exactly the
    masks of a render from the video's start.  ``tracks_of(j)``: the track ids of frame ``j``
    (None: unknown, taken as no face).
    """
    ids = tracks_of(i)
    active = set() if ids is None else {int(t) for t in ids if keep is None or int(t) in keep}
    j = i
    while active and j > first:
        prev = tracks_of(j - 1)
        active &= set() if prev is None else {int(t) for t in prev}
        if active:
            j -= 1
    return j


def mask_history_frames(fps: float, tau_s: float = MASK_TAU_S, weight: float = MASK_HISTORY_WEIGHT) -> int:
    """How many earlier frames a smoothed mask depends on by more than ``weight``.

    A :class:`MaskSmoother` keeps ``(1 - alpha)^n = exp(-n / (tau_s fps))`` of the mask ``n`` frames
    back, so a smoothing started ``n`` frames before a frame instead of at the track's start changes
    that frame's mask by at most ``weight`` (masks are in [0, 1]): 17 frames at 30 fps, 0.08 s.
    """
    if tau_s <= 0:
        return 0
    return int(math.ceil(tau_s * fps * math.log(1.0 / weight)))
