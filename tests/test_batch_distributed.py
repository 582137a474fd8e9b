"""`torchrun --nproc-per-node 2 -m fsvideo edit ...` (gloo, CPU, tiny random weights): sharded inputs and a split video."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from tiny_weights import make_tiny

from fsvideo.pipeline.manifest import STATE_DIR, TABLE_NAME
from fsvideo.video import VideoReader

pytest.importorskip("torch.distributed")

CLIPS = ["videos/other/pyfeat-single_face.mp4", "videos/other/cremad-1001_DFA_ANG_XX.flv",
         "videos/other/pyfeat-no_face.mp4"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("tiny"))


REPO = Path(__file__).resolve().parents[1]


def _env(home):
    # the fsvideo of this checkout, whatever the venv has installed
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", FSVIDEO_HOME=str(home), PYTHONPATH=path)
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(k, None)
    return env


def _run(args, env, cwd, nproc=None, ok=(0,)):
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
              "-m", "fsvideo"] if nproc else [sys.executable, "-m", "fsvideo"]
    p = subprocess.run(launch + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert p.returncode in ok, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def _model_args(tiny):
    return ["--direction", tiny["dir"], "--strength", "2", "--generator", tiny["gen"], "--encoder", tiny["enc"],
            "--detector", "dlib", "--device", "cpu"]


def test_two_processes_share_the_inputs(tiny, media_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for c in CLIPS:
        shutil.copy(media_dir / c, src)
    (src / "broken.mp4").write_bytes(b"\x00" * 4000)
    args = ["edit", str(src), *_model_args(tiny), "--end", "0.3", "--json"]
    env = _env(tmp_path / "home")
    _run([*args, "--out-dir", str(tmp_path / "one")], env, tmp_path, ok=(1,))
    p = _run([*args, "--out-dir", str(tmp_path / "two")], env, tmp_path, nproc=2, ok=(1,))
    printed = json.loads(p.stdout[p.stdout.index("{"):])             # rank 0 prints the merged table
    one = json.loads((tmp_path / "one" / TABLE_NAME).read_text())
    two = json.loads((tmp_path / "two" / TABLE_NAME).read_text())
    assert printed["inputs"] == two["inputs"] and two["processes"] == 2
    key = [(r["input"], r["status"], r["frames"], r["faces_edited"]) for r in one["inputs"]]
    assert [(r["input"], r["status"], r["frames"], r["faces_edited"]) for r in two["inputs"]] == key
    assert [k[1] for k in key] == ["failed", "done", "done", "done"]
    assert {r["rank"] for r in two["inputs"]} == {0, 1}                # both ranks worked
    for r in one["inputs"][1:]:                                         # the same pixels as one process
        name = r["output"].split("/")[-1]
        a = [f.image for f in VideoReader(tmp_path / "one" / name)]
        b = [f.image for f in VideoReader(tmp_path / "two" / name)]
        assert len(a) == len(b) == r["frames"] and all(np.array_equal(x, y) for x, y in zip(a, b))
    # started again with 2 processes: everything finished is skipped
    p = _run([*args, "--out-dir", str(tmp_path / "two")], env, tmp_path, nproc=2, ok=(1,))
    again = json.loads((tmp_path / "two" / TABLE_NAME).read_text())
    assert [r["status"] for r in again["inputs"]] == ["failed", "skipped", "skipped", "skipped"]


def _packets(path, kind):
    with av.open(str(path)) as c:
        s = c.streams.video[0] if kind == "video" else c.streams.audio[0]
        return [(p.pts, bytes(p) if kind == "audio" else None) for p in c.demux(s) if p.size]


def test_a_video_split_in_time_joins_into_the_single_run(tiny, media_dir, tmp_path):
    src = media_dir / CLIPS[0]
    single = tmp_path / "single.mp4"
    env = _env(tmp_path / "home")                # one torch thread in both runs: the same float sums
    common = [*_model_args(tiny), "--end", "2.0", "--crf", "0"]
    s = _run(["edit", str(src), "-o", str(single), *common, "--json"], env, tmp_path)
    single_faces = json.loads(s.stdout[s.stdout.index("{"):])["faces_edited"]
    out = tmp_path / "split"
    args = ["edit", str(src), "--out-dir", str(out), "--split-time", "--split-context", "0.5", *common, "--json"]
    p = _run(args, env, tmp_path, nproc=2)
    row = json.loads(p.stdout[p.stdout.index("{"):])["inputs"][0]
    joined = out / "pyfeat-single_face.dir+2.mp4"
    # faces are counted in the spans' frames only, not in the context decoded around them
    assert row["status"] == "done" and row["frames"] == 60 and row["faces_edited"] == single_faces == 60
    assert not list((out / STATE_DIR / "parts").iterdir())                  # span files removed after the join
    # timing and audio: identical packets (no re-encode); each span began with a key frame
    assert _packets(joined, "video") == _packets(single, "video")
    assert _packets(joined, "audio") == _packets(single, "audio")
    with av.open(str(joined)) as c, av.open(str(single)) as d:
        keys = [i for i, pk in enumerate(x for x in c.demux(c.streams.video[0]) if x.size) if pk.is_keyframe]
        assert c.metadata["comment"] == d.metadata["comment"]          # "faces edited: dir.npy+2; ..."
    assert 30 in keys
    a = [f.image.astype(np.int16) for f in VideoReader(single)]
    b = [f.image.astype(np.int16) for f in VideoReader(joined)]
    assert len(a) == len(b) == 60
    # frames of the first span are the single run's exactly (lossless encoding, same context);
    # after the seam the stabiliser started 0.5 s earlier than in the single run: its optical-flow
    # memory moves the crops by a fraction of a pixel (benchmarks/split_seams.py), which the tiny
    # random generator (a noise-like face) turns into small changes inside the face only
    assert all(np.array_equal(x, y) for x, y in zip(a[:30], b[:30]))
    diff = [np.abs(x - y) for x, y in zip(a[30:], b[30:])]
    assert max(float(d.mean()) for d in diff) < 0.5                         # measured 0.33 at worst
    assert max(float((d.max(axis=2) > 0).mean()) for d in diff) < 0.25      # the face's share of the frame
    # started again: nothing to do
    p = _run(args, env, tmp_path, nproc=2)
    assert json.loads(p.stdout[p.stdout.index("{"):])["inputs"][0]["status"] == "skipped"


def test_an_inversion_split_in_time_joins_into_the_single_run(tiny, media_dir, tmp_path):
    """`fsvideo invert --split-time`: the joined reconstruction and latents are the single run's."""
    from fsvideo.latents import LatentsReader
    src = media_dir / CLIPS[0]
    env = _env(tmp_path / "home")
    common = [*_model_args(tiny)[4:], "--end", "2.0", "--crf", "0"]                # no --direction
    single, single_lat = tmp_path / "single.mp4", tmp_path / "single.latents"
    s = _run(["invert", str(src), "-o", str(single), "--latents-out", str(single_lat), *common, "--json"], env,
             tmp_path)
    single_faces = json.loads(s.stdout[s.stdout.index("{"):])["faces_edited"]
    out = tmp_path / "split"
    args = ["invert", str(src), "--out-dir", str(out), "--split-time", "--split-context", "0.5", *common, "--json"]
    p = _run(args, env, tmp_path, nproc=2)
    row = json.loads(p.stdout[p.stdout.index("{"):])["inputs"][0]
    joined, joined_lat = out / "pyfeat-single_face.inversion.mp4", out / "pyfeat-single_face.latents"
    assert row["status"] == "done" and row["frames"] == 60 and row["faces_edited"] == single_faces == 60
    assert row["latents"] == str(joined_lat) and not list((out / STATE_DIR / "parts").iterdir())
    assert _packets(joined, "video") == _packets(single, "video")
    assert _packets(joined, "audio") == _packets(single, "audio")
    a = [f.image.astype(np.int16) for f in VideoReader(single)]
    b = [f.image.astype(np.int16) for f in VideoReader(joined)]
    assert len(a) == len(b) == 60 and all(np.array_equal(x, y) for x, y in zip(a[:30], b[:30]))
    assert max(float(np.abs(x - y).mean()) for x, y in zip(a[30:], b[30:])) < 0.5   # as the split edit
    # the latents: the same header, frames and track ids; the first span's exactly; after the seam the
    # crops moved by a fraction of a pixel (the stabiliser's earlier start, see the split edit above),
    # which the tiny random encoder turns into small changes of w and larger ones of its noise-like F
    la, lb = LatentsReader(single_lat), LatentsReader(joined_lat)
    assert la.meta == lb.meta and len(lb) == 60
    fa, fb = list(la), list(lb)
    assert [(f.frame, f.track.tolist()) for f in fa] == [(f.frame, f.track.tolist()) for f in fb]
    worst = dict.fromkeys(("w", "F", "matrix", "landmarks"), 0.0)
    for x, y in zip(fa, fb):
        for k in worst:
            u, v = getattr(x, k), getattr(y, k)
            if x.frame < 30:
                assert np.array_equal(u, v), (x.frame, k)
            else:
                worst[k] = max(worst[k], float(np.abs(u - v).mean() / np.abs(u).mean()))
    # measured: w 0.003, F 0.085, matrix 0.003, landmarks 0.0013 (relative mean differences)
    assert worst["w"] < 0.01 and worst["F"] < 0.15 and worst["matrix"] < 0.01 and worst["landmarks"] < 0.01, worst
    p = _run(args, env, tmp_path, nproc=2)                                  # started again: nothing to do
    assert json.loads(p.stdout[p.stdout.index("{"):])["inputs"][0]["status"] == "skipped"


