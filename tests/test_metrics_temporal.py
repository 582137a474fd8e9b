"""Temporal metrics of edited videos: STIT TL-ID/TG-ID, flicker, background, jitter, pairing, CLI, torchrun.

Synthetic clips are written losslessly (FFV1) from one real frame, so their answers are known:
a static clip sits at the flicker floor; sub-pixel shifts raise flicker by the frame difference
(first order: |grad I . delta|) and jitter by the shift in crop pixels; a touched background
lowers the background PSNR to the figure its squared error gives.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from fsvideo.cli import main
from fsvideo.errors import InputError
from fsvideo.metrics.flicker import WarpErrorMeter, consistent_flow_mask, face_region, psnr_of
from fsvideo.metrics.temporal import PairResult, TemporalEvaluator, tg_id, tl_id

CLIP = "videos/other/pyfeat-single_face.mp4"
N = 8


class PixelIdentity:
    """A cheap stand-in identity network (normalised 16x16 grey crop) for tests about flicker and background."""

    name = "test-pixels"
    dim = 256

    def embed(self, crops, landmarks=None):
        import cv2
        e = np.stack([cv2.resize(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY), (16, 16), interpolation=cv2.INTER_AREA)
                      .ravel().astype(np.float32) for c in crops])
        return e / np.linalg.norm(e, axis=1, keepdims=True)


def write_clip(path, frames, fps=25):
    """Lossless clip (FFV1, RGB): decoding gives the frames back bit for bit."""
    c = av.open(str(path), "w")
    s = c.add_stream("ffv1", rate=fps)
    s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "bgr0"
    for f in frames:
        c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="bgr0")))
    c.mux(s.encode(None))
    c.close()
    return path


def shifted(image, dx, dy):
    import cv2
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, m, (image.shape[1], image.shape[0]), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT)


@pytest.fixture(scope="module")
def frame(media_dir):
    import cv2

    from fsvideo.video import VideoReader
    img = next(iter(VideoReader(media_dir / CLIP))).image
    return cv2.resize(img, (320, 180), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def geometry(frame):
    """The face region the evaluator uses on the static frame, and the face's quad side."""
    from fsvideo.faces.align import ffhq_quad, quad_size
    from fsvideo.faces.detect import DlibDetector
    lm = DlibDetector().detect(frame)[0].landmarks
    q = quad_size(ffhq_quad(lm)[0])
    return face_region(lm, frame.shape, dilate_px=0.1 * q), q


