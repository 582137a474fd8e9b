"""FFHQ face alignment from 68 landmarks, with the exact pixel transform kept so a face can be put back.

Two paths:

* :func:`align_face` / :func:`align_quad` -- the FFHQ dataset procedure (``recreate_aligned_images`` in
  NVlabs/ffhq-dataset ``download_ffhq.py``) step by step: quad from the landmarks, shrink, crop,
  reflect pad + blur + median blend, Pillow ``QUAD`` transform to ``transform_size`` (4096) and a
  Lanczos resize.  With the same Pillow release as the reference it is bit-exact.  About 0.5 s per face.
* :func:`align_face_fast` -- the per-frame video path: one ``cv2.warpAffine`` from the quad straight to
  the output size with reflect borders (integer-factor supersampling + box filter when the face is
  larger than the output).  Milliseconds per face; against the exact path it differs by about one
  grey level on average (see ``tests/test_faces_align.py``).

Both return an :class:`AlignedFace` whose ``matrix`` maps output pixel coordinates ``(u, v, 1)`` to
source pixel coordinates ``(x, y, 1)`` (pixel centres at integer coordinates), i.e. the transform
the pixels actually went through; :func:`fsvideo.faces.paste.paste_back` inverts it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fsvideo.faces.detect import check_image


@dataclass
class AlignedFace:
    """An aligned face crop and how it was cut.

    Attributes:
        image: uint8 [O, O, 3] RGB crop.
        quad: float64 [4, 2] FFHQ quad in source-image pixels (top-left, bottom-left, bottom-right,
            top-right corner of the crop).
        matrix: float64 [3, 3] mapping output pixel coords ``(u, v, 1)`` to source pixel coords.
        landmarks: float64 [68, 2] landmarks in output pixel coords (None when aligned from a quad only).
        output_size: O.
    """

    image: np.ndarray
    quad: np.ndarray
    matrix: np.ndarray
    landmarks: np.ndarray | None
    output_size: int

    @property
    def inverse_matrix(self) -> np.ndarray:
        """[3, 3] mapping source pixel coords to output pixel coords."""
        return np.linalg.inv(self.matrix)


def check_landmarks(landmarks, name: str = "landmarks") -> np.ndarray:
    """``landmarks`` as float64 [68, 2] (ValueError naming ``name`` otherwise)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"{name} must be [68, 2] (x, y) iBUG landmarks, got shape {lm.shape}")
    if not np.all(np.isfinite(lm)):
        raise ValueError(f"{name} contains NaN or inf")
    return lm


def check_quad(quad, name: str = "quad") -> np.ndarray:
    q = np.asarray(quad, dtype=np.float64)
    if q.shape != (4, 2) or not np.all(np.isfinite(q)):
        raise ValueError(f"{name} must be a finite [4, 2] array, got shape {q.shape}")
    return q