def _latents_opts(tiny, **kw):
    from fsvideo.pipeline.options import RunOptions
    return RunOptions(generator=tiny["gen"], encoder=tiny["enc"], detector="dlib", device="cpu", **kw)


@pytest.fixture(scope="module")
def inverted(tiny, media_dir, tmp_path_factory):
    """Latents of the first second of the single-face clip (30 frames), inverted once for the tests below."""
    from fsvideo.pipeline.invert import invert_video
    d = tmp_path_factory.mktemp("inverted")
    invert_video(media_dir / CLIPS[0], d / "inv.mp4", latents_out=d / "full.latents",
                 options=_latents_opts(tiny, end=1.0))
    return d / "full.latents"


def _without_faces(src, dst, frame: int):
    """A copy of latents file ``src`` whose frame ``frame`` has no face (as a missed detection leaves it)."""
    from fsvideo.latents import FrameLatents, LatentsReader, LatentsWriter
    r = LatentsReader(src)
    meta = {k: v for k, v in r.meta.items() if k not in ("format", "frames", "chunks", "F_dtype")}
    w = LatentsWriter(dst, meta=meta, f_dtype=r.meta["F_dtype"])
    for fl in r:
        if fl.frame == frame:
            fl = FrameLatents(fl.frame, fl.track[:0], fl.w[:0], fl.F[:0], fl.matrix[:0], fl.landmarks[:0])
        w.add(fl)
    w.close()
    r.close()


