"""End to end through the public API and the CLI: options that change the picture, awkward clips WITH a face.

Tiny random weights in the official checkpoint format (the same code as the released 1024 model,
small channel counts), a few frames of a shared clip with a face, downscaled for speed.  Each test
checks what the option does to the output pixels, not only that the run finished.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fsvideo import EditRequest, RunOptions, edit_video
from fsvideo.cli import main as cli_main
from fsvideo.errors import OutputError
from fsvideo.models.random_init import random_model, save_official_checkpoints
from fsvideo.video import VideoReader, probe
from fsvideo.video.synth import add_subtitles, make_test_clip

FACE_CLIP = "videos/other/liveportrait-d18.mp4"
SIZE = 256          # frames are downscaled to SIZE x SIZE (the face stays well above dlib's 80 px)
N_FRAMES = 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny generator + encoder (official layout), a unit edit direction, and a tiny BiSeNet with its config."""
    from fsvideo.models.bisenet import BiSeNet

    d = tmp_path_factory.mktemp("tiny_e2e")
    model = random_model(64, seed=0)
    enc, gen = save_official_checkpoints(model, d)
    direction = np.random.default_rng(1).standard_normal((1, model.generator.n_latent * 64)).astype(np.float32)
    np.save(d / "dir.npy", direction / np.linalg.norm(direction))
    torch.manual_seed(0)
    parser = BiSeNet(19, widths=(8, 8, 16, 16), cp_channels=8, ffm_channels=16, aux_channels=8).eval()
    torch.save(parser.state_dict(), d / "79999_iter.pth")
    (d / "parsing.yaml").write_text(f"model:\n  face_parser: {d / '79999_iter.pth'}\n")
    return dict(enc=str(enc), gen=str(gen), dir=str(d / "dir.npy"), parsing_config=str(d / "parsing.yaml"))


@pytest.fixture(scope="module")
def face_frames(media_dir):
    """N_FRAMES upright uint8 [SIZE, SIZE, 3] frames of a shared clip with one frontal face."""
    from PIL import Image

    out = []
    for f in VideoReader(media_dir / FACE_CLIP):
        if f.index >= N_FRAMES:
            break
        out.append(np.asarray(Image.fromarray(f.image).resize((SIZE, SIZE), Image.BILINEAR)))
    return out


