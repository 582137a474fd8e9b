"""Blend masks computed at the face's size in the frame (``mask_side``) against masks on the crop's own grid."""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from fsvideo.faces import DlibDetector, align_face_fast, paste_back
from fsvideo.faces.blend import MASK_SIDES, MaskSmoother, face_hull_points, face_mask, mask_side
from fsvideo.faces.paste import grid_map
from fsvideo.pipeline.face_stages import MaskStage

# Agreement of a paste with a mask at mask_side and with the 1024 px mask, the generated face being
# 255 - crop (every pixel differs from the frame by up to 255: the worst case, where any alpha
# difference shows at full strength), in grey levels over the pixels either paste changed.  The two
# grids cut the feather's edge at different pixels, so the bound is that discretisation, not zero:
# the 1024 px hull mask itself differs from a 2048 px one by up to 0.047 in alpha in the frame (12
# levels at this contrast).  Measured on these first frames: hull max 7, mean 0.10-0.11, signed mean
# under 0.01 (without the edge inset HULL_EDGE_PX: 0.08-0.12, which BIAS catches); parsing masks
# have half the feather (2 % of the crop against 4 %), so twice the alpha slope at the edge, and the
# parser's 512 px staircase resampled to two grids: max 10-11, mean 0.18-0.20, signed 0.002-0.065.
TOLERANCE = {"hull": dict(max=10, mean=0.15, bias=0.03), "parsing": dict(max=16, mean=0.3, bias=0.1)}


def _matrix(scale: float, shift=(10.0, 20.0)) -> np.ndarray:
    return np.array([[scale, 0.0, shift[0]], [0.0, scale, shift[1]], [0.0, 0.0, 1.0]])


def test_mask_side_is_the_crops_side_in_the_frame_rounded_up():
    assert mask_side(_matrix(400 / 1024), 1024) == 448                    # liveportrait-d18: 400 px
    assert mask_side(_matrix(707 / 1024), 1024) == 768                    # the 1080p clip: 707 px
    assert mask_side(_matrix(1.3), 1024) == 1024                          # never over the crop
    assert mask_side(_matrix(60 / 1024), 1024) == 128                     # the smallest side
    assert mask_side(_matrix(300 / 256), 256) == 256                      # a 256 crop of a larger face
    assert mask_side(_matrix(300 / 256), 256, sides=(100, 200)) == 256
    rot = cv2.getRotationMatrix2D((0, 0), 30, 400 / 1024)                 # rotation does not count
    assert mask_side(np.vstack([rot, [0, 0, 1]]), 1024) == 448
    # Hysteresis: a track keeps its side until the face shrinks 10 % under the next smaller side
    assert mask_side(_matrix(430 / 1024), 1024, current=512) == 512
    assert mask_side(_matrix(400 / 1024), 1024, current=512) == 448
    assert mask_side(_matrix(520 / 1024), 1024, current=512) == 640       # growing: at once


def test_face_mask_on_a_coarser_grid_is_the_same_square(obama_aligned):
    a = obama_aligned
    full = face_mask(a.image, a.landmarks)
    small = face_mask(a.image, a.landmarks, size=256)
    assert small.shape == (256, 256) and small.dtype == np.float32
    shrunk = cv2.resize(full, (256, 256), interpolation=cv2.INTER_AREA)
    assert np.abs(small - shrunk).mean() < 2e-3 and np.abs(small - shrunk).max() < 0.2
    np.testing.assert_array_equal(face_mask(a.image, a.landmarks, size=1024), full)   # its own grid: the same bits
    with pytest.raises(ValueError, match="mask size"):
        face_mask(a.image, a.landmarks, size=1)


@pytest.fixture(scope="module")
def obama_aligned(media_dir):
    from PIL import Image
    img = np.asarray(Image.open(media_dir / "images" / "wild" / "facerec-obama.jpg").convert("RGB"))
    return align_face_fast(img, DlibDetector(max_side=400).detect(img)[0].landmarks, 1024)


def _first_face(media_dir, name):
    from fsvideo.video import VideoReader
    frame = next(iter(VideoReader(media_dir / "videos" / "other" / name))).image
    lm = DlibDetector(max_side=640).detect(frame)[0].landmarks
    return frame, align_face_fast(frame, lm, 1024)


def _label_map(a) -> np.ndarray:
    """A parser's 512 px label map of the crop: the face hull (skin), a neck-labelled hole at the mouth."""
    lab = np.zeros((512, 512), np.uint8)
    pts = face_hull_points((a.landmarks + 0.5) / 2 - 0.5)
    cv2.fillConvexPoly(lab, cv2.convexHull(np.round(pts).astype(np.int32)), 1)
    mouth = np.round(a.landmarks[48:60].mean(0) / 2).astype(int)
    cv2.ellipse(lab, (int(mouth[0]), int(mouth[1])), (50, 20), 0, 0, 360, 14, -1)
    return lab


