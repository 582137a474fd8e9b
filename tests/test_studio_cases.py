"""`fsvideo studio` API in what a real user meets beyond single requests: a reloaded tab, two tabs, a copy of
a video already inverted, a video without faces.  Fixtures of tests/test_studio_api.py (tiny seeded weights,
1 s of a shared clip)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from test_studio_api import CLIP, SEFA, client, opened, opts, pixels, render, renderer, tiny, wait_ready, workdir  # noqa: F401

pytest.importorskip("fastapi", reason="fsvideo studio needs fastapi (pip install 'fsvideo[studio]')")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")


def test_a_reloaded_tab_gets_its_session_back(client, media_dir):  # noqa: F811
    """POST /api/session {resume: sid} gives back a session the server still has (a reloaded tab keeps its
    video, uploads and jobs); an unknown one (the server restarted) gets a new session."""
    sid, _ = opened(client, media_dir)
    r = client.post("/api/session", json={"resume": sid}).json()
    assert r["sid"] == sid and r["resumed"] and r["video"] == Path(CLIP).name
    r = client.post("/api/session", json={"resume": "gone"}).json()
    assert r["sid"] != sid and not r["resumed"] and r["video"] is None
    assert not client.post("/api/session").json()["resumed"]
    assert client.post("/api/session", json={"resume": "x" * 65}).status_code == 422


def test_a_frame_without_any_face_says_so(client, media_dir):  # noqa: F811
    """A frame with no face at all (pyfeat-no_face.mp4) said 'no selected face in this frame' with every face
    picked, as if a face had been left out."""
    sid = client.post("/api/session").json()["sid"]
    assert client.post(f"/api/s/{sid}/open", json={"path": str(media_dir / "videos/other/pyfeat-no_face.mp4"),
                                                   "end": 0.3}).status_code == 200
    st = wait_ready(client, sid)
    assert st["project"]["timeline"]["tracks"] == [] and st["project"]["status"]["state"] == "ready"
    for view in ("composite", "edit"):
        r = render(client, sid, frame=2, view=view)
        assert r.status_code == 200 and r.headers["x-note"] == "no face in this frame"


def test_two_tabs_uploading_directions_of_the_same_name_each_get_theirs(client, media_dir, tiny):  # noqa: F811
    """Each tab's first upload of 'd.npy' is 'upload:1:d.npy': the renderer cached directions by that name,
    so the second tab's edit used the first tab's direction."""
    a, _ = opened(client, media_dir)
    b, _ = opened(client, media_dir)
    d = np.load(tiny["dir"])
    frames = []
    for sid, direction in ((a, d), (b, -d)):
        buf = io.BytesIO()
        np.save(buf, direction)
        up = client.post(f"/api/s/{sid}/direction", content=buf.getvalue(), headers={"X-Filename": "d.npy"}).json()
        assert up["attr"] == "upload:1:d.npy"
        frames.append(pixels(render(client, sid, edits=[{"attr": up["attr"], "strength": 3.0}], view="edit")))
    base = pixels(render(client, a, edits=[], view="edit"))
    assert np.abs(frames[0] - frames[1]).mean() > 1            # opposite directions: opposite edits
    assert np.abs(frames[0] - base).mean() > 1 and np.abs(frames[1] - base).mean() > 1


def test_a_copy_of_an_inverted_video_keeps_its_own_name(client, media_dir):  # noqa: F811
    """The same bytes uploaded under another name shared the first project: the page named the first file,
    and the export and its command read that file, not the one this tab opened.  The copy now has its own
    project on the cached latents (ready at once), under its own name."""
    a, _ = opened(client, media_dir)
    b = client.post("/api/session").json()["sid"]
    r = client.post(f"/api/s/{b}/upload", content=(media_dir / CLIP).read_bytes(), headers={"X-Filename": "copy.mp4"})
    assert r.status_code == 200 and r.json()["video"] == "copy.mp4"
    st = client.get(f"/api/s/{b}/state").json()["project"]
    assert st["video"] == "copy.mp4" and st["status"]["state"] == "ready"
    command = client.post(f"/api/s/{b}/command", json={"edits": SEFA}).json()["command"]
    assert "/copy.mp4 --latents" in command and CLIP not in command and "-o " in command and "copy.sefa1+3" in command
    assert client.get(f"/api/s/{a}/state").json()["project"]["video"] == Path(CLIP).name
