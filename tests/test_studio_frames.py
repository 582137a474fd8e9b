"""`fsvideo studio`: the page's frames are the pipeline's frames, and previews are the render.

* variable frame rate: frame ``i`` of the page is the pipeline's decoded frame ``i`` (by timestamp),
  and a preview clip and the export agree on which frame is which;
* blend masks: a preview clip and a full frame are smoothed over time like the render's, so they
  equal the exported frames;
* the work folder's latents cache and uploads are bounded, least recently used first.

The VFR clip is made here with PyAV (the first half at 30 frames/s, the rest at 10, like a screen
recording that slows down) from frames of a shared clip, with the frame number painted in a corner so
that a neighbour cannot pass for the frame.
"""
from __future__ import annotations

import os
import time
from dataclasses import replace

import numpy as np
import pytest
from test_studio_api import CLIP, SEFA, make_client, opts, tiny, wait_job, wait_ready  # noqa: F401 - fixtures

from fsvideo import RunOptions

pytest.importorskip("fastapi", reason="fsvideo studio needs fastapi (pip install 'fsvideo[studio]')")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

N_FRAMES = 24
FPS = 30


def mark(image: np.ndarray, i: int) -> np.ndarray:
    """``image`` with frame number ``i`` as the grey level of a 32 px block in its bottom-left corner."""
    out = image.copy()
    out[-32:, :32] = (i * 9) % 256
    return out


def marked(image: np.ndarray) -> int:
    """The frame number :func:`mark` painted (the block's median, within the codec's error)."""
    return int(round(float(np.median(image[-28:-4, 4:28])) / 9))


def write_vfr(path, frames: list[np.ndarray], pts_ms: list[int]) -> None:
    """H.264 in MP4 with the frames at the given presentation times (milliseconds)."""
    from fractions import Fraction

    import av
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=FPS, options={"preset": "ultrafast", "crf": "18"})
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        s.codec_context.time_base = s.time_base = Fraction(1, 1000)
        for img, t in zip(frames, pts_ms):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = t, Fraction(1, 1000)
            out.mux(s.encode(f))
        out.mux(s.encode(None))


@pytest.fixture(scope="module")
def vfr_clip(media_dir, tmp_path_factory):
    """A variable-frame-rate clip of a face (frames of the shared clip, numbered)."""
    from fsvideo.video import VideoReader
    frames = [mark(f.image, i) for i, f in zip(range(N_FRAMES), VideoReader(media_dir / CLIP))]
    half = N_FRAMES // 2
    pts = [round(1000 * i / FPS) for i in range(half)] + [round(1000 * (half / FPS + i / 10)) for i in range(half)]
    path = tmp_path_factory.mktemp("vfr") / "vfr.mp4"
    write_vfr(path, frames, pts)
    return path


@pytest.fixture(scope="module")
def decoded(vfr_clip):
    """The pipeline's frames of the clip: what a VideoReader yields, in order."""
    from fsvideo.video import VideoReader
    return [f for f in VideoReader(vfr_clip)]


def test_vfr_frames_are_found_by_their_timestamps(vfr_clip, decoded, tmp_path):
    """Project.frame(i) is the pipeline's decoded frame i, in any order of seeking, with or without a
    --start; seeking by the nominal rate (the old way) would show later frames."""
    from fsvideo.studio.project import Project
    assert [marked(f.image) for f in decoded] == list(range(N_FRAMES))
    p = Project(vfr_clip, RunOptions(), tmp_path)
    assert p.n_frames == N_FRAMES and p.times == pytest.approx([f.time for f in decoded])
    order = np.random.default_rng(0).permutation(N_FRAMES)
    for i in order:
        assert np.array_equal(p.frame(int(i)), decoded[i].image), i
    assert (p.dir / "frame_times.v2.npy").is_file() and Project(vfr_clip, RunOptions(), tmp_path).times == p.times
    old = [int(np.searchsorted(p.times, (i - 0.5) / p.fps - 1e-6)) for i in range(N_FRAMES)]
    assert sum(k != i for i, k in enumerate(old)) >= 3       # a seek by the nominal rate shows neighbours
    start = (decoded[4].time + decoded[5].time) / 2
    q = Project(vfr_clip, RunOptions(start=start), tmp_path / "s")
    assert q.n_frames == N_FRAMES - 5
    for i in (7, 0, 12, 3):
        assert np.array_equal(q.frame(i), decoded[5 + i].image), i
    with pytest.raises(Exception, match="outside the video"):
        q.frame(N_FRAMES)


