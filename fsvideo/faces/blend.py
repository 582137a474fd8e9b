"""Putting a generated face back into its frame: blend masks, their temporal smoothing, and the inverse warp.

* :func:`landmark_mask` -- a feathered face hull from 68 landmarks (jaw line + brows raised to cover
  the forehead), for when no face parser is available.
* :func:`parsing_mask` -- the official pipeline's mask from a face-parsing label map (BiSeNet, 19
  CelebAMask-HQ classes): labels {1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13} = skin, brows, eyes,
  eyeglasses, earring, nose, mouth, lips (no hair, ears, neck or cloth), feathered.
* :func:`face_mask` -- picks one of the two: the parser (a ready-built callable handed in by the
  caller; this module never loads weights) when given, else the landmarks.
* :class:`MaskSmoother` -- exponential smoothing of a track's masks over time (time constant in
  seconds), so the blend edge does not flicker; :class:`TrackMasks` keeps one per track, frame after
  frame, as the render's ``mask`` stage and the studio's previews both do.
* :func:`paste_back` -- inverse-warps the face and its mask into the face's box of the frame at full
  resolution and alpha-blends (optionally Poisson-blends with ``cv2.seamlessClone``).  Pixels where the warped mask
  is 0 are returned bit-identical.

Masks are float32 [O, O] in [0, 1] in the aligned crop's pixel grid.
"""
from __future__ import annotations

import logging
import math
from typing import Callable

import numpy as np

from fsvideo.faces.detect import check_image

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


def _feather(binary: np.ndarray, feather_px: float) -> np.ndarray:
    """Float32 alpha: 0 outside ``binary``, rising smoothly to 1 over ``feather_px`` pixels inside."""
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
    # smoothstep of clip(dist / feather, 0, 1), in place (distances are >= 0; same operations and
    # order as t * t * (3 - 2 t), so the same bits, without five box-sized temporaries)
    np.divide(t, float(feather_px), out=t)
    np.minimum(t, 1.0, out=t)
    s = np.multiply(t, 2.0)
    np.subtract(3.0, s, out=s)
    np.multiply(t, t, out=t)
    np.multiply(t, s, out=out[y0:y1, x0:x1])
    return out


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


def landmark_mask(landmarks, size: int, *, forehead: float = 0.35, feather: float = 0.04) -> np.ndarray:
    """Feathered face-hull mask float32 [size, size] in [0, 1] from landmarks in crop pixels.

    Args:
        landmarks: float [68, 2] iBUG landmarks in the crop's pixel coordinates
            (``AlignedFace.landmarks``).
        size: crop side O.
        forehead: the brow points are raised by this fraction of the brow-to-chin distance to cover
            the forehead (the 68 points stop at the brows).
        feather: width of the soft edge as a fraction of ``size`` (inside the hull).
    """
    import cv2
    pts = face_hull_points(landmarks, forehead)
    hull = cv2.convexHull(np.round(pts * 16).astype(np.int32))  # 4 fractional bits
    binary = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(binary, hull, 1, lineType=cv2.LINE_AA, shift=4)
    return _feather(binary, feather * size)


def parsing_mask(label_map: np.ndarray, size: int, *, labels=FACE_LABELS, feather: float = 0.02) -> np.ndarray:
    """Feathered mask float32 [size, size] of ``labels`` in an int label map [h, w] (any size)."""
    import cv2
    lab = np.asarray(label_map)
    if lab.ndim != 2:
        raise ValueError(f"label_map must be an int [h, w] label image, got shape {lab.shape}")
    binary = np.isin(lab, np.asarray(labels)).astype(np.float32)
    if binary.shape != (size, size):
        binary = cv2.resize(binary, (size, size), interpolation=cv2.INTER_LINEAR)
    return _feather(binary > 0.5, feather * size)


