"""End to end: `fsvideo edit` / `fsvideo invert` on real clips with tiny random weights in the official format."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from tiny_weights import make_tiny

from fsvideo import EditRequest, RunOptions, edit_video, invert_video
from fsvideo.cli import main as cli_main
from fsvideo.errors import InputError, OutputError
from fsvideo.models.random_init import random_model, save_official_checkpoints
from fsvideo.video import VideoReader, probe

CLIP = "videos/other/pyfeat-single_face.mp4"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("tiny"))


def _opts(tiny, **kw):
    base = dict(generator=tiny["gen"], encoder=tiny["enc"], detector="dlib")
    base.update(kw)
    return RunOptions(**base)


def _frames(path):
    return [f.image for f in VideoReader(path)]


def test_edit_keeps_timing_audio_and_is_deterministic(tiny, media_dir, tmp_path):
    src = media_dir / CLIP
    info = probe(src)
    reqs = [EditRequest(tiny["dir"], 2.0)]
    a = edit_video(src, tmp_path / "a.mp4", edits=reqs, options=_opts(tiny, end=1.0))
    edit_video(src, tmp_path / "b.mp4", edits=reqs, options=_opts(tiny, end=1.0))
    n_src = sum(1 for f in VideoReader(src, end=1.0))
    out = probe(tmp_path / "a.mp4")
    assert a.frames == n_src == out.n_frames and a.faces_edited == n_src and a.frames_without_face == 0
    assert out.fps == info.fps and out.has_audio and (out.width, out.height) == (info.width, info.height)
    assert abs(out.duration_s - n_src / float(info.fps)) <= 1.5 / float(info.fps)
    fa, fb = _frames(tmp_path / "a.mp4"), _frames(tmp_path / "b.mp4")
    assert all(np.array_equal(x, y) for x, y in zip(fa, fb))                      # same seed, same frames
    c = edit_video(src, tmp_path / "c.mp4", edits=reqs, options=_opts(tiny, end=1.0, seed=1))
    assert c.frames == n_src
    assert any(not np.array_equal(x, y) for x, y in zip(fa, _frames(tmp_path / "c.mp4")))  # noise matters


def test_image_edit_changes_only_the_face(tiny, media_dir, tmp_path):
    from PIL import Image
    src = media_dir / "images/wild/facerec-obama.jpg"
    out = tmp_path / "o.png"
    s = edit_video(src, out, edits=[EditRequest(tiny["dir"], 1.0)], options=_opts(tiny))
    assert s.frames == 1 and s.faces_edited == 1
    before = np.asarray(Image.open(src).convert("RGB"))
    after = np.asarray(Image.open(out).convert("RGB"))
    changed = np.any(before != after, axis=2)
    assert changed.sum() > 1000                                   # the face was replaced
    # every pixel away from the face is bit-identical: changes stay inside the face box, grown by
    # a quarter of its size (the blend mask covers the forehead above the landmarks)
    from fsvideo.faces.detect import make_detector
    (face,) = make_detector("dlib").detect(before)
    x0, y0, x1, y1 = face.box
    gx, gy = 0.25 * (x1 - x0), 0.25 * (y1 - y0)
    outside = np.ones_like(changed)
    outside[int(max(0, y0 - gy)):int(y1 + gy), int(max(0, x0 - gx)):int(x1 + gx)] = False
    assert not changed[outside].any() and outside.sum() > 0.7 * outside.size


def test_no_face_video_passes_through(tiny, media_dir, tmp_path):
    src = media_dir / "videos/other/pyfeat-no_face.mp4"
    s = edit_video(src, tmp_path / "n.mp4", edits=[EditRequest(tiny["dir"], 1.0)], options=_opts(tiny, end=0.5))
    assert s.frames > 0 and s.frames_without_face == s.frames and s.faces_edited == 0
    assert probe(tmp_path / "n.mp4").n_frames == s.frames
    with pytest.raises(InputError, match="no face"):
        edit_video(src, tmp_path / "e.mp4", edits=[EditRequest(tiny["dir"], 1.0)],
                   options=_opts(tiny, end=0.5, on_missing="error"))
    assert not (tmp_path / "e.mp4").exists()


def test_latents_reedit_matches_direct_edit(tiny, media_dir, tmp_path):
    src = media_dir / CLIP
    inv = invert_video(src, tmp_path / "inv.mp4", latents_out=tmp_path / "x.latents", options=_opts(tiny, end=0.4))
    assert inv.frames == probe(tmp_path / "inv.mp4").n_frames and Path(inv.latents).is_file()
    reqs = [EditRequest(tiny["dir"], 1.5)]
    direct = edit_video(src, tmp_path / "d.mp4", edits=reqs, options=_opts(tiny, end=0.4))
    again = edit_video(src, tmp_path / "l.mp4", edits=reqs, options=_opts(tiny, end=0.4), latents=tmp_path / "x.latents")
    assert again.frames == direct.frames and again.faces_edited == direct.faces_edited == direct.frames
    diffs = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(_frames(tmp_path / "d.mp4"), _frames(tmp_path / "l.mp4"))]
    assert max(diffs) < 0.05         # same codes, same noise: equal up to float rounding
    other = media_dir / "videos/other/liveportrait-d18.mp4"
    with pytest.raises(InputError, match="another file"):
        edit_video(other, tmp_path / "z.mp4", edits=reqs, options=_opts(tiny, end=0.4), latents=tmp_path / "x.latents")
    with pytest.raises(InputError, match=r"x.latents starts at 0.000 s, this run's first frame is at 0.1.*--start"):
        edit_video(src, tmp_path / "s.mp4", edits=reqs, options=_opts(tiny, start=0.1, end=0.4),   # other frames
                   latents=tmp_path / "x.latents")
    assert not (tmp_path / "s.mp4").exists()


def test_outputs_are_protected(tiny, media_dir, tmp_path):
    src = media_dir / CLIP
    reqs = [EditRequest(tiny["dir"], 1.0)]
    existing = tmp_path / "exists.mp4"
    existing.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="already exists.*--overwrite"):
        edit_video(src, existing, edits=reqs, options=_opts(tiny, end=0.2))
    assert existing.read_bytes() == b"keep me"
    with pytest.raises(OutputError, match="is the input"):
        edit_video(src, src, edits=reqs, options=_opts(tiny, end=0.2, overwrite=True))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty.mp4"):
        edit_video(empty, tmp_path / "o.mp4", edits=reqs, options=_opts(tiny))

    def interrupt(done, total):
        if done >= 3:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        edit_video(src, tmp_path / "ki.mp4", edits=reqs, options=_opts(tiny, end=1.0), progress=interrupt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.mp4", "exists.mp4"]   # nothing half-written


def run_cli(args) -> int:
    try:
        cli_main(args)
    except SystemExit as e:
        return e.code or 0
    return 0


def test_cli_edit_json_and_errors(tiny, media_dir, tmp_path, capsys):
    src = media_dir / CLIP
    out = tmp_path / "cli.mp4"
    code = run_cli(["edit", str(src), "--generator", tiny["gen"], "--encoder", tiny["enc"], "--detector", "dlib",
                    "--direction", tiny["dir"], "--strength", "-0.5", "--end", "0.3", "-o", str(out), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["output"] == str(out) and summary["frames"] > 0 and out.is_file()
    assert run_cli(["edit", str(src), "--attr", "smile", "--attr", "makeup", "--strength", "1"]) == 2
    err = capsys.readouterr().err
    assert "1 --strength values for 2 edits" in err and "Traceback" not in err
    assert run_cli(["edit", str(src), "--attr", "smile", "-o", str(tmp_path / "w.mp4")]) == 2
    err = capsys.readouterr().err
    assert "fsvideo weights download stylegan2-ffhq" in err
    assert not os.path.exists(tmp_path / "w.mp4")


@pytest.mark.parametrize("kind", ["rotated", "odd", "vfr", "10bit"])
def test_awkward_videos_run_through(tiny, tmp_path, kind):
    """Rotated phone video, odd size, variable frame rate, 10-bit: same frame count and timing out."""
    from fsvideo.video.synth import make_test_clip
    src = tmp_path / f"{kind}.mp4"
    kw = dict(rotated=dict(rotation=90), odd=dict(width=65, height=49, pix_fmt="yuv444p"), vfr=dict(vfr=True),
              **{"10bit": dict(pix_fmt="yuv420p10le")})[kind]
    make_test_clip(src, n_frames=12, audio=True, **kw)
    s = edit_video(src, tmp_path / "out.mp4", edits=[EditRequest(tiny["dir"], 1.0)], options=_opts(tiny))
    a, b = probe(src), probe(tmp_path / "out.mp4")
    assert s.frames == 12 == b.n_frames and s.frames_without_face == 12
    assert (b.width, b.height, b.rotation) == (a.width + (a.width % 2), a.height + (a.height % 2), a.rotation)
    assert abs(b.duration_s - a.duration_s) < 1.5 / float(a.fps) and b.has_audio
    src_t = [f.time for f in VideoReader(src)]
    out_t = [f.time for f in VideoReader(tmp_path / "out.mp4")]
    assert np.allclose(src_t, out_t, atol=2e-3)


def test_unwritable_output_folder(tiny, media_dir, tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        edit_video(media_dir / CLIP, tmp_path / "nope" / "o.mp4", edits=[EditRequest(tiny["dir"], 1.0)],
                   options=_opts(tiny))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(OutputError, match="not writable"):
            edit_video(media_dir / CLIP, ro / "o.mp4", edits=[EditRequest(tiny["dir"], 1.0)], options=_opts(tiny))
    finally:
        ro.chmod(0o700)


def test_latents_reedit_uses_the_stored_seed_and_refuses_another_model(tiny, media_dir, tmp_path):
    """A re-edit uses the noise seed the latents file records unless --seed says otherwise, and only
    the model (checksums) that made it."""
    from fsvideo.latents import LatentsReader
    src = media_dir / CLIP
    lat = tmp_path / "s.latents"
    invert_video(src, tmp_path / "inv.mp4", latents_out=lat, options=_opts(tiny, end=0.3, seed=3))
    meta = LatentsReader(lat).meta
    assert meta["noise_seed"] == 3 and meta["k"] == 5
    assert len(meta["generator_sha256"]) == len(meta["encoder_sha256"]) == 64
    reqs = [EditRequest(tiny["dir"], 1.5)]
    edit_video(src, tmp_path / "d3.mp4", edits=reqs, options=_opts(tiny, end=0.3, seed=3))
    edit_video(src, tmp_path / "l.mp4", edits=reqs, options=_opts(tiny, end=0.3), latents=lat)
    edit_video(src, tmp_path / "l0.mp4", edits=reqs, options=_opts(tiny, end=0.3, seed=0), latents=lat)
    d3, stored, told = (_frames(tmp_path / n) for n in ("d3.mp4", "l.mp4", "l0.mp4"))
    assert max(np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(d3, stored)) < 0.05
    assert max(np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(d3, told)) > 0.05   # --seed 0 obeyed
    other = tmp_path / "other"
    other.mkdir()
    enc2, _ = save_official_checkpoints(random_model(64, seed=5), other)
    with pytest.raises(InputError, match=f"made with encoder {tiny['enc']}.*this run uses {enc2}"):
        edit_video(src, tmp_path / "x.mp4", edits=reqs, options=_opts(tiny, end=0.3, encoder=str(enc2)), latents=lat)
    assert not (tmp_path / "x.mp4").exists()


def test_edit_step_of_the_config_scales_eq1(tiny):
    """ModelConfig.edit_step reaches Eq. 1: step 30 with strength 1 is step 15 with strength 2."""
    import torch

    from fsvideo.edits.directions import load_direction
    from fsvideo.edits.eq1 import EditSpec, edit_codes
    from fsvideo.models.execution import ModelExecutor
    from fsvideo.models.loading import load_feature_style_model
    from fsvideo.pipeline import Components
    from fsvideo.pipeline.model_stages import make_edit
    model = load_feature_style_model(tiny["gen"], tiny["enc"])
    ex = ModelExecutor(model, batch_size=2)
    G = model.generator
    d = load_direction(tiny["dir"], G.n_latent, G.style_dim)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, G.n_latent, G.style_dim, generator=g)
    f = torch.randn(3, *G.feature_shape(model.k), generator=g)
    stage = make_edit(Components(executor=ex, edits=(EditSpec("d", d, 1.0),), edit_step=30.0))
    (p,) = stage.process([{"index": 0, "w": w, "F": f}])
    we, fe = edit_codes(model, w, f, [EditSpec("d", d, 2.0)], ex.noise, step=15.0)
    assert torch.allclose(p["w_edit"], we, atol=1e-5) and torch.allclose(p["F_edit"], fe, atol=1e-4)
    assert not torch.allclose(p["w_edit"], edit_codes(model, w, f, [EditSpec("d", d, 1.0)], ex.noise)[0])


def test_run_options_reach_the_stages_with_one_default():
    """--detect-batch reaches the detector stage (FAN batching), --align-method the aligner, and the
    stabilisation default is RunOptions' everywhere (CLI, stage factory)."""
    import inspect

    from fsvideo.cli.edit import edit as edit_cmd
    from fsvideo.pipeline import Components, build_chain
    from fsvideo.pipeline.face_stages import make_track_align
    from fsvideo.pipeline.options import stage_options

    class Det:
        name = "fake"

        def detect_batch(self, images):
            return [[] for _ in images]

    comps = Components(reader=[], detector=Det(), resolution=64, fps=30.0, frame_sink=print)
    stages = build_chain("align", comps, stage_options(RunOptions(detect_batch=8, align_method="exact",
                                                                   stabilize=0.1)))
    detect, align = stages[1], stages[2]
    assert detect.batch_size == 8 and align.aligner.method == "exact"
    assert align.aligner.stabilizer.delay > build_chain("align", comps, stage_options(RunOptions()))[2].aligner.delay
    cli_default = next(p.default for p in edit_cmd.params if p.name == "stabilize")
    stage_default = inspect.signature(make_track_align).parameters["stabilize"].default
    assert cli_default == stage_default == RunOptions().stabilize
    assert {p.name for p in edit_cmd.params} >= {"detect_batch", "align_method", "workers"}