def test_frames_an_edit_list_cuts_off_are_not_numbered(media_dir, tmp_path):
    """pyfeat-no_face.mp4 starts with 3 packets that its MP4 edit list cuts off (negative times, flagged
    discard): the decoder drops them, but the packet list counted them, so frame i of the page was
    decoded frame i + 3 and frame 0 'could not be decoded' (every render of the first frame a 400)."""
    from fsvideo.studio.project import Project
    from fsvideo.video import VideoReader
    src = media_dir / "videos/other/pyfeat-no_face.mp4"
    decoded = list(VideoReader(src, None, 1.0))
    p = Project(src, RunOptions(end=1.0), tmp_path)
    assert p.n_frames == len(decoded) == 24 and p.times == pytest.approx([f.time for f in decoded])
    for i in (0, 13, 23):
        assert np.array_equal(p.frame(i), decoded[i].image), i


@pytest.fixture
def written(monkeypatch):
    """Every frame a VideoWriter encodes, as {source pts: uint8 image} (exact: before the codec)."""
    from fsvideo.video.writer import VideoWriter
    got: dict[int, np.ndarray] = {}
    original = VideoWriter.write

    def write(self, image, pts=None, **kw):
        got[int(pts)] = np.array(image, copy=True)
        return original(self, image, pts, **kw)
    monkeypatch.setattr(VideoWriter, "write", write)
    return got


@pytest.fixture(scope="module")
def studio_vfr(opts, tmp_path_factory, vfr_clip):  # noqa: F811
    """A studio with the VFR clip opened and inverted: (client, session id, project, renderer)."""
    from fsvideo.studio.render import Renderer
    o = replace(opts, end=None)
    renderer = Renderer(o)
    c = make_client(o, renderer, tmp_path_factory.mktemp("studio_vfr"))
    sid = c.post("/api/session").json()["sid"]
    assert c.post(f"/api/s/{sid}/open", json={"path": str(vfr_clip)}).status_code == 200
    st = wait_ready(c, sid)
    assert st["project"]["status"]["state"] == "ready" and st["project"]["timeline"]["n_frames"] == N_FRAMES
    assert st["project"]["timeline"]["tracks"], "no face found in the test clip"
    return c, sid, c.app.state.studio.sessions[sid].project, renderer


def test_vfr_preview_clip_and_full_frames_are_the_export(studio_vfr, decoded, written):
    """A preview clip's frames are the export's frames (same timestamps, same pixels: the masks are
    smoothed over the frames before the clip as in the export), and the page's full frame i is the
    export's frame i (the source frame i, and the same mask)."""
    c, sid, project, renderer = studio_vfr
    job = c.post(f"/api/s/{sid}/export", json={"edits": SEFA}).json()
    assert wait_job(c, sid, job["id"])["state"] == "done"
    export = dict(written)
    pts = sorted(export)
    assert pts == [f.pts for f in decoded]
    written.clear()
    job = c.post(f"/api/s/{sid}/clip", json={"edits": SEFA, "frame": 12, "seconds": 0.4}).json()
    done = wait_job(c, sid, job["id"])
    assert done["state"] == "done", done
    clip = dict(written)
    half = round(0.4 * project.fps / 2)                       # frames each side, at the average rate
    assert half >= 3 and sorted(clip) == pts[12 - half:12 + half]   # the frames, by their own timestamps
    for t in clip:
        assert np.array_equal(clip[t], export[t]), pts.index(t)
    edits = [("sefa:1", "sefa:1", 3.0)]
    for i in (12, 5, 20):
        shown = renderer.render(project, i, edits, tracks=None, view="original").image
        assert np.array_equal(shown, decoded[i].image) and marked(shown) == i
        full = renderer.render(project, i, edits, tracks=None, view="composite")
        assert full.mask == "smoothed"
        d = np.abs(full.image.astype(int) - export[pts[i]])
        # G^K(w) is cached per frame (float rounding of the face), and frame 20's smoothing starts
        # 17 frames back (mask within 2**-10): a grey level on few pixels (measured: 0 at frame 5,
        # 0.003% of pixels at 12, 0.04% at 20); the frame's own mask was 21 levels off on 5.6%
        assert d.max() <= 1 and np.mean(d > 0) < 0.005, (i, d.max(), np.mean(d > 0))


def test_unsmoothed_masks_would_differ(studio_vfr, written):
    """The check above can fail: the frame's own mask (the old preview) is visibly off the export's."""
    from fsvideo.faces.blend import face_mask, landmark_mask
    c, sid, project, renderer = studio_vfr
    fl = project.latents(12)
    own = [landmark_mask(lm, renderer.crop) for lm in fl.landmarks]
    smoothed = renderer.smoothed_masks(project, 12, None)
    assert max(np.abs(a - b).max() for a, b in zip(own, smoothed)) > 0.05
    assert np.array_equal(own[0], face_mask(np.zeros((renderer.crop,) * 2 + (3,), np.uint8), fl.landmarks[0]))


