"""`fsvideo align` on photos, folders and real clips (no face, face then no face, two faces).

Videos are run with ``--every N`` and ``--detect-size 320`` (boxes found on a 320 px copy) so each
run takes a few seconds on a CPU; ``--size`` is small for the same reason.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fsvideo.cli import cli
from fsvideo.errors import InputError, OutputError


def _align(*args, ok: bool = True):
    res = CliRunner().invoke(cli, ["align", *map(str, args)], catch_exceptions=not ok)
    if ok:
        assert res.exit_code == 0, res.output
    return res


def _doc(out: Path) -> dict:
    return json.loads((out / "alignment.json").read_text())


def test_photo_with_two_people(media_dir, tmp_path):
    src = media_dir / "images" / "wild" / "facerec-two_people.jpg"
    out = tmp_path / "all"
    _align(src, "--out", out, "--size", "128")          # photos: every face by default
    doc = _doc(out)
    assert doc["kind"] == "image" and doc["method"] == "exact" and doc["detector"] == "dlib"
    assert doc["face"] == "all"
    assert doc["summary"]["faces_written"] == 2 and doc["summary"]["frames_without_face"] == 0
    files = sorted(p.name for p in out.glob("*.png"))
    assert files == sorted(f["file"] for f in doc["faces"]) and len(files) == 2
    for f in doc["faces"]:
        img = np.asarray(Image.open(out / f["file"]))
        assert img.shape == (128, 128, 3)
        m = np.array(f["matrix"])
        assert m.shape == (3, 3) and np.array(f["landmarks"]).shape == (68, 2)
        # The matrix takes crop landmarks back to the photo's landmarks.
        back = np.c_[np.array(f["landmarks_aligned"]), np.ones(68)] @ m.T
        np.testing.assert_allclose(back[:, :2], np.array(f["landmarks"]), atol=1e-2)
    largest = tmp_path / "largest"
    _align(src, "--out", largest, "--size", "64", "--face", "largest")
    assert _doc(largest)["summary"]["faces_written"] == 1


def test_folder_of_photos(media_dir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("aligned/ffhq-lt-00000.jpg", "aligned/celebahq-sam-1287.jpg",
                 "wild/pyfeat-free-mountain-vector-01.jpg"):
        (folder / Path(name).name).symlink_to(media_dir / "images" / name)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    _align(folder, "--out", out, "--size", "64", "--method", "fast", "--detect-size", "400")
    doc = _doc(out)
    assert doc["kind"] == "folder"
    assert doc["summary"] == {**doc["summary"], "frames": 3, "faces_written": 2, "frames_without_face": 1}
    assert sorted(f["source"] for f in doc["faces"]) == ["celebahq-sam-1287.jpg", "ffhq-lt-00000.jpg"]


def test_output_folder_rules(media_dir, tmp_path):
    src = media_dir / "images" / "wild" / "facerec-obama.jpg"
    out = tmp_path / "o"
    _align(src, "--out", out, "--size", "32", "--method", "fast")
    res = _align(src, "--out", out, "--size", "32", ok=False)
    assert isinstance(res.exception, OutputError) and "--overwrite" in str(res.exception)
    _align(src, "--out", out, "--size", "48", "--method", "fast", "--overwrite")
    assert np.asarray(Image.open(next(out.glob("*.png")))).shape == (48, 48, 3)
    (out / "mine.txt").write_text("keep me")
    res = _align(src, "--out", out, "--size", "32", "--overwrite", ok=False)
    assert isinstance(res.exception, OutputError) and (out / "mine.txt").exists()
    assert not list(tmp_path.glob(".*partial*"))


def test_bad_input_or_output_fails_before_the_detector_loads(media_dir, tmp_path, monkeypatch):
    """Not a video, an audio file, an output that exists: one error, and no detector built first (FAN
    takes seconds to load; the 'face detector: ...' line came before the error)."""
    import fsvideo.faces

    def no_detector(*a, **k):
        raise AssertionError("the detector was built for a run that cannot start")

    monkeypatch.setattr(fsvideo.faces, "make_detector", no_detector)
    (tmp_path / "notes.mp4").write_text("not a video")
    (tmp_path / "taken").write_text("a file")
    photo = media_dir / "images" / "wild" / "facerec-obama.jpg"
    for src, out, error, match in ((tmp_path / "notes.mp4", tmp_path / "o", InputError, "not a video"),
                                   (photo, tmp_path / "taken", OutputError, "not a folder")):
        res = _align(src, "--out", out, ok=False)
        assert isinstance(res.exception, error) and match in str(res.exception), res.exception
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.mp4", "taken"]


def test_video_without_faces(media_dir, tmp_path):
    out = tmp_path / "none"
    _align(media_dir / "videos" / "other" / "pyfeat-no_face.mp4", "--out", out, "--every", "4",
           "--detect-size", "320", "--size", "64")
    doc = _doc(out)
    assert doc["kind"] == "video" and doc["method"] == "fast"
    s = doc["summary"]
    assert s["frames"] == 24  # 95 frames, every 4th
    assert s["frames_without_face"] == 24 and s["faces_written"] == 0
    assert doc["frames_without_face"] == [[0, 92]] and not list(out.glob("*.png"))
    # With --on-missing-face error the run stops with a clear error and writes nothing.
    err = tmp_path / "err"
    res = _align(media_dir / "videos" / "other" / "pyfeat-no_face.mp4", "--out", err, "--every", "8",
                 "--detect-size", "320", "--on-missing-face", "error", ok=False)
    assert isinstance(res.exception, InputError) and "no face found in frame 0" in str(res.exception)
    assert not err.exists() and not list(tmp_path.glob(".*partial*"))


def test_video_face_then_no_face(media_dir, tmp_path):
    out = tmp_path / "fnf"
    _align(media_dir / "videos" / "other" / "pyfeat-face_noface.mov", "--out", out, "--every", "3",
           "--detect-size", "320", "--size", "64")
    doc = _doc(out)
    s = doc["summary"]
    assert s["frames"] == 57  # 169 frames, every 3rd
    assert s["frames_with_face"] + s["frames_without_face"] == 57
    frames_with = sorted({f["frame"] for f in doc["faces"]})
    assert s["frames_with_face"] == len(frames_with) >= 20
    # The man talks for about the first 2.7 s (frames 0-71), then the animation has no face.
    assert frames_with[0] == 0 and max(frames_with) < 80
    assert doc["frames_without_face"][-1][1] == 168 and s["tracks"] == [0]
    assert len(list(out.glob("*.png"))) == s["faces_written"] == len(frames_with)


@pytest.fixture(scope="module")
def two_person_clip(media_dir, tmp_path_factory) -> Path:
    """A 16-frame H.264 clip panning over the two-people photo (both faces in every frame)."""
    import av
    img = np.asarray(Image.open(media_dir / "images" / "wild" / "facerec-two_people.jpg").convert("RGB"))
    img = np.asarray(Image.fromarray(img).resize((563, 330), Image.LANCZOS))
    path = tmp_path_factory.mktemp("clips") / "two.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 480, 320, "yuv420p"
        for t in range(16):
            x = 3 * t
            fr = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[5:325, x:x + 480]), format="rgb24")
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_video_with_two_faces(two_person_clip, tmp_path):
    out = tmp_path / "two"
    _align(two_person_clip, "--out", out, "--face", "all", "--size", "64", "--detect-size", "0")
    doc = _doc(out)
    s = doc["summary"]
    assert s["frames"] == 16 and s["frames_without_face"] == 0
    assert s["tracks"] == [0, 1] and s["faces_written"] == 32
    per_track: dict[int, list[float]] = {}
    for f in doc["faces"]:
        per_track.setdefault(f["track_id"], []).append(np.array(f["landmarks"])[30, 0])
    # Each id stays on one person: its nose moves 3 px left per frame, never jumps to the other face.
    for xs in per_track.values():
        assert len(xs) == 16 and np.abs(np.diff(xs) + 3).max() < 3
    default = tmp_path / "default"                     # videos: the largest face by default
    _align(two_person_clip, "--out", default, "--size", "32", "--detect-size", "0", "--max-frames", "4")
    dd = _doc(default)
    assert dd["face"] == "largest" and len(dd["summary"]["tracks"]) == 1 and dd["summary"]["faces_written"] == 4
    one = tmp_path / "one"
    _align(two_person_clip, "--out", one, "--face", "1", "--size", "64", "--detect-size", "0", "--no-stabilize")
    d1 = _doc(one)
    assert d1["stabilize"] is None and {f["track_id"] for f in d1["faces"]} == {1}
    assert d1["summary"]["faces_written"] == 16


def test_hold_keeps_the_last_face_to_the_end(media_dir, tmp_path):
    """--on-missing-face hold: a face that leaves at about 2.7 s is held until the clip ends
    (before the fix, the multi-face stabiliser retired it after 1 s and the rest passed through)."""
    out = tmp_path / "hold"
    _align(media_dir / "videos" / "other" / "pyfeat-face_noface.mov", "--out", out, "--every", "3",
           "--detect-size", "320", "--size", "32", "--face", "all", "--on-missing-face", "hold")
    doc = _doc(out)
    s = doc["summary"]
    assert s["frames"] == 57 and s["frames_without_face"] == 0 and s["faces_written"] == 57
    by_frame = {f["frame"]: f for f in doc["faces"]}
    assert by_frame[168]["status"] == "held" and s["held"] > 25
    # The held crop is the last stabilised one: one quad repeated to the end.
    held = [f for f in doc["faces"] if f["status"] == "held"]
    assert all(f["quad"] == held[0]["quad"] for f in held)


class _CornerDetector:
    """A dummy detector for the registry test: one face with fixed landmarks in every image."""

    name = "dummy-corner"

    def __init__(self, device=None, *, max_side=None):
        self.max_side = max_side

    def detect(self, image):
        from fsvideo.doctor import synthetic_face_landmarks
        from fsvideo.faces import Face
        h, w = image.shape[:2]
        lm = synthetic_face_landmarks(0, w, h)
        return [Face(box=np.array([*lm.min(0), *lm.max(0)]), score=1.0, landmarks=lm)]

    def detect_batch(self, images):
        return [self.detect(im) for im in images]


def test_a_registered_detector_is_usable_from_the_cli(media_dir, tmp_path):
    """Adding a detector is one registry entry: `fsvideo align --detector NAME` then accepts it."""
    from fsvideo.faces.registry import DetectorEntry, detector_names, register_detector, unregister_detector
    src = media_dir / "images" / "wild" / "facerec-obama.jpg"
    res = _align(src, "--out", tmp_path / "x", "--detector", "dummy-corner", ok=False)
    assert res.exit_code == 2 and "dummy-corner" in res.output and "dlib-cnn" in res.output
    register_detector(DetectorEntry("dummy-corner", _CornerDetector, "test detector"))
    try:
        assert "dummy-corner" in detector_names()
        out = tmp_path / "dummy"
        _align(src, "--out", out, "--detector", "dummy-corner", "--size", "32", "--method", "fast")
        doc = _doc(out)
        assert doc["detector"] == "dummy-corner" and doc["summary"]["faces_written"] == 1
        from fsvideo.doctor import synthetic_face_landmarks
        h, w = np.asarray(Image.open(src)).shape[:2]
        np.testing.assert_allclose(doc["faces"][0]["landmarks"], synthetic_face_landmarks(0, w, h), atol=1e-3)
        assert "dummy-corner" in CliRunner().invoke(cli, ["align", "--help"]).output
    finally:
        unregister_detector("dummy-corner")
    assert "dummy-corner" not in detector_names()


def test_stabilize_official_and_bad_values(two_person_clip, tmp_path):
    out = tmp_path / "off"
    _align(two_person_clip, "--out", out, "--size", "32", "--detect-size", "0", "--max-frames", "6",
           "--stabilize", "official")
    st = _doc(out)["stabilize"]
    assert st["stabilizer"] == "official" and st["sigma_s"] == pytest.approx(3 / 25, abs=1e-6)
    assert st["delay_frames"] == 12 + 24 + 5
    old = tmp_path / "old"                                          # --sigma stays an alias
    _align(two_person_clip, "--out", old, "--size", "32", "--detect-size", "0", "--max-frames", "6",
           "--sigma", "0.05")
    assert _doc(old)["stabilize"]["sigma_s"] == 0.05 and _doc(old)["stabilize"]["stabilizer"] == "fsvideo"
    res = _align(two_person_clip, "--out", tmp_path / "bad", "--stabilize", "strong", ok=False)
    assert res.exit_code == 2 and "official" in res.output