@pytest.mark.parametrize("track", ["flow", "roi"])
def test_detect_every_tracks_between_keyframes_through_the_edit(tiny, media_dir, tmp_path, track):
    """`--detect-every` / `--track`: the detect stage wraps the detector in a KeyframeDetector or its
    region subclass (one worker, frames in order), every frame still gets its face, and the output
    stays close to per-frame detection (`--detect-every 0`).  The default is region detection
    every second (measured as close to per-frame detection as that is to itself, README)."""
    from fsvideo.faces.keyframes import KeyframeDetector, with_keyframes
    from fsvideo.faces.registry import make_detector
    from fsvideo.faces.roi import RoiDetector
    from fsvideo.pipeline.components import Components
    from fsvideo.pipeline.face_stages import make_detect
    assert (RunOptions().detect_every, RunOptions().track) == ("1s", "roi")
    comps = Components(detector=make_detector("dlib"), fps=30.0)
    tracked, plain = make_detect(comps, detect_every="0.5", track=track), make_detect(comps, detect_every=0)
    assert not tracked.per_frame and plain.per_frame and not make_detect(comps).per_frame
    wrapped = with_keyframes(comps.detector, "0.5", 30.0, track)
    assert type(wrapped) is (RoiDetector if track == "roi" else KeyframeDetector)
    src = media_dir / CLIP
    every = edit_video(src, tmp_path / "k.mp4", edits=[EditRequest(tiny["dir"], 1.5)],
                       options=_opts(tiny, end=0.6, detect_every="0.5", track=track))
    per_frame = edit_video(src, tmp_path / "p.mp4", edits=[EditRequest(tiny["dir"], 1.5)],
                           options=_opts(tiny, end=0.6, detect_every=0))
    assert every.frames == per_frame.frames and every.faces_edited == per_frame.faces_edited == per_frame.frames
    diffs = [np.abs(a.astype(int) - b.astype(int)).mean()
             for a, b in zip(_frames(tmp_path / "k.mp4"), _frames(tmp_path / "p.mp4"))]
    print("keyframe vs per-frame detection, mean |diff| per frame:", np.round(diffs, 2))
    assert max(diffs) < 2.0       # tracked landmarks stay close to per-frame detection (stabilised)
    assert cli_main(["edit", str(src), "--generator", tiny["gen"], "--encoder", tiny["enc"], "--direction",
                     tiny["dir"], "--detector", "dlib", "--detect-every", "12f", "--track", track, "--end", "0.3", "-o",
                     str(tmp_path / "c.mp4"), "--quiet"]) in (0, None)
    assert (tmp_path / "c.mp4").is_file()