def ffhq_geometry(landmarks) -> dict[str, np.ndarray | float]:
    """Every intermediate vector of the FFHQ quad (``eye_left`` ... ``c``, ``quad``, ``qsize``)."""
    lm = check_landmarks(landmarks)
    eye_left = np.mean(lm[36:42], axis=0)
    eye_right = np.mean(lm[42:48], axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_left = lm[48]
    mouth_right = lm[54]
    mouth_avg = (mouth_left + mouth_right) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    # Oriented crop rectangle (same operation order as download_ffhq.py, for bit-identical floats).
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    if not np.hypot(*x) > 1e-9:
        raise ValueError("landmarks are degenerate (eyes and mouth coincide): no face orientation")
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    qsize = float(np.hypot(*x) * 2)
    return dict(eye_left=eye_left, eye_right=eye_right, eye_avg=eye_avg, eye_to_eye=eye_to_eye,
                mouth_left=mouth_left, mouth_right=mouth_right, mouth_avg=mouth_avg, eye_to_mouth=eye_to_mouth,
                x=x, y=y, c=c, quad=quad, qsize=qsize)


def ffhq_quad(landmarks, aspect: float = 1.0) -> tuple[np.ndarray, float]:
    """The FFHQ crop quad of 68 landmarks: (float64 [4, 2] quad, qsize).

    Corners are top-left, bottom-left, bottom-right, top-right in image pixels; ``qsize`` is the
    side length.  Example: ``quad, qsize = ffhq_quad(face.landmarks)``.  ``aspect``: width / height
    of one image pixel (a non-square-pixel video's, :mod:`fsvideo.faces.aspect`): the quad is built
    on square pixels (``qsize`` in those) and returned in the image's, where it is a parallelogram.
    """
    if aspect == 1.0:
        g = ffhq_geometry(landmarks)
        return g["quad"], g["qsize"]
    s = np.array([float(aspect), 1.0])
    g = ffhq_geometry(check_landmarks(landmarks) * s)
    return g["quad"] / s, g["qsize"]


def quad_size(quad) -> float:
    """Side length of a (square) quad: |top-right - top-left|, which equals FFHQ's ``qsize``."""
    q = check_quad(quad)
    return float(np.hypot(*(q[3] - q[0])))


def quad_matrix(quad, output_size: int) -> np.ndarray:
    """[3, 3] affine map from output pixel coords (u, v, 1) of an O x O crop to source pixel coords.

    Output pixel (u, v) samples ``q0 + (q3 - q0) (u + 0.5) / O + (q1 - q0) (v + 0.5) / O`` (the FFHQ
    QUAD transform with its +0.5, pixel centres at integers), so corner (0, 0) of the crop's area
    is ``q0 - 0.5``.
    """
    q = check_quad(quad)
    ex = (q[3] - q[0]) / output_size
    ey = (q[1] - q[0]) / output_size
    t = q[0] + 0.5 * ex + 0.5 * ey
    return np.array([[ex[0], ey[0], t[0]], [ex[1], ey[1], t[1]], [0.0, 0.0, 1.0]])


def transform_points(matrix, points) -> np.ndarray:
    """Apply a [3, 3] transform to [N, 2] points (homogeneous divide included)."""
    p = np.asarray(points, dtype=np.float64)
    h = np.c_[p, np.ones(len(p))] @ np.asarray(matrix, dtype=np.float64).T
    return h[:, :2] / h[:, 2:3]


def _aligned(image, quad, matrix, landmarks, output_size) -> AlignedFace:
    lm_out = None if landmarks is None else transform_points(np.linalg.inv(matrix), landmarks)
    return AlignedFace(image=image, quad=np.asarray(quad, dtype=np.float64).copy(), matrix=matrix,
                       landmarks=lm_out, output_size=output_size)


def _check_sizes(output_size: int, transform_size: int | None = None) -> None:
    if int(output_size) != output_size or output_size < 8:
        raise ValueError(f"output_size must be an integer >= 8, got {output_size}")
    if transform_size is not None and (int(transform_size) != transform_size or transform_size < output_size):
        raise ValueError(f"transform_size must be an integer >= output_size, got {transform_size}")


def align_quad(image: np.ndarray, quad, output_size: int = 1024, transform_size: int = 4096,
               enable_padding: bool = True, *, landmarks=None, trace: dict | None = None) -> AlignedFace:
    """The FFHQ procedure from a given quad (e.g. a temporally smoothed one).

    Args:
        image: uint8 [H, W, 3] RGB.
        quad: [4, 2] square quad in image pixels (as :func:`ffhq_quad` returns).
        output_size, transform_size, enable_padding: as in ``download_ffhq.py`` (1024, 4096, True).
        landmarks: optional [68, 2] source landmarks, returned mapped into the crop.
        trace: a dict to receive the intermediate values (shrink, border, crop, pad, quad_final...).

    Returns an :class:`AlignedFace`; its ``matrix`` includes the shrink resize's exact scale.
    """
    import PIL.Image
    import scipy.ndimage

    check_image(image)
    _check_sizes(output_size, transform_size)
    quad = check_quad(quad).copy()
    qsize = quad_size(quad)
    tr = trace if trace is not None else {}
    tr["quad"], tr["qsize"] = quad.copy(), qsize
    src_h, src_w = image.shape[:2]
    img = PIL.Image.fromarray(np.ascontiguousarray(image))

    # Shrink.
    shrink = int(np.floor(qsize / output_size * 0.5))
    tr["shrink"] = shrink
    sx = sy = 1.0  # source pixels per pixel of the shrunk image
    if shrink > 1:
        rsize = (int(np.rint(float(img.size[0]) / shrink)), int(np.rint(float(img.size[1]) / shrink)))
        img = img.resize(rsize, PIL.Image.LANCZOS)
        quad /= shrink
        qsize /= shrink
        sx, sy = src_w / rsize[0], src_h / rsize[1]
        tr["shrink_resize_to_wh"] = rsize
    tr["quad_after_shrink"], tr["qsize_after_shrink"] = quad.copy(), qsize

    # Crop.
    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))),
            int(np.ceil(max(quad[:, 0]))), int(np.ceil(max(quad[:, 1]))))
    crop = (max(crop[0] - border, 0), max(crop[1] - border, 0),
            min(crop[2] + border, img.size[0]), min(crop[3] + border, img.size[1]))
    tr["border"] = border
    offset = np.zeros(2)  # shrunk-image coords = transformed-image coords + offset
    tr["crop_ltrb"] = None
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad -= crop[0:2]
        offset += crop[0:2]
        tr["crop_ltrb"] = crop
    tr["quad_after_crop"] = quad.copy()

    # Pad.
    pad = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))),
           int(np.ceil(max(quad[:, 0]))), int(np.ceil(max(quad[:, 1]))))
    pad = (max(-pad[0] + border, 0), max(-pad[1] + border, 0),
           max(pad[2] - img.size[0] + border, 0), max(pad[3] - img.size[1] + border, 0))
    tr["pad_ltrb"] = None
    if enable_padding and max(pad) > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        img = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
        h, w, _ = img.shape
        y, x, _ = np.ogrid[:h, :w, :1]
        mask = np.maximum(1.0 - np.minimum(np.float32(x) / pad[0], np.float32(w - 1 - x) / pad[2]),
                          1.0 - np.minimum(np.float32(y) / pad[1], np.float32(h - 1 - y) / pad[3]))
        blur = qsize * 0.02
        img += (scipy.ndimage.gaussian_filter(img, [blur, blur, 0]) - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        img += (np.median(img, axis=(0, 1)) - img) * np.clip(mask, 0.0, 1.0)
        img = PIL.Image.fromarray(np.uint8(np.clip(np.rint(img), 0, 255)), "RGB")
        quad += pad[:2]
        offset -= pad[:2]
        tr["pad_ltrb"] = tuple(int(p) for p in pad)
        tr["blur_sigma"] = blur
    tr["quad_final"] = quad.copy()
    tr["transform_input_wh"] = img.size

    # Transform (Pillow's QUAD with bilinear sampling; the quad is a square, so the map is affine).
    tr["transform_data"] = (quad + 0.5).flatten()
    img = img.transform((transform_size, transform_size), PIL.Image.QUAD, (quad + 0.5).flatten(),
                        PIL.Image.BILINEAR)
    if output_size < transform_size:
        img = img.resize((output_size, output_size), PIL.Image.LANCZOS)
    out = np.asarray(img, dtype=np.uint8).copy()

    # Output pixel -> transformed-image coords (the Lanczos resize keeps pixel-centre alignment),
    # -> shrunk-image coords (+offset), -> source coords (a resize maps centre x' to (x'+0.5) s - 0.5).
    m = quad_matrix(quad, output_size)
    m[:2, 2] += offset
    unshrink = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    matrix = unshrink @ m
    return _aligned(out, tr["quad"], matrix, landmarks, output_size)


def align_face(image: np.ndarray, landmarks, output_size: int = 1024, transform_size: int = 4096,
               enable_padding: bool = True, *, trace: dict | None = None) -> AlignedFace:
    """Align a face exactly as the FFHQ dataset was aligned.

    Args:
        image: uint8 [H, W, 3] RGB.
        landmarks: [68, 2] iBUG landmarks (x, y) in image pixels.
        output_size: side O of the result (1024 for FFHQ).
        transform_size: supersampling size of the QUAD transform (4096 for FFHQ).
        enable_padding: reflect-pad + blur + median blend where the quad leaves the image.
        trace: optional dict receiving every intermediate value (see :func:`align_quad`).

    Returns an :class:`AlignedFace` (uint8 [O, O, 3] crop, quad, exact ``matrix``, landmarks in crop
    coords).  Example: ``a = align_face(img, face.landmarks, 1024)``.
    """
    check_image(image)
    lm = check_landmarks(landmarks)
    quad, _ = ffhq_quad(lm)
    return align_quad(image, quad, output_size, transform_size, enable_padding, landmarks=lm, trace=trace)


def align_quad_fast(image: np.ndarray, quad, output_size: int = 1024, *, landmarks=None,
                    supersample: bool = True) -> AlignedFace:
    """Fast per-frame alignment: one ``cv2.warpAffine`` from ``quad`` with reflect borders.

    Same geometry as the exact path (same ``matrix`` when no shrink happens), but no blur/median blend
    in the padding (like the official video pipeline) and bilinear sampling straight to the output.
    When the quad is more than ``output_size`` wide it warps to an integer multiple k of the output
    and box-filters by k (``INTER_AREA``), so large faces are not aliased.
    """
    import cv2

    check_image(image)
    _check_sizes(output_size)
    quad = check_quad(quad)
    matrix = quad_matrix(quad, output_size)
    k = max(1, math.ceil(quad_size(quad) / output_size - 1e-9)) if supersample else 1
    size = output_size * k
    big = quad_matrix(quad, size)
    out = cv2.warpAffine(np.ascontiguousarray(image), big[:2], (size, size),
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT_101)
    if k > 1:
        out = cv2.resize(out, (output_size, output_size), interpolation=cv2.INTER_AREA)
    return _aligned(out, quad, matrix, landmarks, output_size)


def align_face_fast(image: np.ndarray, landmarks, output_size: int = 1024, *,
                    supersample: bool = True) -> AlignedFace:
    """:func:`align_quad_fast` on the FFHQ quad of ``landmarks`` (float [68, 2])."""
    check_image(image)
    lm = check_landmarks(landmarks)
    quad, _ = ffhq_quad(lm)
    return align_quad_fast(image, quad, output_size, landmarks=lm, supersample=supersample)