def test_history_starts_where_the_faces_appeared(tmp_path):
    from fsvideo.studio.project import Project
    p = Project.__new__(Project)
    import threading
    p._lock = threading.Lock()
    p._tracks = {0: np.array([]), 1: np.array([1]), 2: np.array([1, 2]), 3: np.array([1, 2]), 4: np.array([2])}
    assert p.history_start(3, None, 10) == 1                  # track 1 runs from frame 1
    assert p.history_start(3, {2}, 10) == 2                   # only face 2: from frame 2
    assert p.history_start(3, None, 1) == 2                   # at most `limit` frames back
    assert p.history_start(4, None, 10) == 2 and p.history_start(0, None, 10) == 0
    from fsvideo.faces.blend import mask_history_frames
    assert mask_history_frames(30) == 17 and mask_history_frames(30, tau_s=0) == 0


# ------------------------------------------------------------------ the work folder's bound

def test_cli_cache_limits(capsys):
    from fsvideo.cli import main as cli_main
    cli_main(["studio", "--help"])
    out = capsys.readouterr().out
    assert "--cache-gb" in out and "--cache-days" in out
    with pytest.raises(SystemExit) as e:
        cli_main(["studio", "--cache-gb", "-1", "--no-browser"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--cache-gb -1 must be a number >= 0" in err and len(err.strip().splitlines()) <= 2


def _entry(folder, mib: float, days_ago: float, now: float):
    folder.mkdir(parents=True)
    (folder / "data").write_bytes(b"\0" * int(mib * 2**20))
    os.utime(folder, (now - days_ago * 86400,) * 2)
    return folder


def test_prune_removes_old_then_least_recently_used_never_in_use(tmp_path):
    from fsvideo.studio.prune import prune
    now = time.time()
    a = _entry(tmp_path / "cache" / "a", 1, 3, now)          # oldest, but in use
    b = _entry(tmp_path / "cache" / "b", 1, 2, now)
    c = _entry(tmp_path / "uploads" / "c", 1, 1, now)
    d = _entry(tmp_path / "uploads" / "d", 1, 40, now)       # older than 30 days
    e = _entry(tmp_path / "exports" / "e", 1, 99, now)       # exports are the user's: never pruned
    removed = prune(tmp_path, int(2.5 * 2**20), 30 * 86400, in_use={a}, now=now)
    assert removed == [d, b]
    assert a.exists() and c.exists() and e.exists() and not b.exists() and not d.exists()
    assert prune(tmp_path, 0, 0, in_use=set(), now=now) == []           # 0: no limit


def test_studio_bounds_its_work_folder(tmp_path, media_dir, monkeypatch):
    """At start and on open, beyond --cache-gb the least recently used entries go, never the
    video open in a tab nor what a running job reads; a bad limit is a one-line error."""
    from fsvideo.errors import InputError
    from fsvideo.studio.jobs import Job
    from fsvideo.studio.project import Project
    from fsvideo.studio.session import Studio, StudioConfig
    monkeypatch.setattr(Project, "start_inversion", lambda self: None)
    now = time.time()
    stale = _entry(tmp_path / "cache" / "stale", 1, 5, now)
    _entry(tmp_path / "uploads" / "old", 1, 31, now)
    cfg = StudioConfig(options=RunOptions(end=0.2), workdir=tmp_path, cache_gb=1.5 * 2**20 / 1e9)
    st = Studio(cfg, renderer=object())
    assert stale.exists() and not (tmp_path / "uploads" / "old").exists()   # 31 days: gone at start
    s = st.new_session()
    p = st.open(s, media_dir / CLIP)
    assert p.dir.exists() and abs(p.dir.stat().st_mtime - time.time()) < 60   # used now
    job_dir = _entry(tmp_path / "cache" / "job", 2, 9, now)
    gate = __import__("threading").Event()
    job = Job("export", lambda progress: gate.wait(30), 1, uses=(job_dir,))
    s.jobs[job.id] = job
    assert st.prune() == [stale]                              # 3 MiB > 1.5: the oldest not in use goes
    assert job_dir.exists() and p.dir.exists()
    gate.set()
    job.wait(10)
    s.project = None                                          # the tab moved on: nothing holds them now
    assert st.prune() == [job_dir] and p.key in st.projects  # within the limit again
    p.state = "ready"                                         # (its inversion was not started here)
    os.utime(p.dir, (now - 31 * 86400,) * 2)
    assert st.prune() == [p.dir] and p.key not in st.projects  # its inversion is made again when reopened
    with pytest.raises(InputError, match="--cache-gb -1"):
        Studio(replace(cfg, cache_gb=-1.0), renderer=object())
