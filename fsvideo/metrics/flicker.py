"""Flicker (flow-warping error) and background preservation of an edited video against its source.

**Warping error** (the temporal-consistency measure of video processing work, Lai et al., "Learning
Blind Video Temporal Consistency", ECCV 2018, Sec. 5.1 ``E_warp``): the motion between two
consecutive frames is measured with optical flow *on the source frames* (the edit should not add
motion), the edited frame ``t - 1`` is warped with it onto frame ``t``, and the difference to the
edited frame ``t`` is averaged over the pixels where the flow is trustworthy::

    E(t) = sum_p M_t(p) |V_t(p) - warp(V_{t-1}, b_t)(p)| / sum_p M_t(p)

``b_t`` is the backward flow (frame ``t`` -> ``t - 1``, so ``V_t(p) ~ V_{t-1}(p + b_t(p))``) and
``M_t`` excludes occlusions and flow errors by the forward-backward check of Sundaram et al.
(ECCV 2010), as Ruder et al. ("Artistic style transfer for videos", 2016) and Lai et al. use it:
``|b + f(p + b)|^2 <= 0.01 (|b|^2 + |f(p + b)|^2) + 0.5`` with ``f`` the forward flow, and
``p + b(p)`` inside the frame.  Lai et al. average a squared difference on [0, 1] images; here the
difference is the absolute one in 8-bit levels averaged over R, G, B (easier to read: "the face
flickers by 1.3 grey levels per frame"), and it is reported separately inside the face region and
outside it.  The same figure of the source video against itself is the floor: what remains from
flow errors, noise and compression (a perfect edit reaches it, never goes below).

**Background preservation**: PSNR and the largest absolute difference of the edited frame and the
source frame outside the (dilated) face region, at full resolution.  An editor that only touches
the face scores ``inf`` dB / 0 before compression; after a lossy re-encode of the output the
figure is what the codec left.

Flow: OpenCV's DIS (``cv2.DISOpticalFlow``, medium preset; Kroeger et al., ECCV 2016) by default,
or Farneback (``cv2.calcOpticalFlowFarneback``).  Frames are shrunk (area filter) to at most
``max_side`` pixels for the flow and the warping error, so the figures are comparable across
resolutions and cheap to compute.

Example::

    meter = WarpErrorMeter("dis", max_side=512)
    e = meter.pair(src_prev, src_next, out_prev, out_next, face_next)   # images uint8 [H, W, 3]
    e["face"], e["face_source"], e["background"], e["background_source"]
"""
from __future__ import annotations

import math

import numpy as np

#: Optical flow methods of :func:`optical_flow`.
FLOW_METHODS = ("dis", "farneback")


def _gray(image: np.ndarray) -> np.ndarray:
    import cv2
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def optical_flow(a: np.ndarray, b: np.ndarray, method: str = "dis") -> np.ndarray:
    """Dense flow from grey image ``a`` to ``b`` (uint8 [H, W]): float32 [H, W, 2] with ``a(p) ~ b(p + flow(p))``."""
    import cv2
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return dis.calc(a, b, None)
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 4, 15, 3, 5, 1.2, 0)
    raise ValueError(f"unknown flow method {method!r}; use one of {', '.join(FLOW_METHODS)}")


def _sample(image: np.ndarray, flow: np.ndarray, interpolation: int | None = None) -> np.ndarray:
    """``image`` sampled at ``p + flow(p)`` (bilinear; outside pixels repeat the border)."""
    import cv2
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image, gx + flow[..., 0], gy + flow[..., 1],
                     cv2.INTER_LINEAR if interpolation is None else interpolation, borderMode=cv2.BORDER_REPLICATE)


