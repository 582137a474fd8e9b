"""FFHQ alignment vs ../shared/reference/ffhq-align (geometry exact, pixels per its README); the fast path."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import PIL
import pytest
from PIL import Image

from fsvideo.faces import (
    align_face,
    align_face_fast,
    align_quad_fast,
    ffhq_geometry,
    ffhq_quad,
    quad_matrix,
    transform_points,
)
from fsvideo.faces import quad_size as qsize_of

REF_PILLOW = "13.0.0"  # the Pillow release the reference crops were made with (expected.json meta)
CASES = [(c, o) for c in ("obama_partial", "pexels_andrea", "ilip_crop") for o in ("1024", "256")]


@pytest.fixture(scope="module")
def ref(shared_dir):
    d = shared_dir / "reference" / "ffhq-align"
    expected = json.loads((d / "expected.json").read_text())
    lms = json.loads((d / "landmarks.json").read_text())
    return d, expected, lms


def _load(d, name) -> np.ndarray:
    return np.asarray(Image.open(d / name).convert("RGB"))


def _case(ref, case, size):
    d, expected, lms = ref
    e = expected["cases"][case][size]
    lc = lms["cases"][case]
    return d, e, _load(d, lc["image"]), np.array(lc["landmarks_xy"], dtype=np.float64)


@pytest.mark.parametrize("case", ["obama_partial", "pexels_andrea", "ilip_crop"])
def test_quad_geometry_matches_reference(ref, case):
    _, e, _, lm = _case(ref, case, "1024")
    g = ffhq_geometry(lm)
    for key in ("eye_left", "eye_right", "eye_avg", "eye_to_eye", "mouth_left", "mouth_right", "mouth_avg",
                "eye_to_mouth", "x", "y", "c", "quad"):
        np.testing.assert_allclose(g[key], np.array(e[key]), rtol=0, atol=1e-9, err_msg=key)
    quad, qsize = ffhq_quad(lm)
    assert abs(qsize - e["qsize"]) < 1e-9
    np.testing.assert_allclose(quad, np.array(e["quad"]), rtol=0, atol=1e-9)


@pytest.mark.parametrize("case,size", CASES)
def test_exact_alignment_matches_reference(ref, case, size):
    d, e, img, lm = _case(ref, case, size)
    trace: dict = {}
    a = align_face(img, lm, int(size), e["transform_size"], e["enable_padding"], trace=trace)
    # Integers exactly, float quads to 1e-9.
    assert trace["shrink"] == e["shrink"]
    assert trace["border"] == e["border"]
    assert (list(trace["crop_ltrb"]) if trace["crop_ltrb"] else None) == e["crop_ltrb"]
    assert (list(trace["pad_ltrb"]) if trace["pad_ltrb"] else None) == e["pad_ltrb"]
    if e["shrink_applied"]:
        assert list(trace["shrink_resize_to_wh"]) == e["shrink_resize_to_wh"]
    assert list(trace["transform_input_wh"]) == e["transform_input_wh"]
    for key in ("quad_after_shrink", "quad_after_crop", "quad_final"):
        np.testing.assert_allclose(trace[key], np.array(e[key]), rtol=0, atol=1e-9, err_msg=key)
    np.testing.assert_allclose(trace["transform_data"], np.array(e["transform_data"]), rtol=0, atol=1e-9)
    assert a.image.shape == (int(size), int(size), 3) and a.image.dtype == np.uint8
    expected_px = _load(d, e["output"]).astype(np.int16)
    if PIL.__version__ == REF_PILLOW:
        assert hashlib.sha256(a.image.tobytes()).hexdigest() == e["output_pixels_sha256"]
    else:  # another Pillow may change its resamplers slightly: the README's tolerance for other resamplers
        diff = np.abs(a.image.astype(np.int16) - expected_px)
        assert diff.mean() < 0.6 and diff.max() <= 4


@pytest.mark.parametrize("case,size", [("pexels_andrea", "1024"), ("ilip_crop", "256")])
def test_matrix_is_the_pixel_transform(ref, case, size):
    """The matrix maps crop pixels to the source pixels they were sampled from."""
    _, e, img, lm = _case(ref, case, size)
    a = align_face(img, lm, int(size), e["transform_size"])
    o = int(size)
    corners = transform_points(a.matrix, [[-0.5, -0.5], [-0.5, o - 0.5], [o - 0.5, o - 0.5], [o - 0.5, -0.5]])
    # Without a shrink the crop's outer corners are the quad; the shrink's resize moves them by < 1 px.
    tol = 1e-9 if not e["shrink_applied"] else 0.5 * e["shrink"] + 1e-9
    np.testing.assert_allclose(corners, np.array(e["quad"]), atol=tol)
    # Landmarks mapped into the crop land where FFHQ puts eyes: the eye line is level, near 40 % height.
    eyes = (a.landmarks[36:42].mean(0) + a.landmarks[42:48].mean(0)) / 2
    assert abs(a.landmarks[36:42].mean(0)[1] - a.landmarks[42:48].mean(0)[1]) < 0.01 * o
    assert 0.3 * o < eyes[1] < 0.5 * o and abs(eyes[0] - o / 2) < 0.05 * o
    # Sampling the (pre-blurred, so not aliased) source with the matrix reproduces the crop best:
    # moving the matrix by half a source pixel makes it worse in both directions.
    import cv2
    scale = np.sqrt(abs(np.linalg.det(a.matrix[:2, :2])))
    src = cv2.GaussianBlur(img, (0, 0), max(0.5, 0.5 * scale))
    c = slice(o // 4, 3 * o // 4)
    err = {}
    for shift in (-0.5, 0.0, 0.5):
        m = a.matrix.copy()
        m[:2, 2] += shift
        r = cv2.warpAffine(src, m[:2], (o, o), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        err[shift] = np.abs(r[c, c].astype(float) - a.image[c, c]).mean()
    assert err[0.0] < 2.0 and err[0.0] < err[-0.5] and err[0.0] < err[0.5], err


def test_fast_path_deviation_from_exact(ref, capsys):
    """The per-frame cv2 path against the reference crops: reported, and bounded where it matters."""
    rows = []
    for case, size in CASES:
        d, e, img, lm = _case(ref, case, size)
        expected_px = _load(d, e["output"]).astype(np.int16)
        f = align_face_fast(img, lm, int(size))
        np.testing.assert_allclose(f.quad, np.array(e["quad"]), atol=1e-9)
        diff = np.abs(f.image.astype(np.int16) - expected_px)
        # Pixels whose source lies inside the photo, away from where FFHQ's pad blur reaches in
        # (1/3 of the pad width, in the shrunk image): the fast path does not reproduce that blur.
        o = int(size)
        uv = np.stack(np.meshgrid(np.arange(o), np.arange(o)), -1).reshape(-1, 2)
        xy = transform_points(f.matrix, uv)
        h, w = img.shape[:2]
        m = (max(e["pad_ltrb"]) / 3 + 1) * max(e["shrink"], 1) if e["pad_ltrb"] else 0
        inside = (xy[:, 0] >= m) & (xy[:, 0] <= w - 1 - m) & (xy[:, 1] >= m) & (xy[:, 1] <= h - 1 - m)
        inside = inside.reshape(o, o)
        di = diff[inside]
        rows.append((case, size, diff.mean(), int(diff.max()), di.mean(), int(di.max()), inside.mean()))
        # Same sampling chain as the README's "cv2.warpAffine" variants when no downscale is needed
        # (their tolerance: mean < 0.6); a k-times box filter instead of Lanczos when the face is larger.
        k = int(np.ceil(qsize_of(f.quad) / o - 1e-9))
        assert di.mean() < (0.6 if k <= 1 else 1.6), (case, size, di.mean())
    with capsys.disabled():
        print("\nfast path vs FFHQ reference (grey levels): case size | all: mean max | "
              "inside photo: mean max (share)")
        for r in rows:
            print(f"  {r[0]:14s} {r[1]:>4s} | {r[2]:5.2f} {r[3]:3d} | {r[4]:5.2f} {r[5]:3d} ({r[6]:.0%})")


def test_quad_matrix_and_fast_supersampling():
    quad = np.array([[10.0, 20.0], [10.0, 420.0], [410.0, 420.0], [410.0, 20.0]])
    m = quad_matrix(quad, 100)
    np.testing.assert_allclose(transform_points(m, [[-0.5, -0.5], [99.5, 99.5]]), [[10, 20], [410, 420]])
    # A large face aligned to a small output is box-filtered, not aliased: a fine checkerboard averages to grey.
    img = np.zeros((500, 500, 3), np.uint8)
    img[::2, ::2] = img[1::2, 1::2] = 255
    a = align_quad_fast(img, quad, 100)
    assert abs(float(a.image.mean()) - 127.5) < 3 and a.image.std() < 8
    b = align_quad_fast(img, quad, 100, supersample=False)  # point-samples the pattern: aliased
    assert abs(float(b.image.mean()) - 127.5) > 50


def test_realigning_aligned_photos_is_identity(media_dir):
    """Detect + align on an FFHQ-aligned photo gives (almost) the photo's own frame as the quad."""
    from fsvideo.faces import DlibDetector
    det = DlibDetector(max_side=400)  # detection on a 400 px copy (fast); landmarks at full size
    for name in ("ffhq-lt-00001.jpg", "ffhq-lt-00002.jpg"):
        img = np.asarray(Image.open(media_dir / "images" / "aligned" / name).convert("RGB"))
        s = img.shape[0]
        quad, qsize = ffhq_quad(det.detect(img)[0].landmarks)
        frame = np.array([[0, 0], [0, s], [s, s], [s, 0]], dtype=float)
        assert np.abs(quad - frame).max() < 0.03 * s, name
        assert abs(qsize / s - 1) < 0.03


def test_bad_arguments():
    img = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(ValueError, match="landmarks"):
        align_face(img, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="image"):
        align_face(np.zeros((50, 50), np.uint8), np.zeros((68, 2)))
    with pytest.raises(ValueError, match="output_size"):
        align_face_fast(img, np.random.default_rng(0).uniform(10, 40, (68, 2)), output_size=0)
    with pytest.raises(ValueError, match="degenerate"):
        ffhq_quad(np.zeros((68, 2)))
