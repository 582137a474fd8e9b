"""The PyTorch align / paste-back warps against the cv2 reference (run on the CPU here; the same code runs on CUDA)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from fsvideo.faces import (align_face_fast, align_quad_fast, face_mask, landmark_mask, make_detector, paste_back,
                           warp_to_frame)
from fsvideo.faces.align import quad_matrix
from fsvideo.faces.warp_torch import align_crops_torch, frame_to_tensor, paste_back_torch


@pytest.fixture(scope="module")
def hd(media_dir):
    """A 1080p frame and its face's landmarks (dlib through the registry, which a device run
    replaces with dlib's recorded faces: benchmarks/recorded_faces.py)."""
    from fsvideo.video import VideoReader
    frame = next(iter(VideoReader(media_dir / "videos" / "other" / "lt-FP006542HD02.mp4"))).image
    return frame, make_detector("dlib", max_side=640).detect(frame)[0].landmarks


def _reach(face, matrix, mask, shape) -> np.ndarray:
    """Frame pixels the warped mask reaches (alpha > 0), from the cv2 reference."""
    full = np.zeros(shape[:2], bool)
    w = warp_to_frame(face, matrix, mask, shape)
    if w is not None:
        x0, y0, _, a = w
        full[y0:y0 + a.shape[0], x0:x0 + a.shape[1]] = a > 0
    return full


def test_pixel_centre_convention_is_cv2s():
    """An integer shift copies pixels exactly, a half-pixel shift averages neighbours, and the
    borders mirror about the edge pixels' centres (cv2 BORDER_REFLECT_101) -- an affine_grid
    normalisation off by half a pixel fails all three."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    ft = frame_to_tensor(img)
    shift = np.array([[1.0, 0, 5], [0, 1.0, 7], [0, 0, 1]])
    crop = align_crops_torch(ft, [shift], 16)[0].numpy()
    np.testing.assert_array_equal(crop, img[7:23, 5:21])
    half = np.array([[1.0, 0, 5.5], [0, 1.0, 7], [0, 0, 1]])
    crop = align_crops_torch(ft, [half], 16)[0].numpy().astype(int)
    want = (img[7:23, 5:21].astype(int) + img[7:23, 6:22]) / 2
    assert np.abs(crop - want).max() <= 0.5 + 1e-9
    out = np.array([[1.0, 0, -6], [0, 1.0, -3], [0, 0, 1]])          # leaves the image at the top left
    crop = align_crops_torch(ft, [out], 16)[0].numpy()
    ref = cv2.warpAffine(img, out[:2], (16, 16), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REFLECT_101)
    np.testing.assert_array_equal(crop, ref)


@pytest.mark.parametrize("size", [256, 1024])                          # 256: supersampled (k = 3), 1024: not
def test_align_crops_match_the_cv2_path(hd, size):
    frame, lm = hd
    a = align_face_fast(frame, lm, size)
    crops = align_crops_torch(frame_to_tensor(frame), [a.matrix, a.matrix], size)
    assert crops.shape == (2, size, size, 3) and crops.dtype == torch.uint8
    d = np.abs(crops[0].numpy().astype(int) - a.image)
    assert d.mean() < 0.25 and d.max() <= 2, (d.mean(), d.max())
    np.testing.assert_array_equal(crops[0].numpy(), crops[1].numpy())


def test_align_near_the_border_matches(hd):
    """A quad that leaves the frame: the reflected border agrees with cv2's too."""
    frame, lm = hd
    a = align_face_fast(frame, lm, 256)
    quad = a.quad - a.quad.min(axis=0) - 80.0                           # 80 px past the top-left corner
    ref = align_quad_fast(frame, quad, 256)
    got = align_crops_torch(frame_to_tensor(frame), [quad_matrix(quad, 256)], 256)[0].numpy()
    d = np.abs(got.astype(int) - ref.image)
    assert d.mean() < 0.25 and d.max() <= 2, (d.mean(), d.max())


@pytest.mark.parametrize("size", [256, 1024])                          # 1024 at 1080p: no pre-shrink; 256: face grown
def test_paste_back_matches_the_cv2_path(hd, size):
    frame, lm = hd
    a = align_face_fast(frame, lm, size)
    gen = cv2.GaussianBlur(a.image, (0, 0), 2)[:, ::-1].copy()          # a face unlike the source
    mask = landmark_mask(a.landmarks, size)
    want = paste_back(frame, gen, a.matrix, mask)
    before = frame.copy()
    got = paste_back_torch(frame, [gen], [a.matrix], [mask])
    np.testing.assert_array_equal(frame, before)                       # the input is not modified
    reach = _reach(gen, a.matrix, mask, frame.shape)
    d = np.abs(got.astype(int) - want)
    assert d[reach].mean() < 1.0 and d.max() <= 4, (d[reach].mean(), d.max())
    np.testing.assert_array_equal(got[~reach], frame[~reach])          # bit-identical where no mask reaches
    assert (got != frame).any(axis=2).sum() > 10_000


