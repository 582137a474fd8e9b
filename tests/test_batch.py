"""`fsvideo edit|invert INPUT... --out-dir`: many inputs, bad ones reported, restartable, models loaded once."""
from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import pytest
from tiny_weights import make_tiny

from fsvideo.cli import main as cli_main
from fsvideo.edits.requests import EditRequest
from fsvideo.errors import InputError
from fsvideo.pipeline import batch as batch_mod
from fsvideo.pipeline.batch import BatchJob, expand_inputs, run_batch
from fsvideo.pipeline.edit import RunOptions
from fsvideo.pipeline.manifest import STATE_DIR, TABLE_NAME
from fsvideo.video import VideoReader

CLIPS = ["videos/other/pyfeat-single_face.mp4", "videos/other/cremad-1001_DFA_ANG_XX.flv"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def inputs(media_dir, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for c in CLIPS:
        shutil.copy(media_dir / c, d / c.split("/")[-1])
    (d / "broken.mp4").write_bytes(b"not a video" * 50)
    (d / "notes.txt").write_text("not picked up from a folder")
    return d


def _job(tiny, **kw):
    opts = {"generator": tiny["gen"], "encoder": tiny["enc"], "detector": "dlib", "device": "cpu", "end": 0.3}
    opts.update(kw)
    return BatchJob("edit", (EditRequest(tiny["dir"], 2.0),), RunOptions(**opts))


def test_expand_inputs(inputs, tmp_path):
    files, bad = expand_inputs([inputs, str(inputs / "*.flv"), inputs / "missing.mp4", str(tmp_path / "none*.mp4")])
    assert [p.name for p in files] == ["broken.mp4", "cremad-1001_DFA_ANG_XX.flv", "pyfeat-single_face.mp4"]
    assert [r.error.split(": ")[-1] for r in bad] == ["no such file", "the pattern matches no file"]


def test_bad_file_among_good_ones_and_restart(tiny, inputs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    seen = []
    r = run_batch([inputs], out, _job(tiny), on_row=seen.append)
    assert [(row.input.split("/")[-1], row.status) for row in r.rows] == [
        ("broken.mp4", "failed"), ("cremad-1001_DFA_ANG_XX.flv", "done"), ("pyfeat-single_face.mp4", "done")]
    assert "broken.mp4" in r.rows[0].error and "FFmpeg" in r.rows[0].error
    assert r.counts == {"done": 2, "skipped": 0, "failed": 1} and len(seen) == 3
    assert {p.name for p in out.iterdir()} == {"cremad-1001_DFA_ANG_XX.dir+2.flv", "pyfeat-single_face.dir+2.mp4",
                                              TABLE_NAME, STATE_DIR}
    assert all(row.frames == 9 and row.faces_edited == 9 for row in r.rows[1:])
    table = json.loads((out / TABLE_NAME).read_text())
    assert table["counts"] == r.counts and table["frames"] == 18
    assert not any((out / STATE_DIR / "work").iterdir())          # nothing left of the failed input's work

    # the same run again skips both finished outputs without loading the networks
    monkeypatch.setattr(batch_mod.BatchWorker, "components", lambda self: pytest.fail("models loaded"))
    r2 = run_batch([inputs], out, _job(tiny))
    assert [row.status for row in r2.rows] == ["failed", "skipped", "skipped"]
    monkeypatch.undo()

    # a damaged output and a changed setting are done again (the batch replaces its own outputs)
    made = out / "pyfeat-single_face.dir+2.mp4"
    made.write_bytes(made.read_bytes()[:-100])
    r3 = run_batch([inputs / "pyfeat-single_face.mp4"], out, _job(tiny))
    assert [row.status for row in r3.rows] == ["done"]
    before = [f.image for f in VideoReader(made)]
    r4 = run_batch([inputs / "pyfeat-single_face.mp4"], out, _job(tiny, seed=1))
    assert [row.status for row in r4.rows] == ["done"]
    assert any(not np.array_equal(a, f.image) for a, f in zip(before, VideoReader(made)))


def test_interrupted_batch_resumes(tiny, inputs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real = batch_mod.edit_video
    calls = []

    def stop_on_second(src, *a, **kw):
        calls.append(src)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(src, *a, **kw)
    monkeypatch.setattr(batch_mod, "edit_video", stop_on_second)
    good = [inputs / "cremad-1001_DFA_ANG_XX.flv", inputs / "pyfeat-single_face.mp4"]
    with pytest.raises(KeyboardInterrupt):
        run_batch(good, out, _job(tiny))
    assert sorted(p.name for p in out.iterdir()) == [STATE_DIR, "cremad-1001_DFA_ANG_XX.dir+2.flv"]
    # a run killed harder leaves work files behind: they are cleared, never taken for an output
    junk = out / STATE_DIR / "work" / "pyfeat-single_face.dir+2.mp4"
    junk.mkdir(parents=True, exist_ok=True)
    (junk / "pyfeat-single_face.dir+2.mp4").write_bytes(b"half")
    monkeypatch.setattr(batch_mod, "edit_video", real)
    r = run_batch(good, out, _job(tiny))
    assert [row.status for row in r.rows] == ["skipped", "done"]
    assert r.rows[1].frames == 9 and not junk.exists()


def test_models_loaded_once_and_next_video_prefetched(tiny, inputs, tmp_path, monkeypatch):
    from fsvideo.video import prefetch
    started = []
    orig_start = prefetch.PrefetchReader.start

    def start(self):
        started.append((self.reader.path.name, threading.current_thread().name))
        return orig_start(self)
    monkeypatch.setattr(prefetch.PrefetchReader, "start", start)
    loads = []
    orig = batch_mod.BatchWorker.components

    def counting(self):
        loads.append(self._model is None)
        return orig(self)
    monkeypatch.setattr(batch_mod.BatchWorker, "components", counting)
    good = [inputs / "cremad-1001_DFA_ANG_XX.flv", inputs / "pyfeat-single_face.mp4"]
    r = run_batch(good, tmp_path / "out", _job(tiny))
    assert r.counts["done"] == 2
    assert loads == [True, False]                          # loaded for the first video, kept for the second
    # the second video's decoder was started by the first one's decoding thread, when it ran dry
    assert ("pyfeat-single_face.mp4", "fsvideo-prefetch") in started


def test_prefetch_reader_decodes_ahead(media_dir):
    from fsvideo.video.prefetch import PrefetchReader
    src = media_dir / CLIPS[0]
    nxt = PrefetchReader(VideoReader(src, end=0.3), depth=4)
    cur = PrefetchReader(VideoReader(src, end=0.2), depth=4, on_exhausted=nxt.start)
    a = [f.index for f in cur]
    deadline = time.time() + 30
    while nxt._q.qsize() < 4 and time.time() < deadline:
        time.sleep(0.05)
    b = [f.index for f in nxt]
    assert a == list(range(6)) and b == list(range(9)) and nxt.frames_before_use == 4
    with pytest.raises(RuntimeError):
        list(nxt)


def test_cli_batch_json_and_exit_code(tiny, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    (out).mkdir()
    (out / "pyfeat-single_face.dir+2.mp4").write_bytes(b"the user's own file")
    args = ["edit", str(inputs / "pyfeat-single_face.mp4"), str(inputs / "broken.mp4"), "--out-dir", str(out),
            "--direction", tiny["dir"], "--strength", "2", "--generator", tiny["gen"], "--encoder", tiny["enc"],
            "--detector", "dlib", "--device", "cpu", "--end", "0.2", "--json"]
    with pytest.raises(SystemExit) as e:
        cli_main(args)
    assert e.value.code == 1
    res = json.loads(capsys.readouterr().out)
    st = {r["input"].split("/")[-1]: (r["status"], r["error"]) for r in res["inputs"]}
    assert st["broken.mp4"][0] == "failed"
    assert st["pyfeat-single_face.mp4"][0] == "failed" and "--overwrite" in st["pyfeat-single_face.mp4"][1]
    assert (out / "pyfeat-single_face.dir+2.mp4").read_bytes() == b"the user's own file"
    with pytest.raises(SystemExit) as e:
        cli_main(args[:-1] + ["--overwrite", "-q"])
    assert e.value.code == 1                                  # broken.mp4 still fails
    assert len(list(VideoReader(out / "pyfeat-single_face.dir+2.mp4"))) == 6


def test_cli_batch_argument_errors(tiny, inputs, tmp_path):
    from fsvideo.cli.batch import run
    with pytest.raises(InputError, match="--out-dir"):
        run("edit", (str(inputs),), None, options=RunOptions(), split_time=False, split_context=1.0, quiet=True,
            as_json=False, single_only={})
    with pytest.raises(InputError, match="-o/--output names one output, but 2 inputs were given"):
        run("edit", ("a.mp4", "b.mp4"), str(tmp_path), options=RunOptions(), split_time=False, split_context=1.0,
            quiet=True, as_json=False, single_only={"-o/--output": "x.mp4"})
    # one folder given with -o (or without --out-dir): the message names the folder, not "several inputs"
    with pytest.raises(InputError, match=f"-o/--output names one output, but {inputs} is a folder"):
        run("edit", (str(inputs),), None, options=RunOptions(), split_time=False, split_context=1.0,
            quiet=True, as_json=False, single_only={"-o/--output": "x.mp4"})
    with pytest.raises(InputError, match=r"clip\*\.mp4 is a pattern \(no file has that name\): a batch needs --out-dir"):
        run("edit", (str(inputs / "clip*.mp4"),), None, options=RunOptions(), split_time=False, split_context=1.0,
            quiet=True, as_json=False, single_only={})
    with pytest.raises(InputError, match="would both write"):
        d2 = tmp_path / "other"
        d2.mkdir()
        shutil.copy(inputs / "pyfeat-single_face.mp4", d2)
        run_batch([inputs / "pyfeat-single_face.mp4", d2 / "pyfeat-single_face.mp4"], tmp_path / "o", _job(tiny))


def test_batch_invert_writes_video_and_latents(tiny, inputs, tmp_path):
    job = BatchJob("invert", (), _job(tiny).options)
    r = run_batch([inputs / "pyfeat-single_face.mp4"], tmp_path / "out", job)
    assert r.rows[0].status == "done"
    assert (tmp_path / "out" / "pyfeat-single_face.inversion.mp4").is_file()
    assert (tmp_path / "out" / "pyfeat-single_face.latents").is_file()
    r2 = run_batch([inputs / "pyfeat-single_face.mp4"], tmp_path / "out", job)
    assert r2.rows[0].status == "skipped"


def test_a_bad_setting_stops_the_batch(tiny, inputs, tmp_path):
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.ones((1, 7), np.float32))
    job = BatchJob("edit", (EditRequest(str(wrong), 1.0),), _job(tiny).options)
    with pytest.raises(InputError, match="wrong.npy"):      # one error for the batch, not one per input
        run_batch([inputs / "pyfeat-single_face.mp4", inputs / "cremad-1001_DFA_ANG_XX.flv"], tmp_path / "o", job)


def test_outputs_in_the_input_folder_are_not_taken_for_inputs(tiny, inputs, tmp_path):
    (inputs / "broken.mp4").unlink()
    (inputs / "cremad-1001_DFA_ANG_XX.flv").unlink()
    r = run_batch([inputs], inputs, _job(tiny))
    assert [row.status for row in r.rows] == ["done"]
    r = run_batch([inputs], inputs, _job(tiny))                       # not pyfeat-single_face.dir+2.dir+2.mp4
    assert [(row.input.split("/")[-1], row.status) for row in r.rows] == [("pyfeat-single_face.mp4", "skipped")]


@pytest.mark.parametrize("text", ["[1, 2, 3]", '"a string"', '{"input_sha256": "s", "settings_key": "k", "outputs": "x"}'])
def test_a_record_that_is_not_a_record_means_made_again(tmp_path, text):
    """A record file holding valid JSON of another shape (a list, a string, outputs not a mapping: damage,
    another version) raised AttributeError, an internal error on every later run of the batch."""
    from fsvideo.pipeline.manifest import Manifest
    m = Manifest(tmp_path)
    m.ensure()
    out = tmp_path / "talk.dir+2.mp4"
    out.write_bytes(b"video")
    m.path(out.name).write_text(text)
    assert m.finished(out.name, "s", "k", {"video": out}) is None
    assert m.made_by_us(out.name)                       # still the batch's own output: replaced without --overwrite


def test_an_out_dir_that_cannot_hold_the_records_is_one_line(tiny, inputs, tmp_path):
    """A file named .fsvideo-batch (or an --out-dir under a file) raised NotADirectoryError, an internal
    error; now an OutputError naming the folder, before any work."""
    from fsvideo.errors import OutputError
    out = tmp_path / "out"
    out.mkdir()
    (out / STATE_DIR).write_text("not a folder")
    with pytest.raises(OutputError, match=f"cannot write the batch's records in {out / STATE_DIR}"):
        run_batch([inputs / "pyfeat-single_face.mp4"], out, _job(tiny))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="cannot create --out-dir .*afile/sub"):
        run_batch([inputs / "pyfeat-single_face.mp4"], tmp_path / "afile" / "sub", _job(tiny))
