"""Face detection with 68 landmarks on the real photos of ../shared/media.

Detection runs on copies shrunk to a 400 px longer side (``max_side=400``: about 40 ms per photo
instead of up to 1 s at full size); landmarks are always predicted at full size.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fsvideo.errors import InputError, WeightsError
from fsvideo.faces import DlibDetector, Face, FanDetector, make_detector
from fsvideo.faces.fan import fan_weight_paths


def _img(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def det():
    return DlibDetector(max_side=400)


@pytest.fixture
def no_fan_cache(tmp_path, monkeypatch):
    """No FAN weights anywhere: an empty torch hub dir (the weights store is empty in every test)."""
    import torch.hub
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub"


def _check_face(f: Face, shape) -> None:
    h, w = shape[:2]
    assert f.box.shape == (4,) and f.box[2] > f.box[0] and f.box[3] > f.box[1]
    assert f.landmarks.shape == (68, 2) and f.landmarks.dtype == np.float64
    assert np.isfinite(f.score)
    # Landmarks sit around the box (the jaw may leave it a little).
    bw, bh = f.box[2] - f.box[0], f.box[3] - f.box[1]
    assert np.all(f.landmarks[:, 0] > f.box[0] - 0.5 * bw) and np.all(f.landmarks[:, 0] < f.box[2] + 0.5 * bw)
    assert np.all(f.landmarks[:, 1] > f.box[1] - 0.5 * bh) and np.all(f.landmarks[:, 1] < f.box[3] + 0.5 * bh)
    # Anatomy: eyes above the mouth, the left eye (image left) left of the right one.
    assert f.landmarks[36:42, 1].mean() < f.landmarks[48:68, 1].mean()
    assert f.landmarks[36:42, 0].mean() < f.landmarks[42:48, 0].mean()


def test_every_aligned_photo_gives_one_face(media_dir, det):
    files = sorted((media_dir / "images" / "aligned").iterdir())
    assert len(files) >= 9
    for p in files:
        img = _img(p)
        faces = det.detect(img)
        assert len(faces) == 1, p.name
        _check_face(faces[0], img.shape)
        # An aligned photo's face fills its middle.
        cx, cy = faces[0].center
        assert abs(cx / img.shape[1] - 0.5) < 0.1 and abs(cy / img.shape[0] - 0.55) < 0.15, p.name


def test_two_people_gives_two_faces_largest_first(media_dir, det):
    img = _img(media_dir / "images" / "wild" / "facerec-two_people.jpg")
    faces = det.detect(img)
    assert len(faces) == 2
    for f in faces:
        _check_face(f, img.shape)
    assert faces[0].area >= faces[1].area
    # One on each side of the photo.
    assert sorted(f.center[0] < img.shape[1] / 2 for f in faces) == [False, True]


def test_no_face_image_gives_none(media_dir, det):
    assert det.detect(_img(media_dir / "images" / "wild" / "pyfeat-free-mountain-vector-01.jpg")) == []


def test_group_photo_and_batch(media_dir, det):
    img = _img(media_dir / "images" / "wild" / "pyfeat-multi_face.jpg")
    faces = det.detect(img)
    assert 4 <= len(faces) <= 5  # five people; HOG misses the strongest profile view
    two = _img(media_dir / "images" / "wild" / "dlib-2008_001009.jpg")
    batch = det.detect_batch([img, two])
    assert [len(b) for b in batch] == [len(faces), 2]
    np.testing.assert_array_equal(batch[0][0].landmarks, faces[0].landmarks)


def test_full_size_and_shrunk_detection_agree(media_dir):
    img = _img(media_dir / "images" / "wild" / "facerec-obama.jpg")
    a = DlibDetector().detect(img)[0]
    b = DlibDetector(max_side=400).detect(img)[0]
    size = np.sqrt(a.area)
    assert np.abs(a.box - b.box).max() < 0.15 * size
    assert np.abs(a.landmarks - b.landmarks).mean() < 0.05 * size


def test_bad_image_is_a_clear_error(det):
    with pytest.raises(ValueError, match="uint8"):
        det.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        det.detect(np.zeros((10, 10, 3), np.float32))


def test_auto_picks_dlib_without_fan_weights(no_fan_cache, caplog):
    assert fan_weight_paths() == (None, None)
    with caplog.at_level("INFO", logger="fsvideo.faces.registry"):
        d = make_detector("auto", max_side=320)
    assert isinstance(d, DlibDetector) and d.name == "dlib"
    assert "dlib" in caplog.text and "fan-2d" in caplog.text
    with pytest.raises(WeightsError, match="fan-2d"):
        make_detector("fan")
    with pytest.raises(InputError, match="unknown face detector"):
        make_detector("mtcnn")
    assert make_detector("dlib-cnn").name == "dlib-cnn"


@pytest.mark.slow  # one FAN-4 forward pass on the CPU: several seconds
def test_fan_backend_runs_from_cached_weights(no_fan_cache, media_dir):
    """The FAN path end to end with a randomly initialised FAN-4 in face_alignment's cache layout:
    it is found without any download, loaded strictly, and returns 68 points per face."""
    import torch
    from face_alignment.models import FAN
    torch.manual_seed(0)
    ckpt = no_fan_cache / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.save(FAN(4).state_dict(), ckpt / "2DFAN4-11f355bf06.pth.tar")
    fan, s3fd = fan_weight_paths()
    assert fan is not None and s3fd is None
    d = make_detector("auto", device="cpu", max_side=400)
    assert isinstance(d, FanDetector) and d.box_detector == "dlib"
    d.flip_input = False  # one FAN pass instead of two: this test is about plumbing, and CPU time
    img = _img(media_dir / "images" / "wild" / "facerec-obama.jpg")
    faces = d.detect(img)
    assert len(faces) == 1
    for f in faces:
        assert f.landmarks.shape == (68, 2) and np.all(np.isfinite(f.landmarks))
        # Random weights: points anywhere, but inside FAN's crop around the box.
        size = np.sqrt(f.area)
        assert np.all(np.abs(f.landmarks - f.center).max(axis=1) < 2.5 * size)
    # Wrong weights are refused with a fix.
    torch.save({"conv1.weight": torch.zeros(1)}, ckpt / "2DFAN4-11f355bf06.pth.tar")
    with pytest.raises(WeightsError, match="2D-FAN-4"):
        FanDetector("cpu")


def test_fan_heatmap_decoding_finds_the_peaks():
    """Heatmap peaks placed at known image points decode back to them (within a heatmap pixel)."""
    from fsvideo.faces.fan import _decode_heatmaps
    rng = np.random.default_rng(1)
    center, scale = np.array([320.0, 240.0]), 1.5  # 300 image px onto 64 heatmap px
    side = 200.0 * scale
    truth = center + rng.uniform(-120, 120, (68, 2))
    hm_pts = (truth - center) / side * 64 + 32  # heatmap coords, pixel centres at k + 0.5
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    d2 = (xx[None] - hm_pts[:, 0, None, None]) ** 2 + (yy[None] - hm_pts[:, 1, None, None]) ** 2
    hm = np.exp(-d2 / 2.0)
    got = _decode_heatmaps(hm.astype(np.float32), center, scale)
    assert np.abs(got - truth).max() < side / 64


def test_registry_lists_checks_and_orders_auto(no_fan_cache):
    """Names, help, availability and `auto` come from one table; a new entry joins `auto` when asked."""
    from fsvideo.faces.registry import (
        DetectorEntry,
        detector_entries,
        detector_help,
        detector_names,
        register_detector,
        unregister_detector,
    )
    assert detector_names() == ("auto", "fan", "dlib", "dlib-cnn")
    checks = {e.name: e.check() for e in detector_entries()}
    assert checks["dlib"] == (True, "ready") and checks["fan"][0] is False and "fan-2d" in checks["fan"][1]
    assert "auto: fan, else dlib" in detector_help()
    built = []
    entry = DetectorEntry("first", lambda device, max_side=None: built.append(max_side) or DlibDetector(),
                          "test", available=lambda: (True, "ready"), auto=True)
    register_detector(entry)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_detector(entry)
        assert make_detector("auto").name == "dlib"            # fan, dlib come first in the table
        assert make_detector("first", max_side=99) and built == [99]
    finally:
        unregister_detector("first")
    broken = DetectorEntry("broken", "fsvideo.faces.nowhere:Nothing", "test", available="fsvideo.faces.nowhere:ok")
    assert broken.check()[0] is False                            # a broken backend is unavailable, not a crash


def _video_frames(media_dir, clip, indices):
    from fsvideo.video import VideoReader
    want = set(indices)
    return [fr.image for fr in VideoReader(media_dir / "videos" / "other" / clip) if fr.index in want]


@pytest.mark.parametrize("clip,side", [("lt-FP006542HD02.mp4", 640), ("pyfeat-single_face.mp4", 640),
                                       ("liveportrait-d18.mp4", 400)])
def test_full_search_box_returns_the_full_searchs_boxes_unchanged(media_dir, clip, side):
    """The window grid of dlib's full search (level, corner at 8 c + 5, side 72, pyramids' offsets)
    reproduces its boxes exactly (measured on all 2598 per-frame boxes of the shared clips)."""
    det = DlibDetector(max_side=side)
    frames = _video_frames(media_dir, clip, range(0, 40, 8))
    boxes = [f.box for im in frames for f in det.detect(im)]
    assert len(boxes) >= len(frames)
    for im, b in zip(frames, boxes):
        np.testing.assert_array_equal(det.full_search_box(b, im.shape), b)
        moved = det.full_search_box(b + [7, -9, 5, -4], im.shape)     # off the grid: back on it
        np.testing.assert_array_equal(det.full_search_box(moved, im.shape), moved)


def test_region_search_boxes_are_the_full_searchs_and_its_landmarks_as_close(media_dir):
    """On the 1080p clip, the region search around the previous frame's face returns boxes of the
    full search's own grid: most equal per-frame detection's, and the landmarks fitted in them are
    closer to per-frame detection's than per-frame detection is to itself on the frame shifted by
    3, 5 px (measured on 120 frames: 1.18 px before this grid, 0.45 after, the shift 1.09)."""
    from fsvideo.faces.jitter import landmark_distance
    from fsvideo.faces.track import box_iou
    det = DlibDetector(max_side=640, region_grid=True)
    frames = _video_frames(media_dir, "lt-FP006542HD02.mp4", range(0, 48, 3))
    per_frame = [det.detect(im)[0] for im in frames]
    same, dist, noise = [], [], []
    for prev, im, want in zip(per_frame, frames[1:], per_frame[1:]):
        found = det.boxes_near(im, [prev.box])[0]
        box = max(found, key=lambda c: float(box_iou(c[0][None], prev.box[None])[0, 0]))[0]
        np.testing.assert_array_equal(det.full_search_box(box, im.shape), box)
        same.append(np.array_equal(box, want.box))
        dist.append(landmark_distance(det.landmarks_in_boxes(im, [box])[0], [want.landmarks]))
        shifted = det.detect(np.ascontiguousarray(im[5:, 3:]))[0].landmarks + [3, 5]
        noise.append(landmark_distance(shifted, [want.landmarks]))
    print(f"\nregion boxes equal to per-frame: {np.mean(same):.0%}; landmark distance {np.mean(dist):.2f} "
          f"(shifted frame {np.mean(noise):.2f}) px at 256")
    assert np.mean(same) >= 0.4
    assert np.mean(dist) < np.mean(noise)
