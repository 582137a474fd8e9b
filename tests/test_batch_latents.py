"""`fsvideo edit INPUTS --out-dir DIR --latents FOLDER`: a batch re-edits saved inversions, found by name."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from tiny_weights import make_tiny

from fsvideo.cli import main as cli_main
from fsvideo.edits.requests import EditRequest
from fsvideo.errors import InputError
from fsvideo.pipeline import batch as batch_mod
from fsvideo.pipeline.batch import BatchJob, run_batch
from fsvideo.pipeline.edit import RunOptions, edit_video
from fsvideo.video import VideoReader

CLIPS = ["videos/other/pyfeat-single_face.mp4", "videos/other/cremad-1001_DFA_ANG_XX.flv"]
NAMES = [c.split("/")[-1] for c in CLIPS]


@pytest.fixture
def inputs(media_dir, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for c in CLIPS:
        shutil.copy(media_dir / c, d)
    return d


def _opts(tiny, **kw):
    return RunOptions(**{"generator": tiny["gen"], "encoder": tiny["enc"], "detector": "dlib", "device": "cpu",
                         "end": 0.3, **kw})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("tiny"))


def _edit(tiny, latents=None, **kw):
    return BatchJob("edit", (EditRequest(tiny["dir"], 2.0),), _opts(tiny, **kw), latents=latents)


def test_batch_re_edits_each_videos_latents_and_resumes(tiny, inputs, tmp_path, monkeypatch):
    inv = tmp_path / "inverted"
    assert run_batch([inputs], inv, BatchJob("invert", (), _opts(tiny))).counts["done"] == 2
    out = tmp_path / "edited"
    # no detector runs in a re-edit: the faces come from the latents
    monkeypatch.setattr("fsvideo.faces.detect.make_detector", lambda *a, **k: pytest.fail("detector built"))
    r = run_batch([inputs], out, _edit(tiny, latents=inv))
    assert [row.status for row in r.rows] == ["done", "done"] and all(row.frames == 9 for row in r.rows)
    monkeypatch.undo()
    # the same pixels as a single re-edit of each video with its own latents file
    for name in NAMES:
        src = inputs / name
        one = edit_video(src, tmp_path / f"one-{src.stem}{src.suffix}", edits=[EditRequest(tiny["dir"], 2.0)],
                         options=_opts(tiny), latents=inv / f"{src.stem}.latents")
        a = [f.image for f in VideoReader(one.output)]
        b = [f.image for f in VideoReader(out / f"{src.stem}.dir+2{src.suffix}")]
        assert len(a) == len(b) == 9 and all(np.array_equal(x, y) for x, y in zip(a, b))
    # started again: skipped; a changed latents file (inverted with another seed) is done again
    monkeypatch.setattr(batch_mod.BatchWorker, "components", lambda self: pytest.fail("models loaded"))
    assert [row.status for row in run_batch([inputs], out, _edit(tiny, latents=inv)).rows] == ["skipped", "skipped"]
    monkeypatch.undo()
    run_batch([inputs / NAMES[1]], inv, BatchJob("invert", (), _opts(tiny, seed=5)))
    r = run_batch([inputs], out, _edit(tiny, latents=inv))
    assert [(row.input.split("/")[-1], row.status) for row in r.rows] == [(NAMES[1], "done"), (NAMES[0], "skipped")]
    # a video whose latents are missing: its own one-line error, naming the file and the fix
    (inv / "pyfeat-single_face.latents").unlink()
    r = run_batch([inputs], tmp_path / "again", _edit(tiny, latents=inv))
    bad = next(row for row in r.rows if row.status == "failed")
    assert r.counts == {"done": 1, "skipped": 0, "failed": 1}
    assert str(inv / "pyfeat-single_face.latents") in bad.error and "fsvideo invert" in bad.error
    assert "\n" not in bad.error


def test_latents_argument_errors(tiny, inputs, tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        run_batch([inputs], tmp_path / "o", _edit(tiny, latents=tmp_path / "nowhere"))
    one = tmp_path / "x.latents"
    one.write_bytes(b"x")
    with pytest.raises(InputError, match="is one file, but 2 inputs"):
        run_batch([inputs], tmp_path / "o", _edit(tiny, latents=one))
    with pytest.raises(InputError, match="fsvideo invert"):
        BatchJob("invert", (), _opts(tiny), latents=tmp_path)


def test_cli_edit_latents_folder_in_batch_and_single_runs(tiny, inputs, tmp_path, capsys):
    inv = tmp_path / "inverted"
    model = ["--generator", tiny["gen"], "--encoder", tiny["enc"], "--detector", "dlib", "--device", "cpu",
             "--end", "0.2"]
    cli_main(["invert", str(inputs), "--out-dir", str(inv), "-q", *model])
    edit = ["edit", "--direction", tiny["dir"], "--strength", "2", "--latents", str(inv), *model]
    cli_main([*edit, str(inputs), "--out-dir", str(tmp_path / "edited"), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in res["inputs"]] == ["done", "done"]
    # one video: the folder's file for it
    cli_main([*edit, str(inputs / NAMES[0]), "-o", str(tmp_path / "single.mp4"), "--json"])
    assert json.loads(capsys.readouterr().out)["detector"] == "latents"
    with pytest.raises(SystemExit) as e:                   # a video the folder has no latents for
        cli_main([*edit, str(tmp_path / "single.mp4"), "-o", str(tmp_path / "s2.mp4")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{inv / 'single.latents'}: no latents file for" in err and "fsvideo invert" in err
