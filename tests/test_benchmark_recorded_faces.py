"""benchmarks/recorded_faces.py: faces recorded here replay on the GPU machine, through the detector registry."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from fsvideo.faces.detect import Face, FaceDetector
from fsvideo.faces.registry import _BUILTIN, detector_names, make_detector, register_detector


def _load():
    """benchmarks/recorded_faces.py, imported as the benchmark scripts import it (benchmarks/ on the path)."""
    bench = str(Path(__file__).resolve().parents[1] / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    return importlib.import_module("recorded_faces")


class _Counting(FaceDetector):
    """One face per image whose box depends on the image's mean (so frames get different answers)."""

    name = "counting"

    def __init__(self):
        self.calls = 0

    def detect(self, image):
        self.calls += 1
        m = float(image.mean())
        lm = np.stack([np.arange(68.0), np.full(68, m)], axis=1)
        return [Face(np.array([m, 1.0, m + 10, 11.0]), score=m / 255, landmarks=lm)]


def _frames():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (36, 64, 3), dtype=np.uint8) for _ in range(3)] + [np.zeros((36, 64, 3), np.uint8)]


@pytest.fixture
def registry_restored():
    from fsvideo.faces import registry
    before = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


def test_saved_faces_replay_exactly_and_near_frames_match(tmp_path):
    R = _load()
    frames = _frames()
    det = _Counting()
    path = R.save(R.record(det, frames), tmp_path / "faces.npz")
    rec = R.load(path)
    for im in frames:
        (want,), (got,) = det.detect(im), rec.detect(im)
        np.testing.assert_array_equal(got.box, want.box)
        np.testing.assert_array_equal(got.landmarks, want.landmarks)
        assert got.score == pytest.approx(want.score) and got.track_id is None
    rec.detect(frames[0])[0].landmarks[:] = -1                   # callers may write into what they get
    assert rec.detect(frames[0])[0].landmarks[0, 0] == 0
    assert rec.near == 0
    # one grey level off in a few pixels (a decoder rounding differently): the nearest frame answers
    off = frames[1].copy()
    off[::5, ::5] ^= 1
    np.testing.assert_array_equal(rec.detect(off)[0].box, det.detect(frames[1])[0].box)
    assert rec.near == 1
    with pytest.raises(KeyError, match="no recorded detections"):
        rec.detect(np.full((36, 64, 3), 128, np.uint8))        # a frame never recorded


def test_register_adds_recorded_and_stands_in_for_a_missing_dlib(tmp_path, monkeypatch, registry_restored):
    R = _load()
    frames = _frames()
    path = R.save(R.record(_Counting(), frames), tmp_path / "faces.npz")
    monkeypatch.setattr(R, "_importable", lambda name: False)   # as on the GPU machine
    R.register(path, as_dlib=True)
    assert "recorded" in detector_names()
    for name in ("recorded", "dlib"):
        assert make_detector(name, max_side=640).detect(frames[2])[0].box[0] == pytest.approx(frames[2].mean())
    monkeypatch.setattr(R, "_importable", lambda name: True)    # dlib installed: it stays dlib
    register_detector(next(e for e in _BUILTIN if e.name == "dlib"), replace=True)
    R.register(path, as_dlib=True)
    assert type(make_detector("recorded")).__name__ == "RecordedDetector"
    from fsvideo.faces import registry
    assert registry._REGISTRY["dlib"] is next(e for e in _BUILTIN if e.name == "dlib")


def test_benchmark_child_processes_replay_the_recorded_faces(tmp_path, media_dir, monkeypatch, registry_restored):
    """`benchmarks/pipeline.py --detector recorded --bound` and its memory runs: the fresh processes
    register the parent's recorded faces too (they failed with an unknown detector before)."""
    from tiny_weights import make_tiny

    from fsvideo.video import VideoReader
    R = _load()
    P = importlib.import_module("pipeline")
    clip = media_dir / "videos/other/pyfeat-single_face.mp4"
    frames = [f.image for f in VideoReader(clip, None, 0.2)]
    path = R.save(R.record(make_detector("dlib", max_side=640), frames), tmp_path / "faces.npz")
    monkeypatch.setenv(R.ENV, "")                  # restored after the test (register sets it)
    R.register(path)
    tiny = make_tiny(tmp_path)
    args = dict(clip=str(clip), seconds=0.2, enc=tiny["enc"], gen=tiny["gen"], direction=tiny["dir"], threads=False,
                batch=1, out_dir=str(tmp_path), detector="recorded")
    for one_core in (False, True):                 # the memory runs, and the one-core run of --bound
        r = P.child_run(dict(args, one_core=one_core))
        assert r["frames"] == len(frames) and r["stages"]["detect"]["packets"] == len(frames)