def face_mask(face: np.ndarray, landmarks=None, parser: FaceParser | None = None, **kwargs) -> np.ndarray:
    """Blend mask float32 [O, O] for an aligned face uint8 [O, O, 3].

    With ``parser`` (a ready-built callable returning a label map) the official label set is used;
    if the parser finds no face pixels the landmark hull is used instead.  Without a parser,
    ``landmarks`` (crop coordinates) are required.
    """
    check_image(face, "face")
    size = face.shape[0]
    if face.shape[1] != size:
        raise ValueError(f"face must be square, got {face.shape}")
    if parser is not None:
        m = parsing_mask(parser(face), size, **kwargs)
        if m.max() > 0 or landmarks is None:
            return m
        log.debug("face parser found no face pixels; using the landmark hull")
        kwargs = {}
    if landmarks is None:
        raise ValueError("face_mask needs landmarks when no parser is given")
    return landmark_mask(landmarks, size, **kwargs)


class MaskSmoother:
    """Exponential moving average of one track's masks over time.

    ``tau_s`` is the time constant in seconds (converted with ``fps``), so the smoothing looks the
    same at 25 and 50 fps; 0 disables it.  Causal: no frame delay.  Call :meth:`reset` when the
    track is lost or the scene cuts.
    """

    def __init__(self, fps: float, tau_s: float = MASK_TAU_S):
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.alpha = 1.0 if tau_s <= 0 else 1.0 - math.exp(-1.0 / (tau_s * fps))
        self.state: np.ndarray | None = None

    def reset(self) -> None:
        self.state = None

    def __call__(self, mask: np.ndarray) -> np.ndarray:
        m = np.asarray(mask, dtype=np.float32)
        if self.state is None or self.state.shape != m.shape:
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

    def __init__(self, fps: float, tau_s: float = MASK_TAU_S):
        self.fps, self.tau_s = fps, tau_s
        self._smoothers: dict[int, MaskSmoother] = {}

    def __call__(self, tracks, masks: list[np.ndarray]) -> list[np.ndarray]:
        """Smoothed masks (float32 [O, O] each) of one frame's faces, ``tracks[k]`` the track of ``masks[k]``."""
        out = [self._smoothers.setdefault(int(t), MaskSmoother(self.fps, self.tau_s))(m) for t, m in zip(tracks, masks)]
        seen = {int(t) for t in tracks}
        for tid in list(self._smoothers):          # a track that left: its next mask starts afresh
            if tid not in seen:
                del self._smoothers[tid]
        return out


def mask_history_frames(fps: float, tau_s: float = MASK_TAU_S, weight: float = MASK_HISTORY_WEIGHT) -> int:
    """How many earlier frames a smoothed mask depends on by more than ``weight``.

    A :class:`MaskSmoother` keeps ``(1 - alpha)^n = exp(-n / (tau_s fps))`` of the mask ``n`` frames
    back, so a smoothing started ``n`` frames before a frame instead of at the track's start changes
    that frame's mask by at most ``weight`` (masks are in [0, 1]): 17 frames at 30 fps, 0.08 s.
    """
    if tau_s <= 0:
        return 0
    return int(math.ceil(tau_s * fps * math.log(1.0 / weight)))


def _check_matrix(matrix) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape == (2, 3):
        m = np.vstack([m, [0.0, 0.0, 1.0]])
    if m.shape != (3, 3) or not np.all(np.isfinite(m)) or abs(np.linalg.det(m)) < 1e-12:
        raise ValueError(f"matrix must be an invertible [3, 3] transform, got shape {m.shape}")
    return m