@pytest.fixture(scope="module")
def face_clip(face_frames, tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "face.mp4"
    make_test_clip(path, images=face_frames, fps=25)
    return path


def opts(tiny, **kw) -> RunOptions:
    base = dict(generator=tiny["gen"], encoder=tiny["enc"], detector="dlib", mask="hull")
    base.update(kw)
    return RunOptions(**base)


def edit(tiny, src, dst, strength=2.0, **kw):
    return edit_video(src, dst, edits=[EditRequest(tiny["dir"], strength)], options=opts(tiny, **kw))


def frames(path) -> list[np.ndarray]:
    return [f.image.astype(np.int16) for f in VideoReader(path)]


def mean_abs(a, b) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# ---------------------------------------------------------------------------------- picture options

def test_compare_is_original_reconstruction_edit_side_by_side(tiny, face_clip, tmp_path):
    s = edit(tiny, face_clip, tmp_path / "cmp.mp4", compare=True)
    plain = edit(tiny, face_clip, tmp_path / "plain.mp4")
    assert s.frames == plain.frames == N_FRAMES and s.faces_edited == N_FRAMES
    info = probe(tmp_path / "cmp.mp4")
    assert (info.width, info.height) == (3 * SIZE, SIZE)
    src, cmp, edited = frames(face_clip), frames(tmp_path / "cmp.mp4"), frames(tmp_path / "plain.mp4")
    for a, c, e in zip(src, cmp, edited):
        left, middle, right = c[:, :SIZE], c[:, SIZE:2 * SIZE], c[:, 2 * SIZE:]
        assert mean_abs(left, a) < 2.0                  # the original, untouched (codec noise only)
        assert mean_abs(right, e) < 2.0                 # the same edit as without --compare
        assert mean_abs(middle, a) > 1.0                # the reconstruction replaced the face...
        assert mean_abs(middle, right) > 0.5            # ...and the edit moved it further


def test_face_all_edits_both_faces(tiny, face_frames, tmp_path):
    two = [np.concatenate([f, f[:, ::-1]], axis=1) for f in face_frames]      # two faces side by side
    src = tmp_path / "two.mp4"
    make_test_clip(src, images=two)
    one = edit(tiny, src, tmp_path / "largest.mp4", face="largest")
    both = edit(tiny, src, tmp_path / "all.mp4", face="all")
    assert one.faces_edited == N_FRAMES and both.faces_edited == 2 * N_FRAMES
    s, a, b = frames(src), frames(tmp_path / "largest.mp4"), frames(tmp_path / "all.mp4")
    # (an edited half differs by ~8 grey levels on average, an untouched one by codec noise, ~1.5)
    halves = [sorted((mean_abs(x[:, :SIZE], y[:, :SIZE]), mean_abs(x[:, SIZE:], y[:, SIZE:]))) for x, y in zip(s, a)]
    assert all(lo < 2.5 and hi > 4.0 for lo, hi in halves)     # largest: one half edited, the other untouched
    assert all(mean_abs(x[:, :SIZE], y[:, :SIZE]) > 4.0 and mean_abs(x[:, SIZE:], y[:, SIZE:]) > 4.0
               for x, y in zip(s, b))                           # all: both halves edited


def test_blend_poisson_differs_from_alpha_only_around_the_face(tiny, face_clip, tmp_path):
    edit(tiny, face_clip, tmp_path / "alpha.mp4", blend="alpha")
    edit(tiny, face_clip, tmp_path / "poisson.mp4", blend="poisson")
    src, a, p = frames(face_clip), frames(tmp_path / "alpha.mp4"), frames(tmp_path / "poisson.mp4")
    for x, y, z in zip(src, a, p):
        diff = np.abs(y - z).max(axis=2) > 8
        assert diff.sum() > 200                                   # the blend changed the face region
        ys, xs = np.nonzero(diff)
        box = (ys.max() - ys.min()) * (xs.max() - xs.min())
        assert box < 0.8 * SIZE * SIZE                            # ...and only there
        assert mean_abs(x[:16], z[:16]) < 2.0                     # the top rows stay the source's


def test_mask_parsing_uses_the_face_parser(tiny, face_clip, tmp_path):
    hull = edit(tiny, face_clip, tmp_path / "hull.mp4", mask="hull")
    parsed = edit(tiny, face_clip, tmp_path / "parsing.mp4", mask="parsing", config=tiny["parsing_config"])
    assert hull.faces_edited == parsed.faces_edited == N_FRAMES
    h, p = frames(tmp_path / "hull.mp4"), frames(tmp_path / "parsing.mp4")
    assert all(mean_abs(x, y) > 0.05 for x, y in zip(h, p))     # another mask, another paste-back
    # "auto" with the parser present means parsing: the same output
    edit(tiny, face_clip, tmp_path / "auto.mp4", mask="auto", config=tiny["parsing_config"])
    assert all(np.array_equal(x, y) for x, y in zip(p, frames(tmp_path / "auto.mp4")))


# ------------------------------------------------------------------------------ awkward clips, a face

@pytest.mark.parametrize("kind", ["rotated", "vfr", "10bit"])
def test_awkward_clips_with_a_face_are_edited(tiny, face_frames, tmp_path, kind):
    """A sideways-stored phone clip (display matrix), irregular timestamps, 10-bit: the face is found and edited."""
    kw = {"rotated": dict(rotation=-90), "vfr": dict(vfr=True), "10bit": dict(pix_fmt="yuv420p10le")}[kind]
    src = tmp_path / f"{kind}.mp4"
    times = make_test_clip(src, images=face_frames, **kw)
    info = probe(src)
    if kind == "rotated":
        assert info.rotation == -90 and (info.coded_width, info.coded_height) == (SIZE, SIZE)
    s = edit(tiny, src, tmp_path / "out.mp4")
    out = probe(tmp_path / "out.mp4")
    assert s.frames == N_FRAMES and s.faces_edited == N_FRAMES and s.frames_without_face == 0
    assert out.rotation == info.rotation and (out.width, out.height) == (info.width, info.height)
    assert np.allclose([f.time for f in VideoReader(tmp_path / "out.mp4")], times, atol=2e-3)
    before, after = frames(src), frames(tmp_path / "out.mp4")
    assert all(mean_abs(x, y) > 1.0 for x, y in zip(before, after))   # the face really changed
    assert all(mean_abs(x[:16], y[:16]) < 2.0 for x, y in zip(before, after))  # upright: top rows kept


def test_a_transparent_photo_with_a_colour_profile_keeps_both(tiny, face_frames, tmp_path, caplog):
    """An RGBA PNG with an ICC profile: the edited PNG keeps the alpha and the profile (both were
    dropped: a transparent logo came out on black, a Display P3 photo was shown as sRGB); a JPEG output
    keeps the profile and says the transparency is dropped."""
    from PIL import Image, ImageCms
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    alpha = np.full((SIZE, SIZE), 255, np.uint8)
    alpha[:40] = 0
    alpha[40:60] = 128
    src = tmp_path / "logo.png"
    Image.fromarray(np.dstack([face_frames[0], alpha]), "RGBA").save(src, icc_profile=icc)
    s = edit(tiny, src, tmp_path / "out.png")
    assert s.faces_edited == 1
    with Image.open(tmp_path / "out.png") as im:
        assert im.mode == "RGBA" and im.info.get("icc_profile") == icc
        out = np.asarray(im)
    assert np.array_equal(out[..., 3], alpha) and mean_abs(out[..., :3], face_frames[0]) > 0.5
    with caplog.at_level("WARNING"):
        edit(tiny, src, tmp_path / "out.jpg")
    with Image.open(tmp_path / "out.jpg") as im:
        assert im.mode == "RGB" and im.info.get("icc_profile") == icc
    assert any("transparency is dropped" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------- CLI, outputs

def cli(capsys, *args) -> tuple[int, str]:
    """Run the real entry point (its error handling included); (exit code, stdout + stderr)."""
    capsys.readouterr()
    try:
        cli_main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out + out.err


def cli_edit(capsys, tiny, src, out, *extra):
    return cli(capsys, "edit", src, "--generator", tiny["gen"], "--encoder", tiny["enc"], "--detector", "dlib",
               "--mask", "hull", "--direction", tiny["dir"], "--strength", "1.5", "-o", out, *extra)


def test_cli_gif_in_gif_out(tiny, face_frames, tmp_path, capsys):
    """`fsvideo edit anim.gif -o out.gif` (issue 10.10): a GIF comes out, frames and durations kept."""
    from PIL import Image, ImageSequence

    src = tmp_path / "anim.gif"
    ims = [Image.fromarray(f) for f in face_frames]
    ims[0].save(src, save_all=True, append_images=ims[1:], duration=[80, 120, 80, 200], loop=0)
    code, text = cli_edit(capsys, tiny, src, tmp_path / "out.gif")
    assert code == 0, text
    with Image.open(tmp_path / "out.gif") as im:
        durations = [fr.info["duration"] for fr in ImageSequence.Iterator(im)]
    assert durations == [80, 120, 80, 200]
    assert probe(tmp_path / "out.gif").codec == "gif"
    assert all(mean_abs(x, y) > 1.0 for x, y in zip(frames(src), frames(tmp_path / "out.gif")))
    code, text = cli_edit(capsys, tiny, src, tmp_path / "out.xyz")
    assert code == 2 and "Traceback" not in text and len(text.strip().splitlines()) == 1, text
    assert str(tmp_path / "out.xyz") in text and ".gif" in text and "partial" not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anim.gif", "out.gif"]


def test_cli_default_output_of_an_extension_the_writer_cannot_write_is_mp4(tiny, face_clip, tmp_path, capsys):
    """A camera's AVCHD `.MTS` (likewise raw .h264, .mpg, .wmv, no extension) with no -o: the edit is
    written to `<name>.<edit>.mp4`; before, the default name kept `.MTS` and the run stopped on it."""
    import av

    src = tmp_path / "camera clip.MTS"
    with av.open(str(face_clip)) as i, av.open(str(src), "w", format="mpegts") as o:
        vi, ai = i.streams.video[0], i.streams.audio[0]
        vo, ao = o.add_stream_from_template(vi), o.add_stream_from_template(ai)
        for pkt in i.demux(vi, ai):
            if pkt.dts is not None:
                pkt.stream = vo if pkt.stream is vi else ao
                o.mux(pkt)
    code, text = cli(capsys, "edit", src, "--generator", tiny["gen"], "--encoder", tiny["enc"], "--detector", "dlib",
                     "--mask", "hull", "--direction", tiny["dir"], "--strength", "1.5", "-q")
    assert code == 0, text
    out = tmp_path / "camera clip.dir+1.5.mp4"
    info = probe(out)
    assert info.codec == "h264" and info.n_frames == N_FRAMES and info.has_audio
    assert all(mean_abs(x, y) > 1.0 for x, y in zip(frames(src), frames(out)))


def test_cli_image_to_a_video_extension_fails_before_the_models_load(tiny, face_frames, tmp_path, capsys,
                                                                      monkeypatch):
    """An image is edited into an image: `-o out.mp4` for a photo is refused at once (one line naming the
    output and the fix), not after the generator and encoder were loaded (1024 px: a minute on a CPU)."""
    from PIL import Image

    from fsvideo.pipeline import jobs

    def no_model(*a, **k):
        raise AssertionError("the models were loaded for a run that cannot write its output")

    monkeypatch.setattr(jobs, "load_model", no_model)
    src = tmp_path / "photo.png"
    Image.fromarray(face_frames[0]).save(src)
    code, text = cli_edit(capsys, tiny, src, tmp_path / "out.mp4")
    assert code == 2 and "Traceback" not in text and len(text.strip().splitlines()) == 1, text
    assert str(tmp_path / "out.mp4") in text and ".png" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]


def test_cli_usage_errors_are_one_line_with_the_fix(face_clip, tmp_path, capsys):
    """A bad option value, a missing argument, a misspelt option, a folder as -o: one line each (click's
    own three-line usage block before), naming the fix and where to read more; -o FOLDER names --out-dir."""
    cases = {
        ("edit", face_clip, "--attr", "smile", "-o", tmp_path): [f"{tmp_path} is a folder", f"--out-dir {tmp_path}"],
        ("invert", face_clip, "--latents-out", tmp_path): [f"{tmp_path} is a folder"],
        ("edit", face_clip, "--strength", "abc"): ["'abc' is not a valid float"],
        ("edit", face_clip, "--strenght", "2"): ["--strength"],
        ("edit",): ["Missing argument"],
    }
    for args, wanted in cases.items():
        code, text = cli(capsys, *args)
        assert code == 2 and len(text.strip().splitlines()) == 1 and "Usage:" not in text, text
        assert all(w in text for w in wanted) and f"`fsvideo {args[0]} --help`" in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["parent-is-a-file", "proc"])