@pytest.fixture(scope="module")
def static(frame, tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clips") / "static.mkv", [frame] * N)


@pytest.fixture(scope="module")
def fast_eval():
    from fsvideo.faces.detect import DlibDetector
    return TemporalEvaluator(DlibDetector(), PixelIdentity())


# ------------------------------------------------------------------------------------------ the math

def test_stit_tl_tg_id_known_answers():
    rng = np.random.default_rng(0)
    src = rng.standard_normal((5, 8))
    out = src + 0.3 * rng.standard_normal((5, 8))

    def n(x):
        return x / np.linalg.norm(x)

    ratio = [[float(n(out[i]) @ n(out[j])) / float(n(src[i]) @ n(src[j])) for j in range(5)] for i in range(5)]
    assert tl_id(src, out) == pytest.approx(np.mean([ratio[i][i + 1] for i in range(4)]))
    assert tg_id(src, out) == pytest.approx(np.mean([ratio[i][j] for i in range(5) for j in range(5) if i != j]))
    assert tl_id(src, out, adjacent=[True, False, False, True]) == pytest.approx((ratio[0][1] + ratio[3][4]) / 2)
    assert tl_id(src, src) == pytest.approx(1.0) and tg_id(src, 3 * src) == pytest.approx(1.0)
    assert math.isnan(tg_id(src[:1], out[:1])) and math.isnan(tl_id(src, out, adjacent=[False] * 4))


def test_forward_backward_check_flags_inconsistent_flow():
    h, w = 40, 60
    back = np.zeros((h, w, 2), np.float32)
    back[..., 0] = -3.0                                  # frame t came from 3 px to the left
    fwd = np.zeros((h, w, 2), np.float32)
    fwd[..., 0] = 3.0
    ok = consistent_flow_mask(back, fwd)
    assert not ok[:, :3].any() and ok[:, 3:].all()       # sources left of the frame are invalid
    fwd[10:20, 20:30] = [0.0, 8.0]                       # an occluded patch: forward disagrees
    ok = consistent_flow_mask(back, fwd)
    assert not ok[10:20, 23:33].any() and ok[25:, 3:].all()


def test_warp_error_follows_motion(frame):
    meter = WarpErrorMeter("dis", max_side=None)
    nxt = shifted(frame, 2.0, 1.0)                       # the camera moved: the flow explains it
    e = meter.pair(frame, nxt, frame, nxt, None)
    assert e["face"] is None and e["background"] == pytest.approx(e["background_source"])
    assert e["background_source"] < 2.0 and e["valid"] > 0.9
    still = np.abs(nxt.astype(float) - frame.astype(float)).mean()
    assert still > 2 * e["background_source"]            # warping removes most of the raw difference
    e2 = meter.pair(frame, nxt, frame, shifted(nxt, 0.7, 0.0), None)   # the edit adds its own motion
    assert e2["background"] > e["background_source"] + 1.0


# ------------------------------------------------------------------------------- synthetic clips

def test_static_clip_sits_at_the_floor(static, fast_eval):
    r = fast_eval.evaluate(static, static)
    assert r.ok and r.frames_used == N and r.frames_sampled == N
    m = r.metrics
    assert m["warp_face"] == m["warp_face_source"] == pytest.approx(0.0, abs=1e-6)
    assert m["warp_bg"] == m["warp_bg_source"] == pytest.approx(0.0, abs=1e-6)
    assert m["jitter"] == m["jitter_source"] == pytest.approx(0.0, abs=1e-3)
    assert m["bg_psnr"] == math.inf and m["bg_max_abs"] == 0
    assert m["tl_id"] == pytest.approx(1.0) and m["tg_id"] == pytest.approx(1.0)


def test_flicker_and_jitter_do_not_pair_frames_across_a_shot_cut(frame, media_dir, fast_eval, tmp_path):
    """Two still shots of two faces: nothing moves within a shot, so flicker and jitter are 0 unless
    a pair straddles the cut (before: the cut pair made both non-zero)."""
    import cv2

    from fsvideo.video import VideoReader
    other = next(iter(VideoReader(media_dir / "videos" / "other" / "cremad-1001_DFA_ANG_XX.flv"))).image
    other = cv2.resize(other, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_AREA)
    clip = write_clip(tmp_path / "two_shots.mkv", [frame] * 4 + [other] * 4)
    r = fast_eval.evaluate(clip, clip)
    assert r.ok and r.frames_used == 8
    assert [f.get("cut", False) for f in r.frames] == [False] * 4 + [True] + [False] * 3
    assert "jitter" not in r.frames[4] and "warp_face" not in r.frames[4]
    m = r.metrics
    assert m["warp_face_source"] == pytest.approx(0.0, abs=1e-6) and m["jitter"] == pytest.approx(0.0, abs=1e-3)


def test_subpixel_shifts_raise_flicker_and_jitter_by_the_expected_amount(frame, static, geometry, fast_eval,
                                                                       tmp_path):
    mask, quad = geometry
    s = np.random.default_rng(0).uniform(-0.6, 0.6, (N, 2))
    frames = [shifted(frame, *d) for d in s]
    r = fast_eval.evaluate(write_clip(tmp_path / "static.shake.mkv", frames), static)
    m = r.metrics
    # The source is static: zero flow, every pixel valid, so the figure is the plain frame difference...
    diff = [np.abs(b.astype(float) - a.astype(float)).mean(-1) for a, b in itertools.pairwise(frames)]
    assert m["warp_face"] == pytest.approx(np.mean([d[mask].mean() for d in diff]), rel=1e-3)
    assert m["warp_bg"] == pytest.approx(np.mean([d[~mask].mean() for d in diff]), rel=1e-3)
    # ...which the first-order prediction |grad I . delta| gives within the second-order terms.
    gy, gx = np.gradient(frame.astype(float), axis=(0, 1))
    pred = [np.abs(gx * dx + gy * dy).mean(-1) for dx, dy in np.diff(s, axis=0)]
    assert m["warp_face"] == pytest.approx(np.mean([p[mask].mean() for p in pred]), rel=0.3)
    assert m["warp_bg"] == pytest.approx(np.mean([p[~mask].mean() for p in pred]), rel=0.3)
    assert m["warp_face_source"] == pytest.approx(0.0, abs=1e-6)
    # Jitter: the face moves by |delta| frame pixels = |delta| * 256 / quad crop pixels.
    assert r.frames[1]["face_size"] == pytest.approx(quad, rel=1e-6)
    expected = np.linalg.norm(np.diff(s, axis=0), axis=1).mean() * 256 / quad
    assert m["jitter"] == pytest.approx(expected, rel=0.15) and m["jitter_source"] < 0.01
    assert m["tl_id"] < 1.0


def test_touched_background_lowers_psnr(frame, static, geometry, fast_eval, tmp_path):
    mask, _ = geometry
    out = frame.copy()
    out[:40, :40] = np.clip(out[:40, :40].astype(int) + 30, 0, 255).astype(np.uint8)
    assert not mask[:40, :40].any()
    changed = (out != frame).any(-1)
    sq = ((out.astype(float) - frame.astype(float)) ** 2).sum()
    r = fast_eval.evaluate(write_clip(tmp_path / "static.bg.mkv", [out] * N), static)
    m = r.metrics
    assert m["bg_max_abs"] == 30 and changed.sum() > 1000
    assert m["bg_psnr"] == pytest.approx(psnr_of(sq / (3 * (~mask).sum())), abs=1e-6)
    assert m["warp_face"] == pytest.approx(0.0, abs=1e-6)   # the same every frame: no flicker


# ----------------------------------------------------------------------------------- real clips

def test_source_against_itself_is_perfect(media_dir):
    from fsvideo.faces.detect import DlibDetector
    from fsvideo.metrics.identity import DlibIdentity
    src = media_dir / CLIP
    r = TemporalEvaluator(DlibDetector(), DlibIdentity(), max_frames=6).evaluate(src, src)
    assert r.ok and r.identity_network == "dlib-resnet-v1" and r.frames_used == 6
    m = r.metrics
    assert m["tl_id"] == 1.0 and m["tg_id"] == 1.0
    assert m["bg_psnr"] == math.inf and m["bg_max_abs"] == 0
    assert m["warp_face"] == m["warp_face_source"] > 0 and m["jitter"] == m["jitter_source"]
    assert m["ic_source"] == m["ic_edited"] > 0.95
    back = PairResult.from_dict(json.loads(json.dumps(r.to_dict())))   # JSON has no inf: restored
    assert back.metrics["bg_psnr"] == math.inf and back.frames[0]["bg_psnr"] == math.inf


def test_mismatched_sizes_are_skipped_with_a_reason(media_dir, static, fast_eval):
    r = fast_eval.evaluate(static, media_dir / CLIP)
    assert not r.ok and "320x180" in r.reason and "640x360" in r.reason


# -------------------------------------------------------------------------------------- pairing

def test_pairing_rules(tmp_path):
    from fsvideo.metrics.pairs import find_pairs
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    for n in ("talk.mp4", "my.clip.mp4", "other.mp4"):
        (src / n).write_bytes(b"x")
    for n in ("talk.smile+2.mp4", "talk.smile+2.makeup-1.mp4", "my.clip.inversion.mp4", "stray.mp4"):
        (out / n).write_bytes(b"x")
    pairs, problems = find_pairs(edited_dir=out, source_dir=src)
    got = {e.name: s.name for e, s in pairs}
    assert got == {"talk.smile+2.mp4": "talk.mp4", "talk.smile+2.makeup-1.mp4": "talk.mp4",
                   "my.clip.inversion.mp4": "my.clip.mp4"}
    assert [p.clip for p in problems] == ["stray.mp4"] and "--source" in problems[0].reason
    # fsvideo edit's default: outputs beside the source; the shortest prefix wins.
    for n in ("talk.smile+2.mp4", "talk.smile+2.makeup-1.mp4"):
        (src / n).write_bytes(b"x")
    pairs, problems = find_pairs(edited_dir=src)
    assert {e.name: s.name for e, s in pairs} == {"talk.smile+2.mp4": "talk.mp4",
                                                   "talk.smile+2.makeup-1.mp4": "talk.mp4"}
    assert not problems                                  # talk.mp4, other.mp4, my.clip.mp4 are sources
    (src / "talk.mov").write_bytes(b"x")
    with pytest.raises(InputError, match="same name"):
        find_pairs(edited_dir=out, source_dir=src)
    pairs, _ = find_pairs([out / "stray.mp4", out / "talk.smile+2.mp4"], [src / "other.mp4"])
    assert [s.name for _, s in pairs] == ["other.mp4", "other.mp4"]
    with pytest.raises(InputError, match="3 edited videos but 2 --source files"):
        find_pairs([out / "stray.mp4", out / "talk.smile+2.mp4", out / "my.clip.inversion.mp4"],
                   [src / "other.mp4", src / "talk.mp4"])
    (tmp_path / "empty").mkdir()       # said "no edited video given; pass ... --edited-dir FOLDER" for the folder given
    with pytest.raises(InputError, match=f"--edited-dir {tmp_path / 'empty'} holds no video files"):
        find_pairs(edited_dir=tmp_path / "empty")


# ------------------------------------------------------------------------------------ CLI, torchrun

def test_cli_outputs_resume_and_skips(media_dir, tmp_path, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    src = clips / "talk.mp4"
    src.write_bytes((media_dir / CLIP).read_bytes())
    (clips / "talk.copy.mp4").write_bytes(src.read_bytes())      # an "edit" that changed nothing
    (clips / "lost.smile+1.mp4").write_bytes(src.read_bytes())   # no source: reported, skipped
    out = tmp_path / "eval"
    argv = ["metrics", "--edited", str(clips / "talk.copy.mp4"), "--edited", str(clips / "lost.smile+1.mp4"),
            "--max-frames", "4", "--detector", "dlib", "--identity", "dlib", "--out", str(out)]
    main(argv)
    text = capsys.readouterr().out
    assert "TL-ID ↑ (STIT)" in text and "identity network dlib-resnet-v1" in text and "Skipped (1)" in text
    for name in ("temporal.csv", "temporal_frames.csv", "temporal.json", "temporal_curves/talk.copy.png"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "temporal.json").read_text())
    ok = [c for c in doc["clips"] if c["status"] == "ok"]
    assert len(ok) == 1 and ok[0]["metrics"]["tl_id"] == 1.0 and ok[0]["source"] == str(src)
    assert doc["summary"]["metrics"]["tg_id"]["mean"] == 1.0 and doc["identity_network"] == "dlib-resnet-v1"
    rows = (out / "temporal_frames.csv").read_text().splitlines()
    assert rows[0].startswith("clip,index,face,sim_source,sim_edited,warp_face") and len(rows) == 5
    main(argv)                                                       # resume: nothing measured again
    assert "(cached)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["metrics", str(src), "--edited", str(clips / "talk.copy.mp4")])
    assert e.value.code == 2 and "do not go with" in capsys.readouterr().err


def test_torchrun_two_processes_match_one(frame, tmp_path):
    pytest.importorskip("torch.distributed")
    from fsvideo.faces.detect import DlibDetector
    from fsvideo.metrics.identity import DlibIdentity
    from fsvideo.metrics.pairs import evaluate_pairs, find_pairs
    d = tmp_path / "edits"
    d.mkdir()
    write_clip(d / "static.mkv", [frame] * 3)
    for k in range(3):
        s = np.random.default_rng(k).uniform(-0.6, 0.6, (3, 2))
        write_clip(d / f"static.shake{k}.mkv", [shifted(frame, *x) for x in s])
    pairs, _ = find_pairs(edited_dir=d)
    ev = TemporalEvaluator(DlibDetector(), DlibIdentity())
    shards = [evaluate_pairs(pairs, ev, rank=r, world=2) for r in (0, 1)]
    assert [i for i, _ in shards[0]] == [0, 2] and [i for i, _ in shards[1]] == [1]
    one = [json.loads(json.dumps(r.to_dict())) for _, r in sorted(shards[0] + shards[1], key=lambda t: t[0])]

    repo = str(Path(__file__).resolve().parents[1])              # this checkout's fsvideo, not an installed one
    env = dict(os.environ, OMP_NUM_THREADS="1", FSVIDEO_HOME=str(tmp_path / "home"),
               PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "fsvideo", "metrics", "--edited-dir", str(d), "--detector", "dlib", "--identity", "dlib",
                        "--out", str(tmp_path / "two")], check=False, env=env, cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "on 2 processes" in p.stdout
    two = json.loads((tmp_path / "two" / "temporal.json").read_text())["clips"]
    assert [c["clip"] for c in one] == [c["clip"] for c in two] == [f"static.shake{k}.mkv" for k in range(3)]
    for a, b in zip(one, two):
        assert a["metrics"] == b["metrics"] and a["frames"] == b["frames"]