def test_paste_back_preshrinks_a_large_face(hd):
    """A 1024 crop of a face about 400 px wide in the frame is box-filtered first, as the cv2 path does."""
    frame, lm = hd
    small = cv2.resize(frame, (960, 540), interpolation=cv2.INTER_AREA)
    a = align_face_fast(small, lm / 2, 1024)
    gen = 255 - a.image
    mask = landmark_mask(a.landmarks, 1024)
    want = paste_back(small, gen, a.matrix, mask)
    got = paste_back_torch(small, [gen], [a.matrix], [mask])
    reach = _reach(gen, a.matrix, mask, small.shape)
    d = np.abs(got.astype(int) - want)
    assert d[reach].mean() < 1.0, d[reach].mean()
    np.testing.assert_array_equal(got[~reach], small[~reach])


@pytest.mark.parametrize("side", [448, 128])                          # the face's size; a mask coarser still
def test_paste_back_with_a_mask_at_the_faces_size_matches(hd, side):
    """A 1024 crop (box-filtered first) with a mask on another grid (``mask_side``): the torch paste
    samples the mask through its own map, as the cv2 path does."""
    frame, lm = hd
    small = cv2.resize(frame, (960, 540), interpolation=cv2.INTER_AREA)
    a = align_face_fast(small, lm / 2, 1024)
    gen = 255 - a.image
    mask = face_mask(gen, a.landmarks, size=side)
    want = paste_back(small, gen, a.matrix, mask)
    got = paste_back_torch(small, [gen], [a.matrix], [mask])
    reach = _reach(gen, a.matrix, mask, small.shape)
    d = np.abs(got.astype(int) - want)
    assert d[reach].mean() < 1.0 and reach.sum() > 10_000, d[reach].mean()
    np.testing.assert_array_equal(got[~reach], small[~reach])
    full = paste_back(small, gen, a.matrix, face_mask(gen, a.landmarks))      # and the 1024 px mask's paste
    assert np.abs(got.astype(int) - full)[reach].mean() < (1.5 if side == 448 else 4.0)


def test_several_faces_paste_in_order(hd):
    """Two overlapping faces: the same as pasting them one after the other with cv2; a tensor face
    and an uploaded frame are accepted."""
    frame, lm = hd
    a = align_face_fast(frame, lm, 256)
    b = align_face_fast(frame, lm + [60.0, 10.0], 256)
    ga, gb = 255 - a.image, a.image[::-1].copy()
    ma, mb = landmark_mask(a.landmarks, 256), landmark_mask(b.landmarks, 256)
    want = paste_back(paste_back(frame, ga, a.matrix, ma), gb, b.matrix, mb)
    ft = frame_to_tensor(frame)
    got = paste_back_torch(frame, [ga, torch.from_numpy(gb)], [a.matrix, b.matrix], [ma, mb], frame_tensor=ft)
    assert torch.equal(ft, frame_to_tensor(frame))                     # the caller's upload is not written into
    reach = _reach(ga, a.matrix, ma, frame.shape) | _reach(gb, b.matrix, mb, frame.shape)
    d = np.abs(got.astype(int) - want)
    assert d[reach].mean() < 1.0, d[reach].mean()
    np.testing.assert_array_equal(got[~reach], frame[~reach])
    np.testing.assert_array_equal(paste_back_torch(frame, [], [], []), frame)


def test_bad_arguments(hd):
    frame, lm = hd
    a = align_face_fast(frame, lm, 64)
    with pytest.raises(ValueError, match="frame must be"):
        frame_to_tensor(frame.astype(np.float32))
    with pytest.raises(ValueError, match="frame_tensor"):
        align_crops_torch(torch.zeros(3, 8, 8), [a.matrix], 64)
    with pytest.raises(ValueError, match="one entry per face"):
        paste_back_torch(frame, [a.image], [a.matrix], [])
    with pytest.raises(ValueError, match="mask must be"):
        paste_back_torch(frame, [a.image], [a.matrix], [np.ones((32, 48))])
    with pytest.raises(ValueError, match="affine"):
        paste_back_torch(frame, [a.image], [np.eye(3) * [1, 1, 0]], [np.ones((64, 64))])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_cuda_matches_the_cv2_path(hd):
    """The same checks on the GPU the pipeline uses them on."""
    frame, lm = hd
    a = align_face_fast(frame, lm, 1024)
    ft = frame_to_tensor(frame, "cuda")
    crop = align_crops_torch(ft, [a.matrix], 1024)[0].cpu().numpy()
    assert np.abs(crop.astype(int) - a.image).mean() < 0.25
    gen = 255 - a.image
    for mask in (landmark_mask(a.landmarks, 1024), face_mask(gen, a.landmarks, size=768)):   # the crop's grid; mask_side's
        got = paste_back_torch(frame, [gen], [a.matrix], [mask], frame_tensor=ft)
        want = paste_back(frame, gen, a.matrix, mask)
        reach = _reach(gen, a.matrix, mask, frame.shape)
        assert np.abs(got.astype(int) - want)[reach].mean() < 1.0
        np.testing.assert_array_equal(got[~reach], frame[~reach])