def test_unwritable_output_fails_even_as_root(tiny, face_clip, tmp_path, where, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    out = blocker / "out.mp4" if where == "parent-is-a-file" else "/proc/fsvideo-out.mp4"
    with pytest.raises(OutputError) as e:
        edit(tiny, face_clip, out)
    assert str(out).rsplit("/", 1)[0] in str(e.value) and "\n" not in str(e.value)
    code, text = cli_edit(capsys, tiny, face_clip, out)
    assert code == 2 and "Traceback" not in text and len(text.strip().splitlines()) == 1, text
    assert str(out).rsplit("/", 1)[0] in text


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_cli_killed_midway_leaves_no_partial_file(tiny, face_clip, tmp_path, capsys, monkeypatch, sig):
    """`kill`, `timeout` or a closed terminal mid-run: the run stops like Ctrl-C, exit 128+N, and the
    temporary output is removed (the default action killed the process and left `.out.*.partial.mp4`)."""
    import os
    import signal

    from fsvideo.video import writer as W
    signum = getattr(signal, sig)
    real = W.VideoWriter.write

    def write(self, *a, **k):
        real(self, *a, **k)
        if self.frames_written == 2:
            assert signal.getsignal(signum) is not signal.SIG_DFL, f"{sig} would kill the process here"
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(W.VideoWriter, "write", write)
    # The signal's default action, as in a terminal: under `nohup` (SIGHUP ignored, and the CLI keeps a
    # signal its caller ignores) the kill would be ignored and the run would finish.
    previous = signal.signal(signum, signal.SIG_DFL)
    try:
        code, text = cli_edit(capsys, tiny, face_clip, tmp_path / "out.mp4")
        after = signal.getsignal(signum)
    finally:
        signal.signal(signum, previous)
    assert code == 128 + signum and f"terminated ({sig})" in text and "Traceback" not in text, text
    assert list(tmp_path.iterdir()) == []                      # no output, no hidden .partial file
    assert after is signal.SIG_DFL                             # the handler is the CLI's only while it runs


def test_face_parser_is_loaded_once_per_file_version(tiny, monkeypatch):
    """A batch of videos shares one loaded parser; a rewritten weights file is loaded again."""
    import os
    from pathlib import Path

    import fsvideo.models.bisenet as B
    from fsvideo.config import ModelConfig, load_config
    from fsvideo.pipeline import jobs
    loads = []
    real = B.load_bisenet
    monkeypatch.setattr(B, "load_bisenet", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    jobs._bisenet.cache_clear()
    cfg = load_config(Path(tiny["parsing_config"]), ModelConfig, section="model")
    first = jobs.face_parser(cfg, "parsing", torch.device("cpu"))
    jobs.face_parser(cfg, "parsing", torch.device("cpu"))
    assert len(loads) == 1 and first is not None
    w = Path(cfg.face_parser)
    os.utime(w, ns=(w.stat().st_atime_ns, w.stat().st_mtime_ns + 10**9))
    jobs.face_parser(cfg, "parsing", torch.device("cpu"))
    assert len(loads) == 2
    jobs._bisenet.cache_clear()


def test_cli_edit_keeps_subtitles_with_start(tiny, face_clip, tmp_path, capsys):
    """`fsvideo edit film.mkv --start 0.04 -o out.mkv`: the French SRT stream comes out with its cues moved
    by -0.04 s like the audio (a cue shown across --start from 0); subtitles were silently dropped before."""
    import av

    (tmp_path / "fra.srt").write_text("1\n00:00:00,010 --> 00:00:00,060\nBonjour\n\n"
                                      "2\n00:00:00,090 --> 00:00:00,500\nFin\n")
    src = tmp_path / "film.mkv"
    add_subtitles(face_clip, tmp_path / "fra.srt", src, "fra")

    def cues(path):
        with av.open(str(path)) as c:
            s = c.streams.subtitles[0]
            return s.metadata.get("language"), [(round(float(p.pts * s.time_base), 3),
                                                 round(float((p.pts + p.duration) * s.time_base), 3), bytes(p))
                                                for p in c.demux(s) if p.size]
    lang, before = cues(src)
    assert lang == "fra" and [t for *_, t in before] == [b"Bonjour", b"Fin"]
    code, text = cli_edit(capsys, tiny, src, tmp_path / "out.mkv", "--start", "0.04")
    assert code == 0, text
    start = probe(src).start_time + 0.04
    want = [(round(max(a, start) - start, 3), round(b - start, 3), t) for a, b, t in before if b > start]
    assert cues(tmp_path / "out.mkv") == ("fra", want) and len(want) == 2


@pytest.mark.parametrize("name", ["out.mp4", "out.mkv", "out.png"])
def test_outputs_say_their_faces_are_generated_and_keep_the_sources_tags(tiny, face_clip, face_frames, tmp_path,
                                                                         name):
    """An edited video carries a comment that its faces were generated, with the edits, and keeps the
    source's title, date and place (a phone's video); it kept none before.  An image gets the comment as
    its EXIF ImageDescription."""
    import av
    from PIL import Image

    if name.endswith(".png"):
        src = tmp_path / "face.jpg"
        Image.fromarray(face_frames[0]).save(src)
    else:
        src = tmp_path / "phone.mov"
        tags = {"title": "Talk", "creation_time": "2026-05-01T10:00:00.000000Z", "location": "+48.8566+002.3522/"}
        with av.open(str(face_clip)) as i, av.open(str(src), "w") as o:
            o.metadata.update(tags)
            outs = {s.index: o.add_stream_from_template(s) for s in (i.streams.video[0], i.streams.audio[0])}
            for pkt in i.demux(i.streams.video[0], i.streams.audio[0]):
                if pkt.dts is not None:
                    pkt.stream = outs[pkt.stream.index]
                    o.mux(pkt)
    edit(tiny, src, tmp_path / name)
    want = "faces edited: dir.npy+2; generated by fsvideo"
    if name.endswith(".png"):
        with Image.open(tmp_path / name) as im:
            assert im.getexif()[0x010E].startswith(want)
        return
    with av.open(str(tmp_path / name)) as c:
        got = {k.lower(): v for k, v in c.metadata.items()}
    assert got["comment"].startswith(want) and got["title"] == "Talk"
    assert got["creation_time"].startswith("2026-05-01T10:00:00")
    if name.endswith(".mp4"):
        assert got["location"] == "+48.8566+002.3522/"
