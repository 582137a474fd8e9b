"""`fsvideo studio` API: every endpoint, bad uploads, path traversal, sessions, drafts, export and clips.

Tiny random weights in the official format (as tests/test_edit_pipeline.py) on 1 s of a shared clip.
"""
from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fsvideo import RunOptions
from fsvideo.models.random_init import random_model, save_official_checkpoints

pytest.importorskip("fastapi", reason="fsvideo studio needs fastapi (pip install 'fsvideo[studio]')")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

CLIP = "videos/other/liveportrait-d18.mp4"
SEFA = [{"attr": "sefa:1", "strength": 3.0}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    model = random_model(64, seed=0)
    enc, gen = save_official_checkpoints(model, d)
    direction = np.random.default_rng(1).standard_normal((model.generator.n_latent, 64)).astype(np.float32)
    np.save(d / "dir.npy", direction / np.linalg.norm(direction))
    return dict(enc=str(enc), gen=str(gen), dir=d / "dir.npy")


@pytest.fixture(scope="module")
def opts(tiny):
    return RunOptions(generator=tiny["gen"], encoder=tiny["enc"], detector="dlib", end=1.0)


@pytest.fixture(scope="module")
def renderer(opts):
    from fsvideo.studio.render import Renderer
    return Renderer(opts)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("studio")


def make_client(opts, renderer, workdir, **kw):
    from fastapi.testclient import TestClient

    from fsvideo.studio.app import StudioConfig, create_app
    return TestClient(create_app(StudioConfig(options=opts, workdir=workdir, **kw), renderer),
                      base_url="http://127.0.0.1")


@pytest.fixture
def client(opts, renderer, workdir):
    return make_client(opts, renderer, workdir)


def wait_ready(c, sid, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        st = c.get(f"/api/s/{sid}/state").json()
        if st["project"]["status"]["state"] != "inverting":
            return st
        time.sleep(0.2)
    raise AssertionError("inversion did not finish")


def opened(c, media_dir):
    sid = c.post("/api/session").json()["sid"]
    r = c.post(f"/api/s/{sid}/open", json={"path": str(media_dir / CLIP)})
    assert r.status_code == 200, r.text
    st = wait_ready(c, sid)
    assert st["project"]["status"]["state"] == "ready", st
    return sid, st


def wait_job(c, sid, job_id, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        (job,) = [j for j in c.get(f"/api/s/{sid}/state").json()["jobs"] if j["id"] == job_id]
        if job["state"] != "running":
            return job
        time.sleep(0.2)
    raise AssertionError("job did not finish")


def render(c, sid, **kw):
    body = dict(frame=5, edits=SEFA, view="composite", quality="full")
    body.update(kw)
    return c.post(f"/api/s/{sid}/render", json=body)


def pixels(r) -> np.ndarray:
    assert r.status_code == 200, r.text
    return np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).astype(int)


def test_draft_at_full_size_is_the_generator_forward():
    """preview.draft_decode mirrors Generator.forward: at the generator's size they agree exactly."""
    from fsvideo.models.preview import draft_decode, draft_sizes
    G = random_model(64, seed=0).generator.eval()
    w = torch.randn(2, G.n_latent, G.style_dim)
    f = torch.randn(2, *G.feature_shape(5))
    noise = G.make_noise(3)
    assert draft_sizes(G) == [16, 32, 64]
    assert torch.equal(draft_decode(G, w, f, noise, 5, 64), G(w, noise=noise, features_in=f, k=5))
    small = draft_decode(G, w, f, noise, 5, 32)
    assert small.shape == (2, 3, 32, 32) and torch.isfinite(small).all()
    with pytest.raises(ValueError, match="max_res"):
        draft_decode(G, w, f, noise, 5, 8)
    from fsvideo.models.preview import synthesize  # the full frame resumes the draft's pass
    part = synthesize(G, w, f, noise, 5, 16)
    assert torch.equal(synthesize(G, w, f, noise, 5, 64, start=part).skip, G(w, noise=noise, features_in=f, k=5))


def test_full_frame_after_a_draft_is_what_export_generates(client, media_dir, renderer):
    """The page's full frame (resumed from its draft) equals the pipeline's G(w~, F~) face, bit for bit."""
    sid, _ = opened(client, media_dir)
    project = client.app.state.studio.sessions[sid].project
    edits = [("sefa:1", "sefa:1", 3.0)]
    renderer.render(project, 4, edits, tracks=None, view="edit", draft=True)
    got = renderer.render(project, 4, edits, tracks=None, view="edit").image
    fl = project.latents(4)
    from fsvideo.edits.eq1 import edit_codes
    ex, specs = renderer.runner, renderer.specs(edits)
    w, f = ex.map_codes(lambda w, f: edit_codes(ex.model, w, f, specs, ex.noise), torch.from_numpy(fl.w),
                        torch.from_numpy(fl.F))
    want = np.concatenate(list(renderer.runner.generate(w, f)), axis=1)
    assert np.abs(got.astype(int) - want).max() <= 1           # G^K(w) cached per frame: float rounding only
    assert np.mean(got != want) < 0.01


def test_crop_views_tint_a_mask_computed_on_a_coarser_grid(client, media_dir, monkeypatch):
    """A smoothed mask is on the grid of the face's size in the frame (smaller than the crop for a
    face smaller than the crop, e.g. any face of a real 1024 px model in a 480p video): the
    inversion and edit views still tint the whole crop with it."""
    from fsvideo.studio.render import Renderer
    real = Renderer.smoothed_masks
    monkeypatch.setattr(Renderer, "smoothed_masks", lambda self, p, i, t: [m[::2, ::2] for m in real(self, p, i, t)])
    sid, _ = opened(client, media_dir)
    for view in ("inversion", "edit"):
        plain, tinted = (pixels(render(client, sid, view=view, mask=m)) for m in (False, True))
        assert tinted.shape == plain.shape == (256, 256, 3)
        assert np.abs(tinted.astype(int) - plain).mean() > 1       # the mask is drawn over the face


def test_open_invert_timeline_and_views(client, media_dir, tiny):
    c = client
    cfg = c.post("/api/session").json()
    assert cfg["draft_res"] == 32 and cfg["size"] == 64 and cfg["attributes"]["sefa"] == 10
    assert cfg["attributes"]["missing"] == ["eyeglasses", "makeup", "smile"]   # registry names, not downloaded
    sid, st = opened(c, media_dir)
    tl = st["project"]["timeline"]
    assert tl["n_frames"] == 30 and tl["inverted"] == 30 and tl["fps"] == 30
    assert sum(t["frames"] for t in tl["tracks"]) + sum(b - a + 1 for a, b in tl["no_face"]) >= 30
    shapes = {}
    for view in ("original", "inversion", "edit", "composite"):
        for q in ("draft", "full"):
            r = render(c, sid, view=view, quality=q)
            shapes[view, q] = pixels(r).shape
            want = "draft" if q == "draft" and view != "original" else "full"
            assert r.headers["x-quality"] == want
    assert shapes["composite", "full"] == shapes["original", "full"] == (480, 480, 3)
    assert shapes["edit", "full"] == shapes["inversion", "draft"] == (256, 256, 3)      # crop size
    base = pixels(render(c, sid, edits=[{"attr": "sefa:1", "strength": 0.0}]))
    edited = pixels(render(c, sid))
    assert np.abs(base - edited).mean() > 0.5                         # the edit changes the frame
    assert np.abs(pixels(render(c, sid, mask=True)) - edited).mean() > 0.5
    draft = pixels(render(c, sid, quality="draft"))
    assert np.abs(draft - edited).mean() > 0 and np.abs(draft - edited).mean() < 40   # a rough, not a random, picture
    assert pixels(render(c, sid, face="0")).shape == (480, 480, 3)
    from fsvideo.edits.directions import directions_home  # a fitted direction is offered
    directions_home().mkdir(parents=True, exist_ok=True)
    np.save(directions_home() / "myfit.npy", np.load(tiny["dir"]))
    assert "myfit" in c.post("/api/session").json()["attributes"]["fitted"]
    fitted = pixels(render(c, sid, edits=[{"attr": "myfit", "strength": 2.0}]))
    assert np.abs(fitted - base).mean() > 0.5
    r = render(c, sid, face="7")
    assert r.status_code == 200 and r.headers["x-note"] == "no selected face in this frame"


def test_bad_requests_are_one_line_errors(client, media_dir):
    c = client
    sid = c.post("/api/session").json()["sid"]
    assert c.post(f"/api/s/{sid}/render", json={"frame": 0}).json()["error"].startswith("no video is open")
    sid, _ = opened(c, media_dir)
    cases = [dict(edits=[{"attr": "smile", "strength": 1}]),              # offered only when downloaded
             dict(edits=[{"attr": "/etc/passwd", "strength": 1}]),
             dict(edits=[{"attr": "../x.npy", "strength": 1}]),
             dict(edits=[{"attr": "sefa:1", "strength": 1e9}]),
             dict(frame=9999), dict(view="../../etc"), dict(face="../1")]
    for kw in cases:
        r = render(c, sid, **kw)
        assert r.status_code == 400 and r.json()["error"], kw
    assert c.post(f"/api/s/{sid}/render", content=b"frame=1",
                  headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 422
    assert c.get("/api/s/nope/state").status_code == 404
    assert render(c, sid).status_code == 200                           # still serving


def test_uploads_are_checked(opts, renderer, workdir, media_dir, tiny):
    c = make_client(opts, renderer, workdir, max_upload_mb=0.05)
    sid = c.post("/api/session").json()["sid"]

    def up(endpoint, data, name):
        return c.post(f"/api/s/{sid}/{endpoint}", content=data, headers={"X-Filename": name})
    assert "not a video" in up("upload", b"#!/bin/sh\n", "evil.sh").json()["error"]
    assert "empty" in up("upload", b"", "a.mp4").json()["error"]
    assert "limit" in up("upload", b"\0" * 100_000, "big.mp4").json()["error"]
    r = up("upload", b"\x00\x00\x00\x18ftypmp42 this is not a video", "../../broken.mp4")
    assert r.status_code == 400 and "broken.mp4 cannot be opened" in r.json()["error"]
    assert str(workdir) not in r.json()["error"]                        # the upload folder is not shown
    assert not list((workdir / "uploads").rglob("broken.mp4")) and not (workdir.parent / "broken.mp4").exists()
    assert "not a .npy" in up("direction", b"x", "d.txt").json()["error"]
    assert up("direction", b"garbage", "d.npy").status_code == 400
    bad = io.BytesIO()
    np.save(bad, np.ones((3, 3), np.float32))
    assert up("direction", bad.getvalue(), "wrong_shape.npy").status_code == 400
    ok = up("direction", tiny["dir"].read_bytes(), "../my dir.npy").json()
    assert ok["name"] == "my_dir.npy" and ok["attr"].startswith("upload:")
    # an image upload within the limit opens and inverts like a video
    img = io.BytesIO()
    Image.open(media_dir / "images/wild/facerec-obama.jpg").convert("RGB").resize((160, 200)).save(img, "JPEG")
    r = up("upload", img.getvalue(), "face.jpg")
    assert r.status_code == 200, r.text
    st = wait_ready(c, sid)
    assert st["project"]["is_image"] and st["project"]["status"]["state"] == "ready"
    used = render(c, sid, frame=0, edits=[{"attr": ok["attr"], "strength": 2.0}])
    assert used.status_code == 200
    other = c.post("/api/session").json()["sid"]                      # uploads belong to their session
    assert c.post(f"/api/s/{other}/command", json={"edits": [{"attr": ok["attr"], "strength": 1}]}).status_code == 400


def test_no_path_reaches_the_filesystem(client, opts, renderer, workdir, media_dir):
    c = client
    sid, _ = opened(c, media_dir)
    for url in ("/static/../app.py", "/static/..%2fapp.py", "/static/%2e%2e/%2e%2e/errors.py",
                f"/api/s/{sid}/file/..%2f..%2fcache", f"/api/s/{sid}/file/../../etc/passwd", "/etc/passwd"):
        r = c.get(url)
        assert r.status_code == 404 and b"import" not in r.content, url
    assert c.get("/static/studio.js").status_code == 200
    for r in (c.get("/api/nope"), c.put(f"/api/s/{sid}/render", json={}), c.get(f"/api/s/{sid}/render")):
        assert r.status_code in (404, 405) and r.json()["error"] in ("Not Found", "Method Not Allowed"), r.text
    for host in ("evil.example:7870", "127.0.0.1.evil.example", "", "[::2]:7870"):  # DNS rebinding
        r = c.get("/", headers={"Host": host})
        assert r.status_code == 400 and "answers only requests to 127.0.0.1" in r.json()["error"], host
    for host in ("localhost:7870", "LOCALHOST", "[::1]:7870", "127.0.0.1:1"):
        assert c.get("/", headers={"Host": host}).status_code == 200, host
    remote = make_client(opts, renderer, workdir, host="0.0.0.0")
    rs = remote.post("/api/session").json()
    assert rs["allow_paths"] is False
    r = remote.post(f"/api/s/{rs['sid']}/open", json={"path": str(media_dir / CLIP)})
    assert r.status_code == 400 and "by path is off" in r.json()["error"]
    r = c.post(f"/api/s/{sid}/open", json={"path": "/no/such/video.mp4"})
    assert r.status_code == 400 and "no such file" in r.json()["error"]


def test_sessions_are_independent_and_projects_shared(client, opts, renderer, workdir, media_dir):
    c = client
    a, _ = opened(c, media_dir)
    b, _ = opened(c, media_dir)
    studio = c.app.state.studio
    assert studio.sessions[a].project is studio.sessions[b].project             # one inversion for both tabs
    assert render(c, a, seq=5).status_code == 200
    assert render(c, b, seq=1).status_code == 200                               # b's counter is its own
    assert render(c, a, seq=3).status_code == 204                               # superseded in a only
    job = c.post(f"/api/s/{a}/clip", json={"edits": SEFA, "frame": 3, "seconds": 0.5}).json()
    assert c.get(f"/api/s/{b}/file/{job['id']}").status_code == 404             # not b's job
    assert c.post(f"/api/s/{b}/cancel/{job['id']}").status_code == 404
    wait_job(c, a, job["id"])
    # a new studio on the same workdir reuses the cached latents: ready without inverting again
    again = make_client(opts, renderer, workdir)
    sid = again.post("/api/session").json()["sid"]
    again.post(f"/api/s/{sid}/open", json={"path": str(media_dir / CLIP)})
    assert again.get(f"/api/s/{sid}/state").json()["project"]["status"]["state"] == "ready"
    assert again.app.state.studio.sessions[sid].project._thread is None


def test_export_clip_and_command(client, media_dir, workdir):
    from fsvideo.video import VideoReader, probe
    c = client
    sid, _ = opened(c, media_dir)
    assert c.post(f"/api/s/{sid}/export", json={"edits": []}).status_code == 400
    cmd = c.post(f"/api/s/{sid}/command", json={"edits": SEFA}).json()["command"]
    assert cmd.startswith("fsvideo edit ") and "--latents" in cmd and "--attr sefa:1 --strength 3" in cmd
    job = c.post(f"/api/s/{sid}/export", json={"edits": SEFA}).json()
    done = wait_job(c, sid, job["id"])
    assert done["state"] == "done", done
    out = Path(done["command"].split(" -o ")[1])
    info, src = probe(out), probe(media_dir / CLIP)
    assert info.n_frames == 30 and info.fps == src.fps and info.has_audio
    r = c.get(f"/api/s/{sid}/file/{job['id']}")
    assert r.status_code == 200 and r.content == out.read_bytes()
    one = c.post(f"/api/s/{sid}/export", json={"edits": SEFA, "face": "0"}).json()   # some faces: own latents
    assert wait_job(c, sid, one["id"])["state"] == "done"
    assert "--latents" in one["command"] and Path(one["command"].split(" -o ")[1]).with_suffix(".latents").is_file()
    clip = c.post(f"/api/s/{sid}/clip", json={"edits": SEFA, "frame": 15, "seconds": 0.5}).json()
    assert wait_job(c, sid, clip["id"])["state"] == "done"
    r = c.get(f"/api/s/{sid}/file/{clip['id']}")
    path = workdir / "got_clip.mp4"
    path.write_bytes(r.content)
    ci = probe(path)
    assert ci.fps == src.fps and ci.has_audio and ci.n_frames == 16
    first = next(iter(VideoReader(path))).image.astype(int)
    diff = {i: np.abs(first - pixels(render(c, sid, frame=i))).mean() for i in (3, 7, 11)}
    assert diff[7] < 6 and diff[7] < min(diff[3], diff[11])    # the clip starts at frame 15 - 8
    assert c.post(f"/api/s/{sid}/clip", json={"edits": SEFA, "seconds": 60}).status_code == 400


def test_cancel_stops_a_job_and_leaves_no_output(tmp_path):
    from fsvideo.studio.jobs import Job
    out = tmp_path / "x.mp4"
    started = []

    def work(progress):
        from fsvideo.utils import atomic_output
        with atomic_output(out) as tmp:
            tmp.write_bytes(b"partial")
            for i in range(1000):
                started.append(i)
                progress(i, 1000)
                time.sleep(0.01)
        return out
    job = Job("export", work, 1000)
    while not started:
        time.sleep(0.01)
    job.cancel()
    assert job.wait(10) == "cancelled" and not out.exists() and not list(tmp_path.iterdir())
    assert job.status()["state"] == "cancelled"


def test_frames_not_inverted_yet_are_409(opts, renderer, tmp_path, media_dir, monkeypatch):
    from fsvideo.studio.project import NotReady, Project
    p = Project(media_dir / CLIP, opts, tmp_path)
    with pytest.raises(NotReady, match="not inverted yet"):
        p.latents(3)
    assert p.frame(3).shape == (480, 480, 3) and p.n_frames == 30
    monkeypatch.setattr(Project, "start_inversion", lambda self: None)         # inversion "not started yet"
    c = make_client(opts, renderer, tmp_path / "w")
    sid = c.post("/api/session").json()["sid"]
    assert c.post(f"/api/s/{sid}/open", json={"path": str(media_dir / CLIP)}).status_code == 200
    r = render(c, sid, frame=2)
    assert r.status_code == 409 and "frame 2 is not inverted yet" in r.json()["error"]
    assert render(c, sid, frame=2, view="original").status_code == 200         # the source frame is shown
    r = c.post(f"/api/s/{sid}/export", json={"edits": SEFA})
    assert r.status_code == 400 and "still being inverted" in r.json()["error"]
    r = c.post(f"/api/s/{sid}/clip", json={"edits": SEFA, "frame": 3})     # was a job that failed later
    assert r.status_code == 409 and "not inverted yet" in r.json()["error"]
    assert c.get(f"/api/s/{sid}/state").json()["jobs"] == []


def test_cli_help_remote_warning_and_busy_port(capsys, media_dir):
    import socket

    from fsvideo.cli import main as cli_main
    cli_main(["studio", "--help"])
    out = capsys.readouterr().out
    assert "fsvideo studio talk.mp4" in out and "--no-browser" in out and "--host" in out
    # the Renderer's default draft size (it said "default 256", the GPU's only)
    assert "default: 64 on a CPU, 256 on a GPU" in " ".join(out.split())
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit) as e:
            cli_main(["studio", str(media_dir / CLIP), "--host", "0.0.0.0", "--port", str(port), "--no-browser"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert "warning" in err and "listening on 0.0.0.0" in err
    assert f"cannot listen on 0.0.0.0:{port}" in err and "--port" in err
    with pytest.raises(SystemExit) as e:
        cli_main(["studio", "/no/such.mp4", "--no-browser"])
    assert e.value.code == 2 and "no such file" in capsys.readouterr().err


def test_cli_start_up_errors_are_one_line(capsys, media_dir, tmp_path):
    """An unreadable video started the server (the error came later, in the page); a --workdir that cannot
    be made raised NotADirectoryError and --port 99999 OverflowError (internal errors)."""
    from fsvideo.cli import main as cli_main
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(range(256)) * 20)
    (tmp_path / "afile").write_text("x")
    for argv, expect in [([str(bad)], f"{bad} is not a video or image file"),
                         ([str(media_dir / CLIP), "--workdir", str(tmp_path / "afile" / "sub")],
                          f"the studio's work folder {tmp_path / 'afile' / 'sub'} cannot be written"),
                         ([str(media_dir / CLIP), "--port", "99999"], "99999 is not in the range 0<=x<=65535")]:
        with pytest.raises(SystemExit) as e:
            cli_main(["studio", *argv, "--no-browser"])
        err = " ".join(capsys.readouterr().err.split())
        assert e.value.code == 2 and expect in err and "internal error" not in err, err

def test_cli_serves_the_page_on_loopback(tiny, media_dir, tmp_path):
    """`fsvideo studio VIDEO --no-browser` prints its address, serves the page and answers the API."""
    import os
    import socket
    import subprocess
    import sys

    import httpx
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "fsvideo", "studio", str(media_dir / CLIP), "--no-browser", "--port", str(port),
           "--generator", tiny["gen"], "--encoder", tiny["enc"], "--detector", "dlib", "--end", "0.5",
           "--workdir", str(tmp_path / "w")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=Path(__file__).resolve().parents[1], env=dict(os.environ, COLUMNS="200"))
    try:
        line = proc.stdout.readline()
        assert f"fsvideo studio at http://127.0.0.1:{port}/" in line, line
        base = f"http://127.0.0.1:{port}"
        assert "fsvideo studio" in httpx.get(base + "/").text
        sid = httpx.post(base + "/api/session").json()["sid"]
        st = httpx.get(f"{base}/api/s/{sid}/state").json()
        assert st["project"]["video"] == Path(CLIP).name and st["project"]["status"]["total"] == 15
    finally:
        proc.terminate()
        proc.wait(20)


def test_face_picker_edits_only_the_chosen_face(client, media_dir):
    c = client
    sid = c.post("/api/session").json()["sid"]
    assert c.post(f"/api/s/{sid}/open", json={"path": str(media_dir / "images/wild/facerec-two_people.jpg")}).is_success
    st = wait_ready(c, sid)
    tracks = [t["id"] for t in st["project"]["timeline"]["tracks"]]
    assert len(tracks) >= 2 and st["project"]["timeline"]["n_frames"] == 1
    frame = pixels(render(c, sid, frame=0, view="original"))
    every = pixels(render(c, sid, frame=0)) != frame
    one = pixels(render(c, sid, frame=0, face=str(tracks[0]))) != frame
    assert one.any() and every.sum() > one.sum() and not (one & ~every).any()
    assert render(c, sid, frame=0, view="edit").content != render(c, sid, frame=0, view="edit", face="0").content
    cmd = c.post(f"/api/s/{sid}/command", json={"edits": SEFA, "face": str(tracks[0])}).json()["command"]
    assert f".face{tracks[0]}." in cmd and ".latents" in cmd


def test_frames_are_usable_while_the_video_inverts(opts, media_dir, tmp_path, monkeypatch):
    """invert_video(on_latents=...) hands each frame over before the latents file exists; the project serves it."""
    from dataclasses import replace

    from fsvideo import invert_video
    from fsvideo.studio import project as project_mod
    from fsvideo.studio.project import NotReady, Project
    p = Project(media_dir / CLIP, replace(opts, end=0.2), tmp_path)
    monkeypatch.setattr(project_mod, "LIVE_FRAMES", 3)
    seen = []

    def hook(fl):
        assert not p.latents_path.exists()                   # the file is written only at the end
        p._add(fl)
        seen.append(fl)
        assert p.latents(fl.frame) is fl and p.timeline()["inverted"] == len(seen)
    invert_video(media_dir / CLIP, tmp_path / "inv.mp4", latents_out=p.latents_path, options=p.options, on_latents=hook)
    assert [fl.frame for fl in seen] == list(range(6))
    with pytest.raises(NotReady, match="frame 0 is inverted; it is read back"):
        p.latents(0)                                          # dropped from memory (LIVE_FRAMES = 3)
    p._use_file()
    assert p.state == "ready" and all(np.array_equal(p.latents(fl.frame).F, fl.F) for fl in seen)


def test_eq1_with_known_features_of_w_is_eq1():
    """edit_codes(features_w=G^K(w)) (the studio's per-frame cache) gives Eq. 1's codes."""
    from fsvideo.edits.eq1 import EditSpec, edit_codes
    model = random_model(64, seed=0)
    G = model.generator
    w = torch.randn(2, G.n_latent, G.style_dim)
    f = torch.randn(2, *G.feature_shape(5))
    noise = G.make_noise(0)
    d = torch.randn(G.n_latent, G.style_dim)
    edits = [EditSpec("d", d / d.norm(), 1.5)]
    we, fe = edit_codes(model, w, f, edits, noise)
    we2, fe2 = edit_codes(model, w, f, edits, noise, features_w=model.features(w, noise=noise))
    assert torch.equal(we, we2) and torch.allclose(fe, fe2, atol=1e-5) and not torch.allclose(fe, f, atol=1e-3)


def test_preview_clips_do_not_pile_up(tmp_path):
    """Clips of an earlier run are deleted at start, and only the newest MAX_CLIPS stay; uploads stay."""
    from fsvideo.studio.session import MAX_CLIPS, Studio, StudioConfig
    earlier = tmp_path / "clips" / "earlier"
    earlier.mkdir(parents=True)
    upload = tmp_path / "uploads" / "u"
    upload.mkdir(parents=True)
    st = Studio(StudioConfig(options=None, workdir=tmp_path), renderer=object())
    assert not earlier.exists() and upload.exists()
    made = [st.new_clip_folder() for _ in range(MAX_CLIPS + 3)]
    assert sorted(st.clips_dir.iterdir()) == made[-MAX_CLIPS:]


def test_export_and_inversion_of_a_source_the_writer_cannot_write_are_mp4(tmp_path):
    """A camera's `.MTS` (or raw .h264, .mpg) opened in the studio: its inversion and exports are written
    as .mp4, as `fsvideo edit` names them; they kept `.MTS`, which no writer takes, and failed."""
    from types import SimpleNamespace as NS

    from fsvideo.studio.app import _export_path
    from fsvideo.studio.project import Project
    from fsvideo.studio.session import EditsBody

    for name, ext in (("camera.MTS", ".mp4"), ("clip.mov", ".mov"), ("photo.jpg", ".png")):
        p = NS(source=Path("/videos") / name, info=NS(is_image=name.endswith(".jpg")))
        out = _export_path(NS(workdir=tmp_path), p, EditsBody(edits=SEFA))
        assert out.parent == tmp_path / "exports" and out.suffix == ext, out
        assert Project._suffix(p) == ext


def test_malformed_bodies_are_one_line_errors(client):
    """A body that does not fit the endpoint was FastAPI's 422 {"detail": [...]} (no "error" for the page),
    and a 500 when the bad value was NaN (the answer repeated it, and JSON cannot hold it)."""
    c = client
    sid = c.post("/api/session").json()["sid"]
    url = f"/api/s/{sid}/render"
    js = {"Content-Type": "application/json"}
    cases = [(dict(content=b"{frame:", headers=js), "not valid JSON"),
             (dict(json=[1, 2]), "must be a JSON object"),
             (dict(content=b'{"frame": 1}', headers={"Content-Type": "text/plain"}), "must be a JSON object"),
             (dict(json={"frame": 1.5}), "frame 1.5 is not valid: input should be a valid integer"),
             (dict(content=b'{"frame": NaN}', headers=js), "frame nan is not valid"),
             (dict(json={"edits": [{"attr": "sefa:1"}]}), "edits[0].strength is missing"),
             (dict(json={"edits": [{"attr": "sefa:1", "strength": "x"}]}), "edits[0].strength 'x' is not valid")]
    for kw, want in cases:
        r = c.post(url, **kw)
        assert r.status_code == 422 and want in r.json()["error"] and "\n" not in r.json()["error"], (kw, r.text)
    r = c.post(f"/api/s/{sid}/open", json={})
    assert r.status_code == 422 and r.json()["error"] == "path is missing; add it to the request's JSON object"


def test_odd_face_ids_and_sefa_indices_are_400(client, media_dir):
    """face '²' passed str.isdigit and failed in int() (500), as did 5000 digits (int's digit limit);
    sefa:99 passed the name check and failed in the SeFa decomposition (k > style size: 500)."""
    c = client
    sid, _ = opened(c, media_dir)
    for body in (dict(face="²"), dict(face="9" * 5000), dict(face="١"),
                 dict(edits=[{"attr": "sefa:99", "strength": 1}]), dict(edits=[{"attr": "sefa:10", "strength": 1}])):
        for endpoint in ("render", "command"):
            r = c.post(f"/api/s/{sid}/{endpoint}", json=dict(dict(frame=1, edits=SEFA), **body))
            assert r.status_code == 400 and r.json()["error"], (endpoint, body, r.text)
    assert render(c, sid, face="0", edits=[{"attr": "sefa:9", "strength": 1}]).status_code == 200


def test_open_checks_the_span_and_the_path_first(client, media_dir):
    """A NaN start failed listing the frames (500), a negative one opened and failed later in the page,
    and '~nosuchuser/x.mp4' raised RuntimeError in expanduser (500)."""
    c = client
    sid = c.post("/api/session").json()["sid"]
    url, clip = f"/api/s/{sid}/open", str(media_dir / CLIP)
    for body in (f'{{"path": "{clip}", "start": NaN}}', f'{{"path": "{clip}", "end": Infinity}}',
                 f'{{"path": "{clip}", "start": -5}}', f'{{"path": "{clip}", "start": 0.5, "end": 0.5}}',
                 '{"path": "~nosuchuser_fsvideo/x.mp4"}'):
        r = c.post(url, content=body.encode(), headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"], (body, r.text)
        assert c.get(f"/api/s/{sid}/state").json()["project"] is None


def test_a_clip_outside_the_video_is_400(client, media_dir):
    """A clip at frame -100 or 10**9 started a job with a negative frame count that failed later
    ('no latents for frame 0', '--end 1.0 is not after --start 1.0')."""
    c = client
    sid, _ = opened(c, media_dir)
    for frame in (-100, -1, 30, 10**9):
        r = c.post(f"/api/s/{sid}/clip", json={"edits": SEFA, "frame": frame, "seconds": 0.5})
        assert r.status_code == 400 and f"frame {frame} is outside the video (0..29)" in r.json()["error"], r.text
    assert c.get(f"/api/s/{sid}/state").json()["jobs"] == []


def test_a_job_output_gone_from_disk_is_404(client, media_dir):
    """The file of a clip pruned by newer clips (MAX_CLIPS), or of an export the user deleted, was a 500
    (FileResponse fails while sending)."""
    c = client
    sid, _ = opened(c, media_dir)
    job = c.post(f"/api/s/{sid}/clip", json={"edits": SEFA, "frame": 3, "seconds": 0.2}).json()
    assert wait_job(c, sid, job["id"])["state"] == "done"
    output = c.app.state.studio.sessions[sid].jobs[job["id"]].output
    output.unlink()
    r = c.get(f"/api/s/{sid}/file/{job['id']}")
    assert r.status_code == 404 and "clip.mp4 is no longer on disk" in r.json()["error"], r.text
    assert "render the clip again" in r.json()["error"]


def test_two_exports_at_once_get_two_names(client, media_dir, monkeypatch):
    """Two tabs exporting the same edit at once both got `<video>.sefa1+3.mp4` (the name was free until
    the first finished), so the second export replaced the first's file."""
    import threading

    import fsvideo
    release = threading.Event()

    def slow_edit(source, out, **kw):                   # an export still running: nothing written yet
        release.wait(30)
        Path(out).write_bytes(b"video")
    monkeypatch.setattr(fsvideo, "edit_video", slow_edit)
    c = client
    (a, _), (b, _) = opened(c, media_dir), opened(c, media_dir)
    try:
        ja, jb = (c.post(f"/api/s/{s}/export", json={"edits": SEFA}).json() for s in (a, b))
        assert ja["name"] != jb["name"] and ja["command"].split(" -o ")[1] != jb["command"].split(" -o ")[1]
    finally:
        release.set()
    assert wait_job(c, a, ja["id"])["state"] == wait_job(c, b, jb["id"])["state"] == "done"


def test_pages_of_other_sites_cannot_post(client, media_dir):
    """A page of another site can send simple requests (form POST, no-cors fetch: no preflight) to
    127.0.0.1. It cannot read a session id, but 33 POST /api/session evicted the user's session and
    cancelled its export; any POST that a browser marks as from another origin is now a 403."""
    c = client
    sid = c.post("/api/session", headers={"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"}).json()["sid"]
    evil = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    for _ in range(33):
        r = c.post("/api/session", headers=evil)
        assert r.status_code == 403 and "cross-site request refused" in r.json()["error"]
    assert c.get(f"/api/s/{sid}/state").status_code == 200                   # the user's session is still there
    for headers in (evil, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://127.0.0.1:9999"}):
        r = c.post(f"/api/s/{sid}/open", content=f'{{"path": "{media_dir / CLIP}"}}'.encode(), headers=headers)
        assert r.status_code == 403, headers
        r = c.post(f"/api/s/{sid}/upload", content=(media_dir / CLIP).read_bytes(), headers=headers)
        assert r.status_code == 403, headers
    assert c.get(f"/api/s/{sid}/state").json()["project"] is None
    assert c.get("/", headers={"Origin": "http://evil.example"}).status_code == 200   # a link to the page is fine


def test_uploaded_directions_of_odd_dtypes_are_400(opts, renderer, workdir):
    """A .npy of strings or records was a 500 (TypeError in torch.as_tensor); a complex one was taken
    with its imaginary part dropped; a float32 one of 1e38 values became all zeros (its norm overflowed)."""
    c = make_client(opts, renderer, workdir)
    sid = c.post("/api/session").json()["sid"]

    def up(a, name):
        buf = io.BytesIO()
        np.save(buf, a)
        return c.post(f"/api/s/{sid}/direction", content=buf.getvalue(), headers={"X-Filename": name})
    n = renderer.runner.model.generator.style_dim
    for a in (np.array(["a"] * n), np.zeros(n, dtype=[("a", "f4")]), np.ones(n, np.complex64)):
        r = up(a, "odd.npy")
        assert r.status_code == 400 and f"holds {a.dtype} values, not real numbers" in r.json()["error"], r.text
    assert up(np.ones(n, np.int64), "ints.npy").status_code == 200
    from fsvideo.edits.directions import load_direction
    big = workdir / "big.npy"
    np.save(big, np.full(n, 1e38, np.float32))
    d = load_direction(big, 3, n)
    assert torch.allclose(d, torch.full((3, n), (3 * n) ** -0.5))


def test_an_image_too_large_to_decode_is_400(opts, renderer, workdir, tmp_path):
    """A 20000 x 12000 PNG (a few hundred kB) raised Pillow's DecompressionBombError: a 500 in the studio's
    upload, an internal error in `fsvideo edit`."""
    c = make_client(opts, renderer, workdir)
    sid = c.post("/api/session").json()["sid"]
    bomb = tmp_path / "bomb.png"
    Image.new("L", (20000, 12000)).save(bomb, optimize=True)
    r = c.post(f"/api/s/{sid}/upload", content=bomb.read_bytes(), headers={"X-Filename": "bomb.png"})
    assert r.status_code == 400 and "too large an image to read safely" in r.json()["error"], r.text
    assert "240000000 pixels" in r.json()["error"] and "scale it down" in r.json()["error"]


def test_a_video_deleted_or_changed_after_opening_is_said(client, media_dir, tmp_path):
    """Frames are decoded from the file as they are shown: after it was deleted a render was a 500
    (FileNotFoundError), after it was replaced the new file's frames were shown over the old latents."""
    import shutil
    c = client
    video = tmp_path / "copy.mp4"
    shutil.copy(media_dir / CLIP, video)
    sid = c.post("/api/session").json()["sid"]
    assert c.post(f"/api/s/{sid}/open", json={"path": str(video)}).status_code == 200
    assert wait_ready(c, sid)["project"]["status"]["state"] == "ready"
    video.unlink()
    r = render(c, sid, frame=20, view="original")
    assert r.status_code == 400 and "copy.mp4 was deleted or moved since the studio opened it" in r.json()["error"]
    for endpoint in ("export", "clip"):
        r = c.post(f"/api/s/{sid}/{endpoint}", json={"edits": SEFA, "frame": 3})
        assert r.status_code == 400 and "was deleted or moved" in r.json()["error"], r.text
    shutil.copy(media_dir / "videos/other/liveportrait-d13.mp4", video)
    r = render(c, sid, frame=21, view="original")
    assert r.status_code == 400 and "copy.mp4 was changed on disk since" in r.json()["error"]
    shutil.copy(media_dir / CLIP, video)                    # the same video again: opening it works again
    assert c.post(f"/api/s/{sid}/open", json={"path": str(video)}).status_code == 200
    assert wait_ready(c, sid)["project"]["status"]["state"] == "ready"
    assert render(c, sid, frame=22).status_code == 200


def test_an_upload_the_disk_cannot_hold_is_507(opts, renderer, workdir, monkeypatch):
    """An upload larger than the free space was written until the disk was full, then a 500 (OSError);
    now a declared size above the free space is refused before writing, and a full disk is said."""
    import errno
    import shutil
    from collections import namedtuple

    from fsvideo.studio import app as app_mod
    c = make_client(opts, renderer, workdir)
    sid = c.post("/api/session").json()["sid"]
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(2**40, 2**40 - 1000, 1000))
    r = c.post(f"/api/s/{sid}/upload", content=b"x" * 2000, headers={"X-Filename": "a.mp4"})
    assert r.status_code == 507 and "MB free" in r.json()["error"], r.text
    monkeypatch.undo()

    class Full:
        def __init__(self, *a):
            self.path = a[0]
            Path(a[0]).write_bytes(b"")

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(app_mod, "open", Full, raising=False)
    r = c.post(f"/api/s/{sid}/upload", content=b"x" * 2000, headers={"X-Filename": "b.mp4"})
    assert r.status_code == 507 and "No space left on device" in r.json()["error"], r.text
    assert not list((workdir / "uploads").rglob("b.mp4"))
    monkeypatch.undo()
    assert c.post("/api/session").status_code == 200


def slow_inversion(runs: dict):
    """A stand-in for ``invert_video`` that takes long, frame by frame: ``runs[name]`` says whether it
    is running or was stopped."""
    def slow_invert(source, out, progress=None, **kw):
        runs[Path(source).name] = "running"
        try:
            for i in range(3000):
                progress(i, 3000)
                time.sleep(0.01)
        except BaseException:
            runs[Path(source).name] = "stopped"
            raise
    return slow_invert


def test_opening_another_video_stops_an_inversion_no_tab_needs(opts, renderer, media_dir, tmp_path, monkeypatch):
    """Opening a video while another one inverts left the first inversion running with no tab to show
    it: each open added one more inversion on the CPU (hours each with the real models)."""
    import fsvideo
    runs = {}

    monkeypatch.setattr(fsvideo, "invert_video", slow_inversion(runs))
    c = make_client(opts, renderer, tmp_path)
    one, two = (c.post("/api/session").json()["sid"] for _ in range(2))
    video, image = media_dir / CLIP, media_dir / "images/wild/facerec-obama.jpg"
    studio = c.app.state.studio
    try:
        for sid in (one, two):
            assert c.post(f"/api/s/{sid}/open", json={"path": str(video)}).status_code == 200
        a = studio.sessions[one].project
        assert c.post(f"/api/s/{one}/open", json={"path": str(image)}).status_code == 200
        time.sleep(0.1)
        assert a.state == "inverting" and runs[video.name] == "running"        # tab two still has it open
        assert c.post(f"/api/s/{two}/open", json={"path": str(image)}).status_code == 200
        assert a.wait(10) is False and a.state == "abandoned" and runs[video.name] == "stopped"
        assert a.key not in studio.projects and not a.latents_path.exists()
        assert studio.sessions[two].project.state == "inverting"             # the image's goes on
        assert c.post(f"/api/s/{one}/open", json={"path": str(video)}).status_code == 200   # opened again: anew
        assert studio.sessions[one].project is not a and studio.sessions[one].project.state == "inverting"
    finally:
        for p in list(studio.projects.values()):
            p.abandon()
            p.wait(10)


def test_a_failed_inversion_is_said_and_reopening_retries(opts, renderer, media_dir, tmp_path, monkeypatch):
    """After the inversion failed, render and clip said 'not inverted yet; wait for the progress bar'
    (a wait without end), export 'still being inverted', and opening the video again kept the failure
    until the studio was restarted."""
    import fsvideo
    from fsvideo.errors import InputError

    def fails(*a, **kw):
        raise InputError("no face detector weights", hint="run fsvideo weights download dlib")
    monkeypatch.setattr(fsvideo, "invert_video", fails)
    c = make_client(opts, renderer, tmp_path)
    sid = c.post("/api/session").json()["sid"]
    assert c.post(f"/api/s/{sid}/open", json={"path": str(media_dir / CLIP)}).status_code == 200
    assert wait_ready(c, sid)["project"]["status"]["state"] == "failed"
    for endpoint in ("render", "clip", "export"):
        r = c.post(f"/api/s/{sid}/{endpoint}", json={"edits": SEFA, "frame": 3})
        assert r.status_code == 400, (endpoint, r.text)
        assert "the inversion of liveportrait-d18.mp4 failed: no face detector weights" in r.json()["error"]
        assert "open the video again to retry" in r.json()["error"]
    monkeypatch.undo()                                   # the cause fixed: opening it again inverts it
    assert c.post(f"/api/s/{sid}/open", json={"path": str(media_dir / CLIP)}).status_code == 200
    assert wait_ready(c, sid)["project"]["status"]["state"] == "ready"
    assert render(c, sid, frame=3).status_code == 200


def test_jobs_at_once_are_bounded_and_a_new_clip_replaces_the_tab_s_last(client, media_dir, monkeypatch):
    """Every POST clip/export started one more thread with its own models (a burst could exhaust memory,
    and a ninth clip at once deleted a running clip's folder); now a tab's new clip cancels its running
    one, and a request beyond MAX_JOBS running jobs is a 429."""
    import threading

    import fsvideo
    from fsvideo.studio.session import MAX_JOBS
    release = threading.Event()

    def slow_edit(source, out, progress=None, **kw):
        while not release.is_set():
            progress(0, 1)
            time.sleep(0.01)
        Path(out).write_bytes(b"video")
    monkeypatch.setattr(fsvideo, "edit_video", slow_edit)
    c = client
    sids = [opened(c, media_dir)[0] for _ in range(MAX_JOBS + 1)]
    try:
        first, second = (c.post(f"/api/s/{sids[0]}/clip", json={"edits": SEFA, "frame": f}).json() for f in (5, 9))
        assert wait_job(c, sids[0], first["id"], timeout=30)["state"] == "cancelled"
        jobs = [second] + [c.post(f"/api/s/{s}/export", json={"edits": SEFA}).json() for s in sids[1:MAX_JOBS]]
        assert all(j["state"] == "running" for j in jobs), jobs
        r = c.post(f"/api/s/{sids[-1]}/export", json={"edits": SEFA})
        assert r.status_code == 429 and f"{MAX_JOBS} exports or clips are running" in r.json()["error"]
        assert c.post(f"/api/s/{sids[1]}/cancel/{jobs[1]['id']}").status_code == 200
        assert c.post(f"/api/s/{sids[-1]}/export", json={"edits": SEFA}).status_code == 200
    finally:
        release.set()


def test_an_anamorphic_videos_frames_are_shown_on_square_pixels(client, media_dir, tmp_path):
    """A 16:9 DV clip stored as 4:3 pixels (SAR 64:45): the page showed its whole frames squeezed, as
    stored; they are now stretched as a player shows them.  The face crops are aligned on square pixels
    already (faces/aspect.py) and stay as they are."""
    from fractions import Fraction

    from fsvideo.video import VideoReader
    from fsvideo.video.synth import make_test_clip
    frames = [f.image[:, 40:440] for f, _ in zip(VideoReader(media_dir / CLIP), range(4))]    # 400x480
    src = tmp_path / "dv.mp4"
    make_test_clip(src, images=frames, fps=25, sar=Fraction(64, 45), audio=False)
    c = client
    sid = c.post("/api/session").json()["sid"]
    assert c.post(f"/api/s/{sid}/open", json={"path": str(src)}).status_code == 200
    assert wait_ready(c, sid)["project"]["status"]["state"] == "ready"
    for view in ("original", "composite"):
        assert pixels(render(c, sid, frame=1, view=view)).shape == (480, round(400 * 64 / 45), 3)
    assert pixels(render(c, sid, frame=1, view="inversion")).shape[:2] == (256, 256)


def test_json_bodies_over_the_limit_are_413(client):
    """A JSON request body had no size limit: the whole body was read into memory before the endpoint
    looked at it (any length, for every POST).  Bodies over 1 MiB are refused unread, declared or not;
    the uploads keep their own limits."""
    from fsvideo.studio.guard import MAX_JSON_BYTES
    c = client
    sid = c.post("/api/session").json()["sid"]
    big = b'{"frame": 1, "pad": "' + b"x" * MAX_JSON_BYTES + b'"}'
    for url in (f"/api/s/{sid}/render", f"/api/s/{sid}/open", "/api/session"):
        r = c.post(url, content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413, (url, r.text)
        assert "over the limit of 1 MiB" in r.json()["error"] and "\n" not in r.json()["error"]

    def chunks():                                  # no Content-Length: counted as it arrives
        for _ in range(3):
            yield b" " * (MAX_JSON_BYTES // 2)
        yield b"{}"
    r = c.post(f"/api/s/{sid}/render", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    r = c.post(f"/api/s/{sid}/command", json={"edits": SEFA, "pad": "x" * 1000})   # small bodies pass
    assert r.status_code in (200, 400) and "limit" not in r.text, r.text
    r = c.post(f"/api/s/{sid}/direction", content=b"\x93NUMPY" + b"x" * (MAX_JSON_BYTES + 10),
               headers={"X-Filename": "d.npy"})                 # an upload: its own limit (64 MiB)
    assert r.status_code == 400 and "413" not in r.text and "1 MiB" not in r.json()["error"], r.text


def test_an_evicted_session_s_inversion_is_stopped(opts, renderer, media_dir, tmp_path, monkeypatch):
    """A tab evicted by the session limit (MAX_SESSIONS) had its jobs cancelled but left its video's
    inversion running with no tab to show it, until some tab opened another video."""
    import fsvideo
    from fsvideo.studio.session import MAX_SESSIONS
    runs = {}

    monkeypatch.setattr(fsvideo, "invert_video", slow_inversion(runs))
    c = make_client(opts, renderer, tmp_path)
    studio = c.app.state.studio
    video, image = media_dir / CLIP, media_dir / "images/wild/facerec-obama.jpg"
    first, second = (c.post("/api/session").json()["sid"] for _ in range(2))
    try:
        assert c.post(f"/api/s/{first}/open", json={"path": str(video)}).status_code == 200
        assert c.post(f"/api/s/{second}/open", json={"path": str(image)}).status_code == 200
        a, b = studio.sessions[first].project, studio.sessions[second].project
        for _ in range(MAX_SESSIONS - 2):
            c.post("/api/session")
        time.sleep(0.1)
        assert a.state == b.state == "inverting"                             # nobody evicted yet
        c.post("/api/session")                                               # evicts the first tab
        assert first not in studio.sessions and second in studio.sessions
        assert a.wait(10) is False and a.state == "abandoned" and runs[video.name] == "stopped"
        assert a.key not in studio.projects
        assert b.state == "inverting" and runs[image.name] == "running"     # the other tab's goes on
    finally:
        for p in list(studio.projects.values()):
            p.abandon()
            p.wait(10)