def consistent_flow_mask(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Where the backward flow (frame t -> t-1) is trustworthy: bool [H, W] (forward-backward check).

    Args:
        backward: float32 [H, W, 2] flow of frame ``t`` to ``t - 1``.
        forward: float32 [H, W, 2] flow of frame ``t - 1`` to ``t``.
    """
    h, w = backward.shape[:2]
    f_at = _sample(forward, backward)
    s = backward + f_at
    ok = (s ** 2).sum(-1) <= 0.01 * ((backward ** 2).sum(-1) + (f_at ** 2).sum(-1)) + 0.5
    gx, gy = np.meshgrid(np.arange(w), np.arange(h))
    x, y = gx + backward[..., 0], gy + backward[..., 1]
    return ok & (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)


def _shrink(image: np.ndarray, scale: float, interpolation=None) -> np.ndarray:
    import cv2
    if scale >= 1.0:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if interpolation is None else interpolation)


def _masked_mean(err: np.ndarray, mask: np.ndarray) -> float | None:
    n = int(mask.sum())
    return float(err[mask].mean()) if n else None


class WarpErrorMeter:
    """Warping error of consecutive frames of an edited video and its source (module docstring).

    Args:
        method: optical flow, ``dis`` or ``farneback``.
        max_side: frames are shrunk to at most this many pixels on their long side (None: full size).
    """

    def __init__(self, method: str = "dis", max_side: int | None = 512):
        if method not in FLOW_METHODS:
            from fsvideo.errors import InputError
            raise InputError(f"unknown optical flow {method!r}", hint=f"use one of {', '.join(FLOW_METHODS)}")
        self.method = method
        self.max_side = None if not max_side else int(max_side)

    def scale_for(self, shape) -> float:
        """The shrink factor used for frames of ``shape`` ([H, W, ...])."""
        if self.max_side is None:
            return 1.0
        return min(1.0, self.max_side / max(shape[0], shape[1]))

    def pair(self, src_prev: np.ndarray, src_next: np.ndarray, out_prev: np.ndarray, out_next: np.ndarray,
             face_next: np.ndarray | None) -> dict[str, float | None]:
        """Warping errors of one frame pair.

        Args:
            src_prev, src_next: source frames ``t - 1`` and ``t``, uint8 [H, W, 3].
            out_prev, out_next: the edited frames, same shape.
            face_next: bool [H, W] face region of frame ``t`` (None or empty: all background).

        Returns:
            ``{face, face_source, background, background_source, valid}``: mean absolute
            differences in 8-bit levels (None where the region has no trustworthy pixel) and the
            fraction of pixels passing the forward-backward check.
        """
        s = self.scale_for(src_next.shape)
        sp, sn, op, on = (_shrink(x, s) for x in (src_prev, src_next, out_prev, out_next))
        gp, gn = _gray(sp), _gray(sn)
        back, fwd = optical_flow(gn, gp, self.method), optical_flow(gp, gn, self.method)
        valid = consistent_flow_mask(back, fwd)
        if face_next is None or not face_next.any():
            face = np.zeros(valid.shape, bool)
        else:
            face = _shrink(face_next.astype(np.float32), s) > 0.5
        out = {"valid": float(valid.mean())}
        for name, prev, nxt in (("", op, on), ("_source", sp, sn)):
            err = np.abs(nxt.astype(np.float32) - _sample(prev, back).astype(np.float32)).mean(-1)
            out["face" + name] = _masked_mean(err, valid & face)
            out["background" + name] = _masked_mean(err, valid & ~face)
        return out


class BackgroundMeter:
    """Accumulates how much an edit changed the frame outside the face region (full resolution).

    :meth:`add` returns the frame's ``{psnr, max_abs, mse}``; :attr:`psnr` pools the squared error
    over every background pixel of the clip (``inf`` when nothing changed), :attr:`max_abs` is the
    largest difference of any channel in any frame.
    """

    def __init__(self):
        self.sq = 0.0
        self.n = 0
        self.max_abs = 0

    def add(self, source: np.ndarray, edited: np.ndarray, face: np.ndarray | None) -> dict[str, float]:
        if source.shape != edited.shape:
            raise ValueError(f"source {source.shape} and edited {edited.shape} frames differ in size")
        bg = np.ones(source.shape[:2], bool) if face is None else ~face
        d = np.abs(source.astype(np.int16) - edited.astype(np.int16))[bg]
        sq = float((d.astype(np.float64) ** 2).sum())
        n = int(d.size)
        m = int(d.max()) if n else 0
        self.sq += sq
        self.n += n
        self.max_abs = max(self.max_abs, m)
        mse = sq / n if n else 0.0
        return {"psnr": psnr_of(mse), "max_abs": float(m), "mse": mse, "fraction": float(bg.mean())}

    @property
    def psnr(self) -> float:
        return psnr_of(self.sq / self.n if self.n else 0.0)


def psnr_of(mse: float) -> float:
    """PSNR in dB of an MSE on the 0..255 scale (``inf`` for 0)."""
    return math.inf if mse <= 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def face_region(landmarks, shape, *, dilate_px: float, forehead: float = 0.5) -> np.ndarray:
    """The face region of a frame: bool [H, W] hull of the face (brows raised over the forehead), dilated.

    Args:
        landmarks: float [68, 2] landmarks in frame pixels.
        shape: the frame's shape ([H, W, ...]).
        dilate_px: grow the hull by this many pixels (a disc), covering what a blend mask may reach.
        forehead: brows are raised by this fraction of the brow-to-chin distance (as the blend
            hull of :func:`fsvideo.faces.blend.landmark_mask`, higher: the region must contain any
            blend mask, including face parsing's forehead).
    """
    import cv2

    from fsvideo.faces.blend import face_hull_points
    h, w = shape[:2]
    binary = np.zeros((h, w), np.uint8)
    hull = cv2.convexHull(np.round(face_hull_points(landmarks, forehead) * 16).astype(np.int32))
    cv2.fillConvexPoly(binary, hull, 1, lineType=cv2.LINE_8, shift=4)
    r = math.ceil(max(0.0, dilate_px))
    if r:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        binary = cv2.dilate(binary, k)
    return binary.astype(bool)


__all__ = ["FLOW_METHODS", "BackgroundMeter", "WarpErrorMeter", "consistent_flow_mask", "face_region",
           "optical_flow", "psnr_of"]