def paste_region(matrix, mask: np.ndarray, frame_shape) -> tuple[int, int, int, int] | None:
    """The frame box ``(x0, y0, x1, y1)`` (end exclusive) that a face's mask reaches through
    ``matrix`` (crop pixels -> frame pixels), with a pixel of margin; None when it reaches no frame pixel.

    :func:`warp_to_frame` and the GPU paste-back (:mod:`fsvideo.faces.warp_torch`) both work in it.
    """
    import cv2
    m = _check_matrix(matrix)
    H, W = frame_shape[:2]
    bx, by, bw, bh = cv2.boundingRect((np.asarray(mask) > 0).astype(np.uint8))
    if bw == 0 or bh == 0:
        return None
    u0, u1, v0, v1 = bx - 1.0, bx + bw, by - 1.0, by + bh  # one pixel around the mask's box
    corners = np.array([[u0, v0, 1], [u1, v0, 1], [u1, v1, 1], [u0, v1, 1]], dtype=np.float64) @ m.T
    corners = corners[:, :2] / corners[:, 2:3]
    x0 = max(0, int(math.floor(corners[:, 0].min())) - 1)
    y0 = max(0, int(math.floor(corners[:, 1].min())) - 1)
    x1 = min(W, int(math.ceil(corners[:, 0].max())) + 2)
    y1 = min(H, int(math.ceil(corners[:, 1].max())) + 2)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def preshrink_size(inv: np.ndarray, size: int) -> int | None:
    """Side to box-filter an O x O face to before the inverse warp ``inv`` (frame -> crop pixels),
    or None: a face much larger than its place in the frame (over 1.5 face pixels per frame pixel)
    is shrunk first, so the warp does not alias."""
    scale = math.sqrt(abs(np.linalg.det(inv[:2, :2])))
    return max(8, int(round(size / scale))) if scale > 1.5 else None