def test_a_re_edit_from_latents_split_in_time_is_the_single_re_edit(tiny, inverted, media_dir, tmp_path):
    """`edit --split-time --latents FILE`: each rank reads the latents of its own frames; the joined
    video is the single `edit --latents FILE` run's, frame for frame, bit for bit."""
    src = media_dir / CLIPS[0]
    # frame 11 has no face: the blend masks' smoothing starts afresh at frame 12, so the second
    # span (from frame 15) decodes only frames 12-14 before it, reading latents 12-29
    lat = tmp_path / "gap.latents"
    _without_faces(inverted, lat, 11)
    env = _env(tmp_path / "home")
    common = [*_model_args(tiny), "--end", "1.0", "--crf", "0", "--latents", str(lat)]
    single = tmp_path / "single.mp4"
    s = json.loads((r := _run(["edit", str(src), "-o", str(single), *common, "--json"], env, tmp_path)).stdout[
        r.stdout.index("{"):])
    assert s["detector"] == "latents" and s["frames"] == 30 and s["faces_edited"] == 29
    out = tmp_path / "split"
    args = ["edit", str(src), "--out-dir", str(out), "--split-time", "--split-context", "0.2", *common, "--json"]
    p = _run(args, env, tmp_path, nproc=2)
    row = json.loads(p.stdout[p.stdout.index("{"):])["inputs"][0]
    joined = out / "pyfeat-single_face.dir+2.mp4"
    assert row["status"] == "done" and row["frames"] == 30 and row["faces_edited"] == 29
    assert not list((out / STATE_DIR / "parts").iterdir())
    assert _packets(joined, "video") == _packets(single, "video")
    assert _packets(joined, "audio") == _packets(single, "audio")
    a = [f.image for f in VideoReader(single)]
    b = [f.image for f in VideoReader(joined)]
    assert len(a) == len(b) == 30 and all(np.array_equal(x, y) for x, y in zip(a, b))
    p = _run(args, env, tmp_path, nproc=2)                                  # started again: nothing to do
    assert json.loads(p.stdout[p.stdout.index("{"):])["inputs"][0]["status"] == "skipped"


