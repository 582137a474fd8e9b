"""Putting a generated face back into its frame: the inverse warp and the blend, inside the face's box.

* :func:`paste_back` -- inverse-warps the face and its mask (:mod:`fsvideo.faces.blend`) into the
  face's box of the frame at full resolution and alpha-blends (optionally Poisson-blends with
  ``cv2.seamlessClone``).  Pixels where the warped mask is 0 are returned bit-identical.
* :func:`warp_to_frame` -- the face and its mask warped into that box, not yet blended.
* :func:`paste_region`, :func:`roi_sampling`, :func:`mask_matrix` -- the box, the pre-shrink and the
  mask's own map, shared with the torch paste-back (:mod:`fsvideo.faces.warp_torch`).

A mask is float32 [S, S] in [0, 1] covering the aligned crop [O, O]: the same square, on an S-pixel
grid (:func:`grid_map`).
"""
from __future__ import annotations

import logging
import math

import numpy as np

from fsvideo.faces.detect import check_image

log = logging.getLogger(__name__)


def grid_map(side: int, crop_size: int) -> np.ndarray:
    """[3, 3] map from the pixels of a ``side`` x ``side`` grid to the pixels of the O x O crop it covers
    (``crop_size`` O; pixel centres at integers in both, as cv2.resize samples)."""
    k = crop_size / side
    return np.array([[k, 0.0, 0.5 * k - 0.5], [0.0, k, 0.5 * k - 0.5], [0.0, 0.0, 1.0]])


def check_matrix(matrix) -> np.ndarray:
    """``matrix`` as float64 [3, 3] (a [2, 3] affine gets its last row); ValueError unless finite and invertible."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape == (2, 3):
        m = np.vstack([m, [0.0, 0.0, 1.0]])
    if m.shape != (3, 3) or not np.all(np.isfinite(m)) or abs(np.linalg.det(m)) < 1e-12:
        raise ValueError(f"matrix must be an invertible [3, 3] transform, got shape {m.shape}")
    return m


def paste_region(matrix, mask: np.ndarray, frame_shape) -> tuple[int, int, int, int] | None:
    """The frame box ``(x0, y0, x1, y1)`` (end exclusive) that a face's mask reaches through
    ``matrix`` (mask pixels -> frame pixels), with a pixel of margin; None when it reaches no frame pixel.

    :func:`warp_to_frame` and the GPU paste-back (:mod:`fsvideo.faces.warp_torch`) both work in it.
    """
    import cv2
    m = check_matrix(matrix)
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


def roi_sampling(inv: np.ndarray, size: int, box) -> tuple[int | None, np.ndarray]:
    """How to sample a ``size`` x ``size`` source (the face, or its mask) into the frame box ``box``
    (``(x0, y0, ...)``, :func:`paste_region`): ``(small, roi_to_src)``, the side to box-filter the
    source to first (:func:`preshrink_size`; None: as it is) and the [3, 3] map from box pixels to
    the pixels of that source.  ``inv`` maps frame pixels to source pixels."""
    small = preshrink_size(inv, size)
    if small is not None:  # source pixel u -> shrunk pixel (u + 0.5) / k - 0.5: grid_map(small, size)'s inverse
        k = size / small
        inv = np.array([[1 / k, 0, 0.5 / k - 0.5], [0, 1 / k, 0.5 / k - 0.5], [0, 0, 1]]) @ inv
    # box pixel (x', y') -> frame pixel (x' + x0, y' + y0) -> source pixel
    return small, inv @ np.array([[1.0, 0, box[0]], [0, 1.0, box[1]], [0, 0, 1]])


def mask_matrix(matrix, face_size: int, mask_size: int) -> np.ndarray:
    """[3, 3] mask pixels -> frame pixels, for a mask of side ``mask_size`` over a face crop of side
    ``face_size`` whose ``matrix`` maps crop pixels to frame pixels."""
    m = check_matrix(matrix)
    return m if mask_size == face_size else m @ grid_map(mask_size, face_size)


def warp_to_frame(face: np.ndarray, matrix, mask: np.ndarray, frame_shape, *,
                  interpolation: int | None = None):
    """Inverse-warp ``face`` (uint8 [O, O, 3]) and ``mask`` (float [S, S], any side S, covering the
    same square) into the frame.

    Returns ``(x0, y0, face_roi uint8 [h, w, 3], alpha_roi float32 [h, w])`` for the frame box
    ``[y0:y0+h, x0:x0+w]`` that the mask reaches, or None when it reaches no frame pixel.
    """
    import cv2
    interpolation = cv2.INTER_CUBIC if interpolation is None else interpolation
    m = check_matrix(matrix)
    size = face.shape[0]
    msk = np.asarray(mask, dtype=np.float32)
    mm = mask_matrix(m, size, msk.shape[0])
    box = paste_region(mm, msk, frame_shape)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    small, inv = roi_sampling(np.linalg.inv(m), size, box)
    src = face if small is None else cv2.resize(face, (small, small), interpolation=cv2.INTER_AREA)
    small, inv_m = roi_sampling(np.linalg.inv(mm), msk.shape[0], box)
    if small is not None:
        msk = cv2.resize(msk, (small, small), interpolation=cv2.INTER_AREA)
    size_wh = (x1 - x0, y1 - y0)
    flags = interpolation | cv2.WARP_INVERSE_MAP
    mflags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    if np.allclose(inv[2], [0, 0, 1]):
        face_roi = cv2.warpAffine(src, inv[:2], size_wh, flags=flags, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(msk, inv_m[:2], size_wh, flags=mflags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    else:
        face_roi = cv2.warpPerspective(src, inv, size_wh, flags=flags, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpPerspective(msk, inv_m, size_wh, flags=mflags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return x0, y0, face_roi, np.clip(alpha, 0.0, 1.0)


def check_paste_args(frame: np.ndarray, face: np.ndarray, mask) -> np.ndarray:
    """Checks :func:`paste_back`'s arguments (ValueError naming the bad one); the mask as float32 [S, S]."""
    check_image(frame, "frame")
    check_image(face, "face")
    size = face.shape[0]
    if face.shape[1] != size:
        raise ValueError(f"face must be square [O, O, 3], got {face.shape}")
    mask = np.asarray(mask, dtype=np.float32)
    if mask.ndim != 2 or mask.shape[0] != mask.shape[1] or mask.shape[0] < 2:
        raise ValueError(f"mask must be a square float [S, S] over the face's crop (S = {size}: the crop's "
                         f"grid), got shape {mask.shape}")
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
        mask: float [S, S] blend weights in [0, 1] over the same square as ``face`` (e.g.
            :func:`face_mask`; S = O, or a coarser grid such as :func:`mask_side`'s).
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
