"""Faces of non-square-pixel (anamorphic) video are found and aligned on square pixels.

A DV or DVD clip stores a 16:9 picture as 720x576 pixels that a player widens by the sample aspect
ratio (SAR 64:45): in the stored pixels every face is squeezed to 70 % of its width.  Detected there,
dlib's 68 landmarks were 9x further from the square-pixel face's (mean error 7.1 % of the eye distance
against 0.8 % on a square-pixel copy, 6 frames of ``liveportrait-d18.mp4`` at SAR 64:45; 1.1 % against
0.7 % at 16:15), and the FFHQ quad built on them was 1.42x too wide once shown, so the encoder got a
squeezed face.  So:

* :class:`SquarePixelDetector` runs any detector on a copy of the frame stretched to square pixels
  (the short side of a pixel stretched, nothing shrunk) and maps its boxes and landmarks back;
* the stabiliser builds the FFHQ quad on square pixels (:func:`~fsvideo.faces.align.ffhq_quad` with
  ``aspect``), which in the stored frame is a parallelogram: the crop cut with it shows the face
  undistorted, and the paste-back, which inverts the same matrix, squeezes the edited face back.

The frames themselves stay in stored pixels (nothing outside the faces is resampled), and the
writer keeps the source's SAR (:class:`~fsvideo.video.writer.VideoWriter`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from fsvideo.faces.detect import Face, FaceDetector
from fsvideo.video.aspect import to_square_pixels, upright_pixel_aspect   # (the writer's GIF frames need them too)

__all__ = ["SquarePixelDetector", "square_pixels", "to_square_pixels", "upright_pixel_aspect"]


class SquarePixelDetector(FaceDetector):
    """``detector`` run on a square-pixel copy of each frame; faces returned in the frame's pixels.

    Args:
        detector: any :class:`~fsvideo.faces.detect.FaceDetector` (a keyframe / region tracker too:
            it then tracks on the square-pixel copies, consistently).
        aspect: width / height of one pixel of the frames passed in (> 1: pixels are wide).
    """

    def __init__(self, detector: FaceDetector, aspect: float):
        self.inner = detector
        self.aspect = float(aspect)
        self.name = detector.name
        # (x, y) scale from frame pixels to the square copy's
        self._scale = np.array([self.aspect, 1.0]) if self.aspect >= 1 else np.array([1.0, 1.0 / self.aspect])

    def __getattr__(self, name):                  # stats, describe() ... of the wrapped detector
        return getattr(self.inner, name)

    def _square(self, image: np.ndarray) -> np.ndarray:
        return to_square_pixels(image, self.aspect)

    def _back(self, faces: list[Face]) -> list[Face]:
        s = self._scale
        out = []
        for f in faces:
            out.append(dataclasses.replace(
                f, box=np.asarray(f.box, np.float64) / np.tile(s, 2),
                landmarks=None if f.landmarks is None else np.asarray(f.landmarks, np.float64) / s,
                motion=None if f.motion is None else np.asarray(f.motion, np.float64) / s))
        return out

    def detect(self, image: np.ndarray) -> list[Face]:
        return self._back(self.inner.detect(self._square(image)))

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        return [self._back(fs) for fs in self.inner.detect_batch([self._square(im) for im in images])]


def square_pixels(detector: FaceDetector | None, aspect: float) -> FaceDetector | None:
    """``detector`` wrapped in :class:`SquarePixelDetector` when the pixels are not square (else itself)."""
    if detector is None or abs(float(aspect) - 1.0) < 1e-6:
        return detector
    return SquarePixelDetector(detector, aspect)