def test_a_split_re_edit_refuses_mismatched_latents_on_every_rank(tiny, inverted, media_dir, tmp_path):
    """Latents of another video, of another --start, with fewer frames than the run, or broken: each input's
    one-line error naming its latents file and the fix, found before any rank works (none waits)."""
    from fsvideo.pipeline.invert import invert_video
    ins, lats = tmp_path / "in", tmp_path / "lat"
    ins.mkdir()
    lats.mkdir()
    for name in ("short.mp4", "late.mp4", "broken.mp4"):
        shutil.copy(media_dir / CLIPS[0], ins / name)
    shutil.copy(media_dir / CLIPS[1], ins / "other.flv")
    invert_video(ins / "short.mp4", tmp_path / "s.mp4", latents_out=lats / "short.latents",
                 options=_latents_opts(tiny, end=0.3))                       # 9 frames of 30
    invert_video(ins / "late.mp4", tmp_path / "l.mp4", latents_out=lats / "late.latents",
                 options=_latents_opts(tiny, start=0.1, end=0.4))            # from 0.1 s, not 0
    shutil.copy(inverted, lats / "other.latents")                            # another video's
    (lats / "broken.latents").write_bytes(b"\x00" * 100)
    env = _env(tmp_path / "home")
    args = ["edit", str(ins), "--out-dir", str(tmp_path / "out"), "--split-time", "--latents", str(lats),
            *_model_args(tiny), "--from", "0", "--end", "1.0", "--json"]    # --from: --start under torchrun
    p = _run(args, env, tmp_path, nproc=2, ok=(1,))
    # no rank raised (torchrun prints its own launcher traceback for rank 0's exit code 1)
    assert not [ln for ln in p.stderr.splitlines() if 'File "' in ln and f"{os.sep}fsvideo{os.sep}" in ln]
    rows = {r["input"].split("/")[-1]: r for r in json.loads(p.stdout[p.stdout.index("{"):])["inputs"]}
    assert all(r["status"] == "failed" and "\n" not in r["error"] for r in rows.values())
    short, late, other = (rows[n]["error"] for n in ("short.mp4", "late.mp4", "other.flv"))
    assert f"{lats / 'short.latents'} holds latents of 9 frames" in short and "same --start/--end" in short
    assert f"{lats / 'late.latents'} starts at 0.100 s, this run's first frame is at 0.000 s" in late
    assert "--start 0.1" in late
    assert f"{lats / 'other.latents'} was made from another file" in other and "fsvideo invert" in other
    assert f"{lats / 'broken.latents'} is not a complete fsvideo latents file" in rows["broken.mp4"]["error"]
    assert not (tmp_path / "out" / "short.dir+2.mp4").exists()
