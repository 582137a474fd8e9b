"""Awkward inputs and paths through the real CLI (session 7 sweep): each case either gives the right
result or one line that names the file and the fix, and leaves no half-written output.

Media are made in tmp_path (a few small frames; tiny seeded weights), so each test takes seconds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from test_edit_e2e import cli     # the real entry point, its error handling included: (exit code, output)
from tiny_weights import make_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("tiny_edges"))


def one_line_error(code: int, text: str) -> str:
    assert code == 2 and "Traceback" not in text and "internal error" not in text, text
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    return lines[0]


def small_clip(path: Path, n: int = 3, size: int = 32) -> Path:
    from fsvideo.video.synth import make_test_clip
    make_test_clip(path, n_frames=n, width=size, height=size, audio=False)
    return path


def test_invert_latents_out_equal_to_the_video_output_is_refused_before_the_models_load(tiny, tmp_path, capsys,
                                                                                        monkeypatch):
    """`invert x.mp4 -o r.mp4 --latents-out r.mp4`: one file for two outputs.  Before, the run went to its
    end and failed there ("appeared while writing", the reconstruction lost), and with --overwrite it
    exited 0 with the latents written over the video."""
    from fsvideo.pipeline import jobs

    def no_model(*a, **k):
        raise AssertionError("the models were loaded for a run that cannot write its outputs")

    monkeypatch.setattr(jobs, "load_model", no_model)
    src = small_clip(tmp_path / "clip.mp4")
    for extra in ([], ["--overwrite"]):
        code, text = cli(capsys, "invert", src, "-o", tmp_path / "r.mp4", "--latents-out", tmp_path / "r.mp4",
                         "--generator", tiny["gen"], "--encoder", tiny["enc"], "--detector", "dlib", *extra)
        line = one_line_error(code, text)
        assert str(tmp_path / "r.mp4") in line and "--latents-out" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_a_clock_that_jumps_back_is_a_one_line_error_naming_the_file(tiny, tmp_path, capsys):
    """Two MPEG-TS clips joined end to end (`cat a.ts b.ts`, as cameras' .MTS files often are): the second
    clip's clock starts again at 0.  Before, every frame after the jump was put one tick after the last,
    and the run failed at its very end with "cannot finish writing ... check disk space" (the audio copy
    refused the backwards packets)."""
    from fsvideo.errors import InputError
    from fsvideo.video import VideoReader
    from fsvideo.video.synth import make_test_clip

    one = tmp_path / "one.ts"
    make_test_clip(one, n_frames=6, width=32, height=32, fps=25)
    src = tmp_path / "joined clip.ts"
    src.write_bytes(one.read_bytes() * 2)
    one.unlink()
    with pytest.raises(InputError, match="jump back at frame 6"):
        list(VideoReader(src))
    assert len(list(VideoReader(src, end=0.2))) == 5           # the part before the jump still reads
    code, text = cli(capsys, "edit", src, "-o", tmp_path / "out.mp4", "--generator", tiny["gen"], "--encoder",
                     tiny["enc"], "--detector", "dlib", "--mask", "hull", "--direction", tiny["dir"], "-q")
    line = one_line_error(code, text)
    assert str(src) in line and "jump back" in line and "--end" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["joined clip.ts"]


def test_an_mkv_cut_short_or_damaged_is_said_not_silently_shortened(tmp_path, caplog):
    """MKV and WebM hold no frame count: a file cut at 60 % (a download stopped), or bytes damaged inside a
    cluster (the demuxer gives up on the rest of it), decoded fewer frames without a word and the output
    was silently shorter.  Now the video's declared length (its DURATION tag) is compared with where it
    stopped; the complete file gets no warning."""
    import logging

    from fsvideo.video import VideoReader
    from fsvideo.video.synth import make_test_clip

    whole = tmp_path / "whole.mkv"
    make_test_clip(whole, n_frames=25, width=32, height=32, fps=25, audio=False)
    data = whole.read_bytes()
    cut = tmp_path / "cut clip.mkv"
    cut.write_bytes(data[: len(data) * 6 // 10])
    with caplog.at_level(logging.WARNING, logger="fsvideo.video.reader"):
        assert len(list(VideoReader(whole))) == 25
        assert not caplog.records
        n = len(list(VideoReader(cut)))
    assert 0 < n < 25
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and str(cut) in msgs[0] and "lasts 1.00 s" in msgs[0] and f"({n} frames)" in msgs[0], msgs


_INTERRUPT_DURING_IMPORT = """
import importlib.abc, os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)


class CtrlCOnTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch":                 # Ctrl-C as `import torch` begins
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None


sys.meta_path.insert(0, CtrlCOnTorch())
from fsvideo.cli import main
try:
    main(sys.argv[1:])
finally:
    torch = sys.modules.get("torch")
    print("torch imported whole:", torch is not None and hasattr(torch, "Tensor"), flush=True)
"""


@pytest.mark.parametrize("command", ["edit", "invert", "metrics", "train", "studio"])
def test_ctrl_c_during_the_torch_import_stops_after_it_cleanly(tiny, tmp_path, command):
    """Ctrl-C in the first seconds of a run landed inside `import torch`: 1 run in 16 aborted there ("terminate
    called after throwing an instance of 'pybind11::error_already_set'", "Fatal Python error: Aborted").
    Now the signal waits for the import to end and the run stops as from any other Ctrl-C: exit 130, the
    one line, nothing written.  Every command that runs the networks imports torch this way."""
    import subprocess
    import sys

    src = small_clip(tmp_path / "clip.mp4")
    models = ["--generator", tiny["gen"], "--encoder", tiny["enc"]]
    args = {"edit": ["edit", src, "-o", tmp_path / "out.mp4", *models, "--detector", "dlib", "--direction", tiny["dir"]],
            "invert": ["invert", src, "-o", tmp_path / "out.mp4", *models, "--detector", "dlib"],
            "metrics": ["metrics", src, "--out", tmp_path / "metrics", *models],
            "train": ["train", "--config", "tiny", "--out", tmp_path / "run"],
            "studio": ["studio", src, "--no-browser", "--port", "0", "--workdir", tmp_path / "work", *models]}[command]
    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", _INTERRUPT_DURING_IMPORT, *map(str, args)], cwd=repo,
                       env={**__import__("os").environ, "PYTHONPATH": str(repo)}, capture_output=True, text=True,
                       timeout=120)
    text = r.stdout + r.stderr
    assert r.returncode == 130 and "interrupted: no output was written" in text, text
    assert "torch imported whole: True" in text and "Traceback" not in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_a_bad_latents_out_path_names_latents_out_in_its_hint(tiny, tmp_path, capsys):
    """`invert x.mp4 --latents-out missing/x.latents` said "choose another -o": the option to change is
    --latents-out (-o is the reconstruction video, which was fine)."""
    src = small_clip(tmp_path / "clip.mp4")
    (tmp_path / "taken.latents").write_text("a file")
    for lat, wanted in ((tmp_path / "missing" / "x.latents", "does not exist"), (tmp_path / "taken.latents",
                                                                                  "already exists")):
        code, text = cli(capsys, "invert", src, "-o", tmp_path / "r.mp4", "--latents-out", lat,
                         "--generator", tiny["gen"], "--encoder", tiny["enc"], "--detector", "dlib")
        line = one_line_error(code, text)
        assert wanted in line and "--latents-out" in line and " -o" not in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "taken.latents"]


def test_a_file_named_with_a_leading_dash_gets_a_hint_that_works(tiny, tmp_path, capsys, monkeypatch):
    """`fsvideo edit -x.mp4` said only "No such option '-x'" (and `-o.mp4`, "Missing argument"): the error
    now names the file and both ways to pass it, and both ways work."""
    monkeypatch.chdir(tmp_path)
    small_clip(tmp_path / "-x.mp4")
    (tmp_path / "-o.mp4").write_bytes((tmp_path / "-x.mp4").read_bytes())
    for name in ("-x.mp4", "-o.mp4"):
        code, text = cli(capsys, "edit", name, "--direction", tiny["dir"])
        line = one_line_error(code, text)
        assert f"{name} is a file" in line and f"./{name}" in line and "after --" in line, line
    common = ["--generator", tiny["gen"], "--encoder", tiny["enc"], "--detector", "dlib", "--direction", tiny["dir"]]
    assert cli(capsys, "edit", "./-x.mp4", "-o", "a.mp4", *common)[0] == 0
    assert cli(capsys, "edit", "-o", "b.mp4", *common, "--", "-x.mp4")[0] == 0
    assert {"a.mp4", "b.mp4"} <= {p.name for p in tmp_path.iterdir()}


def test_align_into_a_folder_that_cannot_be_moved_aside_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    """`fsvideo align x.png -o MOUNTPOINT` (an existing empty folder that is a mount point: rename gives
    EBUSY) was "internal error: OSError: [Errno 16] Device or resource busy"; now one line naming the
    folder, which is left as it was, and no temporary folder stays behind."""
    import errno
    import os

    from PIL import Image
    src = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(src)
    out = tmp_path / "mnt"
    out.mkdir()
    real = os.replace

    def replace(a, b):
        if Path(a) == out:
            raise OSError(errno.EBUSY, "Device or resource busy")
        return real(a, b)

    monkeypatch.setattr(os, "replace", replace)
    code, text = cli(capsys, "align", src, "-o", out, "--detector", "dlib")
    line = one_line_error(code, text.replace("face detector: dlib", ""))
    assert str(out) in line and "Device or resource busy" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnt", "photo.png"] and not any(out.iterdir())


def test_a_face_in_a_very_wide_or_tall_frame_is_found(media_dir):
    """Detection runs on a copy shrunk to --detect-size (640) on the longer side: a 4000x200 strip was
    shrunk 6x and its 108 px face became 17 px, so no face was ever found (edit and align passed every
    frame through).  Frames up to 16:9 are shrunk exactly as before."""
    from PIL import Image

    from fsvideo.faces import make_detector
    from fsvideo.faces.detect import _shrink_factor

    face = np.asarray(Image.open(media_dir / "images/aligned/ffhq-lt-00001.jpg").convert("RGB").resize((200, 200)))
    wide, tall = np.full((200, 4000, 3), 128, np.uint8), np.full((4000, 200, 3), 128, np.uint8)
    wide[:, 1300:1500] = face
    tall[2600:2800] = face
    det = make_detector("dlib", max_side=640)
    for image in (wide, tall):
        faces = det.detect(image)
        assert len(faces) == 1, len(faces)
    for h, w in ((1080, 1920), (1920, 1080), (540, 960), (1536, 2048), (480, 640), (2160, 3840)):
        assert _shrink_factor((h, w), 640) == min(1.0, 640 / max(h, w))
    assert _shrink_factor((200, 4000), 640) == 1.0 and _shrink_factor((1080, 2560), 640) == 360 / 1080


def test_long_output_names_work_up_to_the_file_systems_limit_and_fail_in_one_line_past_it(tiny, tmp_path, capsys):
    """A 254-byte output name is allowed, but the temporary name beside it passed 255 bytes; a 300-character
    name (or an input whose default output name grows past 255) failed in Path.exists(): both were
    "internal error: OSError: [Errno 36] File name too long"."""
    src = small_clip(tmp_path / "clip.mp4")
    common = ["--generator", tiny["gen"], "--encoder", tiny["enc"], "--detector", "dlib", "--direction", tiny["dir"]]
    ok = tmp_path / ("é" * 125 + ".mp4")                           # 254 bytes of UTF-8
    code, text = cli(capsys, "edit", src, "-o", ok, *common)
    assert code == 0 and ok.is_file(), text
    for out in (tmp_path / ("b" * 300 + ".mp4"), None):
        if out is None:                                            # the default name: INPUT.dir+1.mp4
            src = tmp_path / ("a" * 248 + ".mp4")
            src.write_bytes((tmp_path / "clip.mp4").read_bytes())
        code, text = cli(capsys, "edit", src, *(["-o", out] if out else []), *common)
        line = one_line_error(code, text)
        assert "File name too long" in line and "shorter name with -o" in line, line
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_input_and_folder_paths_past_the_file_systems_limit_are_one_line_errors(tiny, tmp_path, capsys):
    """Path.exists() and .is_dir() raise OSError for a name past 255 bytes: `edit`/`invert` of such an
    input, `--latents` of one and `align -o` of one were "internal error: OSError: [Errno 36] File name
    too long"."""
    src = small_clip(tmp_path / "clip.mp4")
    long = tmp_path / ("b" * 300)
    models = ["--generator", tiny["gen"], "--encoder", tiny["enc"], "--detector", "dlib"]
    cases = [("edit", long.with_suffix(".mp4"), "--direction", tiny["dir"], *models),
             ("invert", long.with_suffix(".mp4"), *models),
             ("edit", src, "--latents", long.with_suffix(".latents"), "--direction", tiny["dir"], *models),
             ("align", src, "-o", long, "--detector", "dlib")]
    for args in cases:
        code, text = cli(capsys, *args)
        line = one_line_error(code, text)
        assert "File name too long" in line and "bbbb" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_garbage_inside_an_mp4_names_the_end_that_still_decodes(tiny, tmp_path, capsys):
    """2000 random bytes in the middle of an MP4's video data: the decoder stops there.  The error said
    "process only the good part with --end" without a time (and "at frame 12 (t=0.44 s)" named the last
    good frame's time for the bad frame); it now gives the --end that works, and that run succeeds."""
    import re

    from fsvideo.video.synth import make_test_clip

    src = tmp_path / "clip.mp4"
    make_test_clip(src, n_frames=25, width=64, height=64, fps=25, audio=False)
    data = bytearray(src.read_bytes())
    mid = (data.find(b"mdat") + data.find(b"moov")) // 2
    data[mid:mid + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    src.write_bytes(bytes(data))
    common = ["--generator", tiny["gen"], "--encoder", tiny["enc"], "--detector", "dlib", "--direction", tiny["dir"],
              "-q"]                                                # no progress bar above the error
    code, text = cli(capsys, "edit", src, "-o", tmp_path / "out.mp4", *common)
    line = one_line_error(code, text)
    end = re.search(r"--end (\d+\.\d\d)$", line)
    assert str(src) in line and end, line
    code, text = cli(capsys, "edit", src, "-o", tmp_path / "out.mp4", "--end", end.group(1), *common)
    assert code == 0 and (tmp_path / "out.mp4").is_file(), text


def test_a_folder_of_camera_clips_is_edited(tiny, tmp_path, capsys):
    """`fsvideo edit clips/ --out-dir out/` where clips/ holds a camera's AVCHD .MTS and an MPEG-TS .ts:
    each was edited when named, but a folder search skipped them ("no video or image files in this
    folder").  Both are found now; the .MTS (which the writer cannot write) comes out as .mp4."""
    from fsvideo.video.synth import make_test_clip
    clips = tmp_path / "clips"
    clips.mkdir()
    make_test_clip(clips / "a.ts", n_frames=10, width=32, height=32, audio=False)    # 3 frames: too short to probe
    (clips / "B.MTS").write_bytes((clips / "a.ts").read_bytes())
    code, text = cli(capsys, "edit", clips, "--out-dir", tmp_path / "out", "--generator", tiny["gen"], "--encoder",
                     tiny["enc"], "--detector", "dlib", "--direction", tiny["dir"], "-q")
    assert code == 0, text
    assert {"a.dir+1.ts", "B.dir+1.mp4"} <= {p.name for p in (tmp_path / "out").iterdir()}


def test_a_variable_rate_avi_is_read_back_without_a_truncation_warning(tmp_path, caplog):
    """An AVI made from a variable-rate video (as `edit vfr.mkv -o out.avi` writes it: frames on a clock of
    one slot a frame, slots without a frame left empty) lists its slots as frames; reading it back said
    "decoded 10 of the 65 frames its index lists; the file may be truncated"."""
    import logging

    from fsvideo.video import VideoReader, VideoWriter, probe
    from fsvideo.video.synth import make_test_clip

    cfr = tmp_path / "cfr.mkv"
    make_test_clip(cfr, n_frames=10, width=32, height=32, fps=25, audio=False)
    times = [0.0, 0.04, 0.2, 0.24, 1.0, 1.04, 1.08, 2.48, 2.52, 2.56]          # pauses of up to 1.4 s
    src = tmp_path / "vfr.mkv"
    with VideoWriter(src, probe(cfr)) as w:
        for f, t in zip(VideoReader(cfr), times):
            w.write(f.image, time=t)
    with VideoWriter(tmp_path / "out.avi", probe(src)) as w:
        for f in VideoReader(src):
            w.write(f.image, pts=f.pts, duration=f.duration)
    with caplog.at_level(logging.WARNING, logger="fsvideo.video.reader"):
        back = [round(f.time, 2) for f in VideoReader(tmp_path / "out.avi")]
    assert back == times
    assert not caplog.records, [r.getMessage() for r in caplog.records]