@pytest.mark.parametrize("clip, side", [("liveportrait-d18.mp4", 448), ("lt-FP006542HD02.mp4", 768)])
@pytest.mark.parametrize("kind", ["hull", "parsing"])
def test_a_mask_at_the_faces_size_pastes_like_the_crop_mask(media_dir, clip, side, kind):
    """480p and 1080p: the paste with a mask at mask_side against the 1024 px mask's, worst-case face."""
    frame, a = _first_face(media_dir, clip)
    assert mask_side(a.matrix, 1024) == side
    gen = 255 - a.image
    lab = _label_map(a)
    parser = (lambda face: lab) if kind == "parsing" else None
    ref = paste_back(frame, gen, a.matrix, face_mask(gen, a.landmarks, parser=parser))
    got = paste_back(frame, gen, a.matrix, face_mask(gen, a.landmarks, parser=parser, size=side))
    changed = (ref != frame).any(axis=2) | (got != frame).any(axis=2)
    signed = (got.astype(int) - ref)[changed]
    d, tol = np.abs(signed), TOLERANCE[kind]
    assert changed.sum() > 20_000
    assert d.max() <= tol["max"] and d.mean() < tol["mean"] and abs(signed.mean()) < tol["bias"], \
        (d.max(), d.mean(), signed.mean())
    np.testing.assert_array_equal(got[~changed], frame[~changed])


def _disc(side: int, centre, radius) -> np.ndarray:
    """A feathered disc on a side x side grid covering a 1024 px square (centre, radius in 1024 px units)."""
    k = side / 1024
    yy, xx = np.mgrid[:side, :side]
    r = np.hypot((xx + 0.5) / k - 0.5 - centre[0], (yy + 0.5) / k - 0.5 - centre[1])
    return np.clip((radius - r) / 40.0, 0, 1).astype(np.float32)


def test_smoothing_carries_on_across_a_side_change():
    """A moving disc smoothed with its side changing every few frames tracks the same disc smoothed
    at 1024 px (resampled); the old smoother restarted on a new side, handing out the raw mask."""
    fixed, varying = MaskSmoother(30.0), MaskSmoother(30.0)
    sides = [448] * 4 + [512] * 4 + [384] * 4 + [1024] * 2 + [448] * 2
    for i, side in enumerate(sides):
        centre, radius = (400 + 12 * i, 500), 250
        want = cv2.resize(fixed(_disc(1024, centre, radius)), (side, side), interpolation=cv2.INTER_AREA)
        raw = _disc(side, centre, radius)
        got = varying(raw)
        assert got.shape == (side, side) and varying.side == side
        assert np.abs(got - want).max() < 0.03, (i, side, np.abs(got - want).max())
        if i and side != sides[i - 1]:
            assert np.abs(got - raw).max() > 0.1                         # smoothed, not restarted
    varying.reset()
    assert varying.side is None


def test_the_mask_stage_uses_the_faces_size_and_smooths_across_sides(obama_aligned):
    """One track, the face growing from 400 to 560 frame pixels: masks of 448 then 640 px, the second
    smoothed with the first; ``sides=None`` keeps the crop's 1024 (the previous path)."""
    a = obama_aligned

    def packet(scale, lm):
        face = SimpleNamespace(track_id=3, aligned=SimpleNamespace(matrix=_matrix(scale), landmarks=lm))
        return {"faces": [face], "generated": a.image[None]}

    moved = a.landmarks + [40.0, 0.0]
    for sides, want in ((MASK_SIDES, [448, 640]), (None, [1024, 1024])):
        stage = MaskStage(30.0, sides=sides)
        out = stage.process([packet(400 / 1024, a.landmarks), packet(560 / 1024, moved)])
        assert [p["masks"][0].shape[0] for p in out] == want
        fresh = face_mask(a.image, moved, size=want[1])
        first = cv2.resize(out[0]["masks"][0], (want[1], want[1]), interpolation=cv2.INTER_LINEAR)
        alpha = MaskSmoother(30.0).alpha
        np.testing.assert_allclose(out[1]["masks"][0], first + alpha * (fresh - first), atol=1e-6)


def test_grid_map_keeps_pixel_centres():
    """Mask pixel u is crop pixel (u + 0.5) O / S - 0.5: the corners of the square coincide."""
    g = grid_map(256, 1024)
    np.testing.assert_allclose(g @ [-0.5, -0.5, 1], [-0.5, -0.5, 1])
    np.testing.assert_allclose(g @ [255.5, 255.5, 1], [1023.5, 1023.5, 1])


def test_the_comparison_benchmark_runs(capsys, shared_dir):
    """benchmarks/mask_side.py: both paths on real frames, the differences within the test's bounds."""
    import importlib.util
    import json
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "mask_side.py"
    spec = importlib.util.spec_from_file_location("bench_mask_side", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--clips", "480p", "--frames", "2", "--json"])
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["stand_in"] for r in rows] == ["edit", "invert"]
    for r in rows:
        assert r["frames"] == 2 and r["sides"] == {"448": 2}
        assert r["max_diff"] <= TOLERANCE["hull"]["max"] and r["mean_diff"] < TOLERANCE["hull"]["mean"]