def warp_to_frame(face: np.ndarray, matrix, mask: np.ndarray, frame_shape, *,
                  interpolation: int | None = None):
    """Inverse-warp ``face`` and ``mask`` into the frame.

    Returns ``(x0, y0, face_roi uint8 [h, w, 3], alpha_roi float32 [h, w])`` for the frame box
    ``[y0:y0+h, x0:x0+w]`` that the mask reaches, or None when it reaches no frame pixel.
    """
    import cv2
    interpolation = cv2.INTER_CUBIC if interpolation is None else interpolation
    m = _check_matrix(matrix)
    size = face.shape[0]
    box = paste_region(m, mask, frame_shape)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    inv = np.linalg.inv(m)
    src, msk = face, np.asarray(mask, dtype=np.float32)
    small = preshrink_size(inv, size)
    if small is not None:
        k = size / small
        src = cv2.resize(face, (small, small), interpolation=cv2.INTER_AREA)
        msk = cv2.resize(msk, (small, small), interpolation=cv2.INTER_AREA)
        # small-grid coords u' = (u + 0.5) / k - 0.5
        inv = np.array([[1 / k, 0, 0.5 / k - 0.5], [0, 1 / k, 0.5 / k - 0.5], [0, 0, 1]]) @ inv
    # ROI pixel (x', y') -> frame pixel (x' + x0, y' + y0) -> face pixel.
    inv = inv @ np.array([[1.0, 0, x0], [0, 1.0, y0], [0, 0, 1]])
    size_wh = (x1 - x0, y1 - y0)
    flags = interpolation | cv2.WARP_INVERSE_MAP
    if np.allclose(inv[2], [0, 0, 1]):
        face_roi = cv2.warpAffine(src, inv[:2], size_wh, flags=flags, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(msk, inv[:2], size_wh, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    else:
        face_roi = cv2.warpPerspective(src, inv, size_wh, flags=flags, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpPerspective(msk, inv, size_wh, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return x0, y0, face_roi, np.clip(alpha, 0.0, 1.0)


def check_paste_args(frame: np.ndarray, face: np.ndarray, mask) -> np.ndarray:
    """Checks :func:`paste_back`'s arguments (ValueError naming the bad one); the mask as float32 [O, O]."""
    check_image(frame, "frame")
    check_image(face, "face")
    size = face.shape[0]
    if face.shape[1] != size:
        raise ValueError(f"face must be square [O, O, 3], got {face.shape}")
    mask = np.asarray(mask, dtype=np.float32)
    if mask.shape != (size, size):
        raise ValueError(f"mask must be float [{size}, {size}] like the face, got shape {mask.shape}")
    if not np.all(np.isfinite(mask)) or mask.min() < 0 or mask.max() > 1:
        raise ValueError("mask values must be finite and in [0, 1]")
    return mask


def paste_back(frame: np.ndarray, face: np.ndarray, matrix, mask: np.ndarray, poisson: bool = False, *,
               interpolation: int | None = None, inplace: bool = False) -> np.ndarray:
    """Blend an aligned (e.g. generated) face back into its frame; returns a new frame.

    Args:
        frame: uint8 [H, W, 3] RGB original frame (not modified unless ``inplace``).
        face: uint8 [O, O, 3] RGB face in the aligned crop's grid.
        matrix: [3, 3] map from crop pixel coords to frame pixel coords (``AlignedFace.matrix``).
        mask: float [O, O] blend weights in [0, 1] (e.g. :func:`face_mask`).
        poisson: Poisson-blend (``cv2.seamlessClone``, NORMAL_CLONE) inside the mask, then feather
            with the mask as usual: removes colour seams when the face's tone differs.
        interpolation: cv2 flag for the face warp (default bicubic: about 2 dB closer than bilinear
            in an align / paste-back round trip).
        inplace: write into ``frame`` and return it (no copy of the whole frame; several faces of
            one frame then cost only their boxes).

    Only the face's box in the frame is touched: the inverse warp, the mask and the blend are
    computed for the frame pixels the warped mask reaches (``warp_to_frame``), never the whole frame.

    Pixels where the warped mask is 0 are exactly the input's.  Example::

        out = paste_back(frame, generated, aligned.matrix, face_mask(generated, aligned.landmarks))
    """
    mask = check_paste_args(frame, face, mask)
    out = frame if inplace else frame.copy()
    warped = warp_to_frame(face, matrix, mask, frame.shape, interpolation=interpolation)
    if warped is None:
        return out
    x0, y0, face_roi, alpha = warped
    h, w = alpha.shape
    roi = out[y0:y0 + h, x0:x0 + w]
    if poisson:
        face_roi = _seamless(face_roi, roi, alpha)
    # Dense over the face's box (no boolean gathers): where alpha is 0 the sum is exactly the frame.
    # In place, one float buffer: r + alpha (f - r) lies between r and f (alpha in [0, 1]), so after
    # rounding it is already in [0, 255] and casts to uint8 exactly.
    r = roi.astype(np.float32)
    blended = face_roi.astype(np.float32)
    np.subtract(blended, r, out=blended)
    np.multiply(blended, alpha[..., None], out=blended)
    np.add(blended, r, out=blended)
    np.rint(blended, out=blended)
    np.copyto(roi, blended, casting="unsafe")
    return out


def _seamless(face_roi: np.ndarray, dst_roi: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``cv2.seamlessClone`` of ``face_roi`` into ``dst_roi`` inside alpha > 0 (same place)."""
    import cv2
    binary = (alpha > 0).astype(np.uint8) * 255
    binary[0, :] = binary[-1, :] = 0  # the solver needs a ring of known pixels around the mask
    binary[:, 0] = binary[:, -1] = 0
    if binary.max() == 0 or min(binary.shape) < 3:
        return face_roi
    bx, by, bw, bh = cv2.boundingRect(binary)
    center = (bx + bw // 2, by + bh // 2)
    try:
        # (a copy of the mask: OpenCV writes into the one it is given)
        cloned = cv2.seamlessClone(np.ascontiguousarray(face_roi), np.ascontiguousarray(dst_roi), binary.copy(),
                                   center, cv2.NORMAL_CLONE)
    except cv2.error as e:  # degenerate masks: fall back to the plain alpha blend
        log.debug("seamlessClone failed (%s); alpha blend only", e)
        return face_roi
    return np.where(binary[..., None] > 0, cloned, face_roi)
