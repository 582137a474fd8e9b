"""Pixel aspect: the width / height of one pixel of upright frames, and frames stretched to square pixels.

An anamorphic video (DV, DVD: 720x576 stored for a 16:9 picture, SAR 64:45) is widened by players.
Here (the video layer) because the GIF writer needs it as well as the face front end and the studio:
GIF has no pixel aspect, so its frames are written stretched (:class:`~fsvideo.video.writer.VideoWriter`).
"""
from __future__ import annotations

import numpy as np


def upright_pixel_aspect(info) -> float:
    """Width / height of one pixel of the *upright* frames the reader yields for ``info`` (a VideoInfo):
    the stored picture's SAR, inverted when the reader turns the picture by 90 degrees."""
    sar = float(getattr(info, "sar", 1) or 1)
    return 1.0 / sar if getattr(info, "rotation", 0) in (90, -90) else sar


def square_size(width: int, height: int, aspect: float) -> tuple[int, int]:
    """(width, height) of a ``width`` x ``height`` picture of ``aspect``-wide pixels on square pixels,
    the short pixel side stretched (nothing shrunk)."""
    if aspect == 1:
        return width, height
    return (max(1, round(width * aspect)), height) if aspect > 1 else (width, max(1, round(height / aspect)))


def to_square_pixels(image: np.ndarray, aspect: float) -> np.ndarray:
    """``image`` [H, W, C] whose pixels are ``aspect`` (width / height) wide, stretched to square pixels
    along its short pixel side (nothing shrunk): what a player shows."""
    import cv2
    if aspect == 1:
        return image
    h, w = image.shape[:2]
    return cv2.resize(image, square_size(w, h, aspect), interpolation=cv2.INTER_LINEAR)
