"""Blend masks and paste-back: the align -> paste round trip, untouched pixels outside the mask, Poisson."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fsvideo.faces import (
    FACE_LABELS,
    DlibDetector,
    MaskSmoother,
    align_face,
    align_face_fast,
    face_mask,
    landmark_mask,
    parsing_mask,
    paste_back,
    warp_to_frame,
)

ROUND_TRIP_PSNR_DB = 33.0  # measured 34-36 dB on facerec-obama.jpg (1024 crop of a ~480 px face)


def _psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


@pytest.fixture(scope="module")
def obama(media_dir):
    img = np.asarray(Image.open(media_dir / "images" / "wild" / "facerec-obama.jpg").convert("RGB"))
    face = DlibDetector(max_side=400).detect(img)[0]
    return img, face.landmarks


def _alpha_full(face, matrix, mask, shape) -> np.ndarray:
    full = np.zeros(shape[:2], np.float32)
    w = warp_to_frame(face, matrix, mask, shape)
    if w is not None:
        x0, y0, _, a = w
        full[y0:y0 + a.shape[0], x0:x0 + a.shape[1]] = a
    return full


@pytest.mark.parametrize("method", ["exact", "fast"])
def test_round_trip_reproduces_the_frame(obama, method, capsys):
    img, lm = obama
    a = (align_face if method == "exact" else align_face_fast)(img, lm, 1024)
    mask = landmark_mask(a.landmarks, 1024)
    alpha = _alpha_full(a.image, a.matrix, mask, img.shape)
    assert 0.02 < (alpha > 0).mean() < 0.3  # the face, not the whole photo
    results = {}
    for poisson in (False, True):
        out = paste_back(img, a.image, a.matrix, mask, poisson=poisson)
        assert out.shape == img.shape and out.dtype == np.uint8
        outside = alpha == 0
        np.testing.assert_array_equal(out[outside], img[outside])  # bit-identical outside the mask
        inside = alpha >= 0.999
        results[poisson] = _psnr(out[inside], img[inside])
        assert results[poisson] > ROUND_TRIP_PSNR_DB, (method, poisson, results[poisson])
    with capsys.disabled():
        print(f"\nround trip ({method} align, 1024): PSNR inside the mask {results[False]:.2f} dB alpha blend, "
              f"{results[True]:.2f} dB Poisson")


def test_paste_replaces_the_face_and_only_it(obama):
    img, lm = obama
    a = align_face_fast(img, lm, 256)
    mask = landmark_mask(a.landmarks, 256)
    red = np.zeros_like(a.image)
    red[..., 0] = 255
    out = paste_back(img, red, a.matrix, mask)
    alpha = _alpha_full(red, a.matrix, mask, img.shape)
    core = alpha >= 0.999
    assert np.all(out[core] == [255, 0, 0])
    np.testing.assert_array_equal(out[alpha == 0], img[alpha == 0])
    # The nose tip is inside the pasted region, the photo's corner is not.
    nx, ny = np.round(lm[30]).astype(int)
    assert core[ny, nx] and alpha[0, 0] == 0


def test_poisson_matches_the_frame_tone(obama):
    """A face 40 grey levels too bright: alpha blending keeps the offset, Poisson blending removes it."""
    img, lm = obama
    a = align_face_fast(img, lm, 512)
    mask = landmark_mask(a.landmarks, 512)
    bright = np.clip(a.image.astype(np.int16) + 40, 0, 255).astype(np.uint8)
    inside = _alpha_full(bright, a.matrix, mask, img.shape) >= 0.999
    plain = paste_back(img, bright, a.matrix, mask)
    poisson = paste_back(img, bright, a.matrix, mask, poisson=True)
    err_plain = np.abs(plain[inside].astype(float) - img[inside]).mean()
    err_poisson = np.abs(poisson[inside].astype(float) - img[inside]).mean()
    assert err_plain > 30 and err_poisson < 8, (err_plain, err_poisson)


def test_face_cut_by_the_border(media_dir):
    path = media_dir / "images" / "wild" / "facerec-obama_partial_face.jpg"
    img = np.asarray(Image.open(path).convert("RGB"))
    lm = DlibDetector(max_side=400).detect(img)[0].landmarks
    a = align_face_fast(img, lm, 512)
    mask = landmark_mask(a.landmarks, 512)
    for poisson in (False, True):
        out = paste_back(img, a.image, a.matrix, mask, poisson=poisson)
        alpha = _alpha_full(a.image, a.matrix, mask, img.shape)
        np.testing.assert_array_equal(out[alpha == 0], img[alpha == 0])
        assert _psnr(out[alpha >= 0.999], img[alpha >= 0.999]) > 30


def test_landmark_mask_shape(obama):
    img, lm = obama
    a = align_face_fast(img, lm, 256)
    m = landmark_mask(a.landmarks, 256)
    assert m.shape == (256, 256) and m.dtype == np.float32 and m.min() == 0 and m.max() == 1
    nose = np.round(a.landmarks[30]).astype(int)
    assert m[nose[1], nose[0]] == 1.0
    assert m[0, 0] == 0 and m[-1, -1] == 0
    # The forehead (above the brows) is covered, the hair at the top is not.
    brow_y = a.landmarks[17:27, 1].min()
    assert m[int(brow_y - 0.05 * 256), 128] > 0.9 and m[5, 128] == 0
    # Feathered: values between 0 and 1 exist, and only near the edge.
    soft = (m > 0) & (m < 1)
    assert soft.any() and soft.mean() < 0.2


def test_parsing_mask_uses_the_official_labels():
    lab = np.zeros((512, 512), np.int64)
    lab[100:400, 100:400] = 1     # skin
    lab[200:250, 150:350] = 12    # upper lip (inside the skin box)
    lab[0:100, :] = 17            # hair
    lab[400:, :] = 14             # neck
    m = parsing_mask(lab, 1024, feather=0.0)
    assert m.shape == (1024, 1024)
    assert m[500, 500] == 1 and m[450, 500] == 1   # skin, lip
    assert m[100, 500] == 0 and m[900, 500] == 0  # hair, neck
    assert set(FACE_LABELS) == {1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13}


def test_face_mask_with_and_without_a_parser(obama):
    img, lm = obama
    a = align_face_fast(img, lm, 256)
    calls = []

    def parser(face):  # a stand-in for BiSeNet: labels skin in a box at 512 px
        calls.append(face.shape)
        lab = np.zeros((512, 512), np.int64)
        lab[128:384, 128:384] = 1
        return lab

    m = face_mask(a.image, a.landmarks, parser=parser)
    assert calls == [(256, 256, 3)] and m[128, 128] == 1 and m[10, 10] == 0
    # A parser that sees no face falls back to the landmark hull.
    m2 = face_mask(a.image, a.landmarks, parser=lambda f: np.zeros((64, 64), np.int64))
    np.testing.assert_array_equal(m2, landmark_mask(a.landmarks, 256))
    with pytest.raises(ValueError, match="landmarks"):
        face_mask(a.image)


def test_mask_smoother_is_in_seconds():
    """A mask switching on reaches the same level after 0.2 s at 25 and at 50 fps."""
    levels = []
    for fps in (25, 50):
        sm = MaskSmoother(fps, tau_s=0.08)
        sm(np.zeros((4, 4)))
        for _ in range(round(0.2 * fps)):
            out = sm(np.ones((4, 4)))
        levels.append(float(out[0, 0]))
    assert 0.8 < levels[0] < 0.99 and abs(levels[0] - levels[1]) < 1e-6
    assert MaskSmoother(30, tau_s=0)(np.ones((2, 2)))[0, 0] == 1


def test_paste_back_checks_its_arguments(obama):
    img, lm = obama
    a = align_face_fast(img, lm, 64)
    with pytest.raises(ValueError, match="mask"):
        paste_back(img, a.image, a.matrix, np.ones((32, 48)))          # a mask covers the square crop
    with pytest.raises(ValueError, match="mask"):
        paste_back(img, a.image, a.matrix, np.ones((64, 64, 1)))
    with pytest.raises(ValueError, match="mask"):
        paste_back(img, a.image, a.matrix, np.full((64, 64), 2.0))
    with pytest.raises(ValueError, match="matrix"):
        paste_back(img, a.image, np.zeros((3, 3)), np.ones((64, 64)))
    with pytest.raises(ValueError, match="frame"):
        paste_back(img[..., 0], a.image, a.matrix, np.ones((64, 64)))
    # A mask of zeros changes nothing.
    np.testing.assert_array_equal(paste_back(img, a.image, a.matrix, np.zeros((64, 64))), img)


def _whole_frame_paste(frame, face, matrix, mask):
    """The reference: warp the face and its mask over the whole frame, blend every pixel."""
    import cv2
    inv = np.linalg.inv(np.asarray(matrix, np.float64))[:2]
    H, W = frame.shape[:2]
    f = cv2.warpAffine(face, inv, (W, H), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_REPLICATE)
    a = cv2.warpAffine(mask, inv, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)[..., None]
    return np.clip(np.rint(a * f + (1 - a) * frame.astype(np.float32)), 0, 255).astype(np.uint8)


def _whole_crop_feather(binary, feather_px):
    """The reference feather: the distance transform over the whole crop."""
    import cv2
    pad = int(np.ceil(feather_px)) + 1
    bp = cv2.copyMakeBorder((binary > 0).astype(np.uint8), pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    t = np.clip(cv2.distanceTransform(bp, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[pad:-pad, pad:-pad] / feather_px, 0, 1)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def test_region_only_paste_equals_the_whole_frame_path(media_dir):
    """At 1080p the box-only mask, warp and blend give the whole-frame result within 1 grey level,
    bit-identical outside the face; inplace writes into the frame itself."""
    import cv2

    from fsvideo.faces.blend import _feather
    from fsvideo.video import VideoReader
    frame = next(iter(VideoReader(media_dir / "videos" / "other" / "lt-FP006542HD02.mp4"))).image
    lm = DlibDetector(max_side=640).detect(frame)[0].landmarks
    a = align_face_fast(frame, lm, 1024)
    gen = cv2.GaussianBlur(a.image, (0, 0), 3)[:, ::-1].copy()          # a "generated" face unlike the source
    mask = landmark_mask(a.landmarks, 1024)
    binary = np.zeros((1024, 1024), np.uint8)
    cv2.circle(binary, (1000, 500), 100, 1, -1)                         # touches the crop's border too
    for b in (mask > 0, binary):
        np.testing.assert_allclose(_feather(b, 40.96), _whole_crop_feather(b, 40.96), atol=1e-6)
    got = paste_back(frame, gen, a.matrix, mask)
    want = _whole_frame_paste(frame, gen, a.matrix, mask)
    assert np.abs(got.astype(int) - want).max() <= 1
    assert (got != frame).any(axis=2).sum() > 100_000                    # the face did change
    warped = warp_to_frame(gen, a.matrix, mask, frame.shape)
    x0, y0, _, alpha = warped
    outside = np.ones(frame.shape[:2], bool)
    outside[y0:y0 + alpha.shape[0], x0:x0 + alpha.shape[1]] = alpha <= 0
    np.testing.assert_array_equal(got[outside], frame[outside])
    mine = frame.copy()
    assert paste_back(mine, gen, a.matrix, mask, inplace=True) is mine
    np.testing.assert_array_equal(mine, got)


def test_mask_smoother_is_the_exponential_average_and_hands_out_copies():
    from fsvideo.faces.blend import MaskSmoother
    rng = np.random.default_rng(0)
    sm, ref = MaskSmoother(30.0, tau_s=0.08), None
    for m in (rng.random((32, 32), dtype=np.float32) for _ in range(5)):
        out = sm(m)
        ref = m.copy() if ref is None else ref + sm.alpha * (m - ref)
        assert np.array_equal(out, ref)
        out[:] = 7                                   # the caller's array: the smoother's state is untouched
