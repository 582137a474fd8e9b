"""Identity consistency of real clips (Eq. 9 on the source) and bad input handling."""
from __future__ import annotations

import av
import numpy as np
import pytest

from fsvideo.metrics.evaluate import ClipEvaluator, evaluate_clips, find_clips

SINGLE = "videos/other/pyfeat-single_face.mp4"
RAVDESS = "videos/ravdess/ravdess-actor06-compilation.mp4"
NO_FACE = "videos/other/pyfeat-no_face.mp4"


@pytest.fixture(scope="module")
def components():
    from fsvideo.faces.detect import make_detector
    from fsvideo.metrics.identity import DlibIdentity
    return make_detector("dlib"), DlibIdentity()


def _frames(path, every: int, n: int, size=(640, 360)) -> list[np.ndarray]:
    """n frames (every `every`-th) as `size` images; 4:3 letterboxed sources are cropped to 16:9 first."""
    import cv2

    from fsvideo.video import VideoReader
    out = []
    for f in VideoReader(path):
        if f.index % every == 0:
            im = f.image
            h, w = im.shape[:2]
            if w / h < size[0] / size[1] - 0.01:
                keep = round(w * size[1] / size[0])
                im = im[(h - keep) // 2:(h - keep) // 2 + keep]
            out.append(cv2.resize(im, size, interpolation=cv2.INTER_AREA))
        if len(out) == n:
            break
    return out


def _write_clip(path, frames, fps: int = 10) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for im in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(im, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_source_ic_high_for_one_person_lower_when_the_person_changes(media_dir, tmp_path, components):
    det, R = components
    # a clip whose second half is another person: pyfeat's man, then RAVDESS actor 06 (a woman)
    mixed = tmp_path / "two-people.mp4"
    _write_clip(mixed, _frames(media_dir / SINGLE, 10, 5) + _frames(media_dir / RAVDESS, 60, 5))

    ev = ClipEvaluator(det, R, every=10, max_frames=8)
    one = ev.evaluate(media_dir / SINGLE)
    two = ClipEvaluator(det, R).evaluate(mixed)
    rav = ClipEvaluator(det, R, every=60, max_frames=12).evaluate(media_dir / RAVDESS)  # spans its 8 shots
    ics = {"single": one.metrics["ic_source"], "ravdess": rav.metrics["ic_source"], "mixed": two.metrics["ic_source"]}
    print("source IC:", {k: round(v, 4) for k, v in ics.items()})
    assert one.ok and two.ok and rav.ok
    assert (one.frames_used, two.frames_used, rav.frames_used) == (8, 10, 12)
    assert one.faces_found == 8 and one.frames_sampled == 8
    assert ics["single"] > 0.95 and ics["ravdess"] > 0.95
    assert ics["mixed"] < 0.92 and ics["mixed"] < min(ics["single"], ics["ravdess"]) - 0.05
    sims = [f["sim_source"] for f in two.frames]
    assert sims[0] == pytest.approx(1.0, abs=1e-6)
    assert min(sims[1:5]) > 0.93 and max(sims[5:]) < 0.85          # the cut is where the identity drops
    # Eq. 9 from the stored per-frame similarities
    assert two.metrics["ic_source"] == pytest.approx(np.mean(sims[1:]), abs=1e-12)
    assert [f["index"] for f in one.frames] == list(range(0, 80, 10))
    assert "ssim" not in one.metrics and "ic_inversion" not in one.metrics  # source only


def test_bad_inputs_are_reported_and_the_run_goes_on(media_dir, tmp_path, components):
    det, R = components
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a video")
    clips, problems = find_clips([media_dir / SINGLE, media_dir / NO_FACE, bad, empty, tmp_path / "missing.mp4",
                                  media_dir / SINGLE])
    assert [c.name for c in clips] == ["pyfeat-single_face.mp4", "pyfeat-no_face.mp4", "broken.mp4"]  # no duplicate
    reasons = {p.clip: p.reason for p in problems}
    assert "holds no video files" in reasons["nothing-here"]
    assert "no such file or folder" in reasons["missing.mp4"]

    ev = ClipEvaluator(det, R, every=10, max_frames=4)
    res = [r for _, r in evaluate_clips(clips, ev)]
    assert [r.status for r in res] == ["ok", "skipped", "skipped"]
    assert res[0].frames_used == 4
    assert "no face found in the 4 sampled frames" in res[1].reason and "pyfeat-no_face.mp4" in res[1].reason
    assert res[1].frames_sampled == 4 and res[1].faces_found == 0
    assert "broken.mp4" in res[2].reason
    from fsvideo.metrics.summary import summarize
    s = summarize(problems + res)
    assert s["measured"] == 1 and s["clips"] == 5
    assert {x["clip"] for x in s["skipped"]} == {"nothing-here", "missing.mp4", "pyfeat-no_face.mp4", "broken.mp4"}
