"""The align warp and the paste-back in PyTorch, for when the networks run on a GPU (issue 11, point 3).

The cv2 functions (:func:`fsvideo.faces.align.align_quad_fast`, :func:`fsvideo.faces.paste.paste_back`)
are the reference; these do the same with ``affine_grid`` / ``grid_sample`` on whatever device the
frame tensor lives on, so with CUDA models the per-pixel work leaves the CPU.  They run on the CPU
too, which is how the tests compare them with the cv2 path.

* :func:`frame_to_tensor`: uint8 [H, W, 3] frame -> float32 [1, 3, H, W] on the device (uploaded once
  per frame and shared by all its faces).
* :func:`align_crops_torch`: crops of several faces from one frame tensor (bilinear, reflect-101
  borders, integer supersampling + box filter for faces larger than the crop, like the cv2 path).
* :func:`paste_back_torch`: every face of a frame pasted back (bicubic face, bilinear mask,
  pre-shrink of a face much larger than its place in the frame) inside each face's box only;
  pixels the warped mask does not reach are returned bit-identical.

Coordinate conventions.  fsvideo's matrices map crop pixel coordinates to frame pixel coordinates
with pixel *centres* at integers (cv2's convention).  ``affine_grid`` / ``grid_sample`` work in
normalised coordinates; with ``align_corners=True`` normalised -1 and +1 are the centres of the
first and last pixel, so pixel x of an n-pixel axis is ``2 x / (n - 1) - 1``.  That choice also
makes ``padding_mode="reflection"`` mirror about the edge pixels' centres, i.e. cv2's
``BORDER_REFLECT_101``, which the align path uses.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from fsvideo.faces.paste import check_paste_args, mask_matrix, paste_region, roi_sampling


def frame_to_tensor(frame: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 [H, W, 3] RGB -> float32 [1, 3, H, W] in [0, 255] on ``device`` (one host-to-device copy)."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        desc = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"frame must be a uint8 [H, W, 3] RGB array, got {desc}")
    t = torch.from_numpy(np.ascontiguousarray(frame)).to(device, non_blocking=True)
    return t.permute(2, 0, 1).unsqueeze(0).float()


def _to_normalised(n_w: int, n_h: int) -> np.ndarray:
    """[3, 3] pixel (centres at integers) -> align_corners=True normalised coordinates of a W x H grid."""
    sx, sy = 2.0 / max(n_w - 1, 1), 2.0 / max(n_h - 1, 1)
    return np.array([[sx, 0.0, -1.0], [0.0, sy, -1.0], [0.0, 0.0, 1.0]])


def _theta(dst_to_src: np.ndarray, src_wh: tuple[int, int], dst_wh: tuple[int, int], device) -> torch.Tensor:
    """The ``affine_grid`` theta [1, 2, 3] of a pixel map ``dst_to_src`` ([3, 3], destination pixel ->
    source pixel) between a source grid ``src_wh`` and a destination grid ``dst_wh``."""
    th = _to_normalised(*src_wh) @ dst_to_src @ np.linalg.inv(_to_normalised(*dst_wh))
    return torch.tensor(th[:2], dtype=torch.float32, device=device).unsqueeze(0)


def _sample(src: torch.Tensor, dst_to_src: np.ndarray, dst_wh: tuple[int, int], mode: str,
            padding: str) -> torch.Tensor:
    """``src`` [1, C, h, w] resampled onto a ``dst_wh`` grid through ``dst_to_src`` (pixel coords)."""
    h, w = src.shape[-2:]
    theta = _theta(dst_to_src, (w, h), dst_wh, src.device)
    grid = F.affine_grid(theta, [1, src.shape[1], dst_wh[1], dst_wh[0]], align_corners=True)
    return F.grid_sample(src, grid, mode=mode, padding_mode=padding, align_corners=True)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp_(0, 255).to(torch.uint8)


def _check_matrix(m) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if m.shape == (2, 3):
        m = np.vstack([m, [0.0, 0.0, 1.0]])
    if m.shape != (3, 3) or not np.all(np.isfinite(m)) or not np.allclose(m[2], [0, 0, 1]):
        raise ValueError(f"each matrix must be a finite affine [3, 3] transform, got {m.shape}")
    return m


def align_crops_torch(frame_tensor: torch.Tensor, matrices, size: int, *, supersample: bool = True) -> torch.Tensor:
    """Aligned crops of one frame, as :func:`~fsvideo.faces.align.align_quad_fast` cuts them.

    Args:
        frame_tensor: float [1, 3, H, W] in [0, 255] (:func:`frame_to_tensor`), on any device.
        matrices: [N, 3, 3] (or a list of [3, 3]) crop pixel -> frame pixel maps
            (:func:`~fsvideo.faces.align.quad_matrix` of each face's quad at ``size``).
        size: crop side O.
        supersample: a face more than O frame pixels wide is warped to k O (k the integer ceiling of
            its width / O) and box-filtered by k, as the cv2 path does.

    Returns:
        uint8 [N, O, O, 3] RGB crops on the frame tensor's device.
    """
    if frame_tensor.ndim != 4 or frame_tensor.shape[:2] != (1, 3):
        raise ValueError(f"frame_tensor must be [1, 3, H, W], got {tuple(frame_tensor.shape)}")
    size = int(size)
    out = []
    for m in matrices:
        m = _check_matrix(m)
        # frame pixels per crop pixel = the quad's side / O (quad_matrix's first column)
        k = max(1, math.ceil(math.hypot(m[0, 0], m[1, 0]) - 1e-9)) if supersample else 1
        big = size * k
        # big-grid pixel u' -> crop pixel u = (u' + 0.5) / k - 0.5 -> frame pixel
        sub = np.array([[1 / k, 0, 0.5 / k - 0.5], [0, 1 / k, 0.5 / k - 0.5], [0, 0, 1.0]])
        crop = _sample(frame_tensor, m @ sub, (big, big), "bilinear", "reflection")
        if k > 1:
            crop = F.avg_pool2d(crop, k)
        out.append(_to_uint8(crop[0].permute(1, 2, 0)))
    if not out:
        return torch.zeros(0, size, size, 3, dtype=torch.uint8, device=frame_tensor.device)
    return torch.stack(out)


def paste_back_torch(frame: np.ndarray, faces, matrices, masks, *, device: torch.device | str | None = None,
                     frame_tensor: torch.Tensor | None = None) -> np.ndarray:
    """Every face of a frame blended back, on ``device``; the same result as :func:`~fsvideo.faces.paste.paste_back`
    applied face after face (within interpolation rounding: about a grey level).

    Args:
        frame: uint8 [H, W, 3] RGB (not modified).
        faces: uint8 [N, O, O, 3] faces in their crop grids (numpy, or a tensor on the device).
        matrices: [N, 3, 3] crop pixel -> frame pixel maps (``AlignedFace.matrix``).
        masks: N float [S, S] blend weights in [0, 1], each over its face's square (S may differ
            from O and from face to face: :func:`~fsvideo.faces.blend.mask_side`).
        device: where to compute (default: the frame tensor's device, else the CPU).
        frame_tensor: the frame already on the device (:func:`frame_to_tensor`), to skip the upload.

    Returns:
        a new uint8 [H, W, 3] frame.  Only the boxes the masks reach are computed and copied back;
        everything else is the input's bytes.
    """
    if len(faces) != len(matrices) or len(faces) != len(masks):
        raise ValueError(f"faces, matrices and masks must have one entry per face, got {len(faces)}, "
                         f"{len(matrices)}, {len(masks)}")
    out = frame.copy()
    jobs = []
    for face, m, mask in zip(faces, matrices, masks):
        face_np = face if isinstance(face, np.ndarray) else np.empty(tuple(face.shape), np.uint8)
        mask = check_paste_args(frame, face_np, mask)
        m = _check_matrix(m)
        mm = mask_matrix(m, face_np.shape[0], mask.shape[0])
        box = paste_region(mm, mask, frame.shape)
        if box is not None:
            jobs.append((face, m, mm, mask, box))
    if not jobs:
        return out
    owned = frame_tensor is None          # a caller's tensor is not written into (copied on the first face)
    if owned:
        frame_tensor = frame_to_tensor(frame, device or "cpu")
    dev = frame_tensor.device
    canvas = frame_tensor
    for face, m, mm, mask, box in jobs:
        x0, y0, x1, y1 = box
        src = face if isinstance(face, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(face))
        src = src.to(dev).permute(2, 0, 1).unsqueeze(0).float()
        msk = torch.from_numpy(mask).to(dev)[None, None]
        small, roi_to_src = roi_sampling(np.linalg.inv(m), src.shape[-1], box)
        if small is not None:  # box filter first, as the cv2 path does (INTER_AREA)
            src = F.interpolate(src, size=(small, small), mode="area")
        small, roi_to_mask = roi_sampling(np.linalg.inv(mm), mask.shape[0], box)
        if small is not None:
            msk = F.interpolate(msk, size=(small, small), mode="area")
        wh = (x1 - x0, y1 - y0)
        face_roi = _sample(src, roi_to_src, wh, "bicubic", "border").round().clamp_(0, 255)
        alpha = _sample(msk, roi_to_mask, wh, "bilinear", "zeros").clamp_(0, 1)
        r = canvas[:, :, y0:y1, x0:x1]
        blended = (r + alpha * (face_roi - r)).round().clamp_(0, 255)
        if canvas is frame_tensor and not owned:
            canvas = frame_tensor.clone()
        canvas[:, :, y0:y1, x0:x1] = blended
    for *_, (x0, y0, x1, y1) in jobs:
        out[y0:y1, x0:x1] = canvas[0, :, y0:y1, x0:x1].permute(1, 2, 0).to(torch.uint8).cpu().numpy()
    return out


__all__ = ["align_crops_torch", "frame_to_tensor", "paste_back_torch"]
