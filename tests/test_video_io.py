"""Video I/O: probe, streaming decode, encode keeping timestamps/rotation/audio, bad inputs."""
from __future__ import annotations

import logging
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from fsvideo.errors import InputError, OutputError
from fsvideo.pipeline import Components, build_chain, run_chain
from fsvideo.utils import atomic_output
from fsvideo.video import ImageWriter, VideoReader, VideoWriter, probe, write_image
from fsvideo.video.synth import make_test_clip, pattern

# ------------------------------------------------------------------------------------------ helpers

def packets(path, kind: str):
    """(pts, bytes) of every non-empty packet of the first stream of ``kind``."""
    with av.open(str(path)) as c:
        streams = getattr(c.streams, kind)
        if not streams:
            return []
        return [(p.pts, bytes(p)) for p in c.demux(streams[0]) if p.size]


def roundtrip(src, dst, **kw):
    """decode -> encode through atomic_output, the way the pipeline does it."""
    start, end = kw.pop("start", None), kw.pop("end", None)
    info = probe(src)
    kw.setdefault("preset", "ultrafast")
    frames = 0
    with atomic_output(dst) as tmp, VideoWriter(tmp, info, audio_from=src, start=start, end=end, **kw) as w:
        for f in VideoReader(src, start, end, info=info):
            w.write_frame(f)
            frames += 1
    return info, frames


def check_roundtrip(src, dst, tol_px=6.0):
    info, _ = roundtrip(src, dst)
    out = probe(dst)
    a, b = list(VideoReader(src)), list(VideoReader(dst))
    assert len(b) == len(a) == out.n_frames
    frame = float(1 / info.fps)
    assert np.median(np.diff([f.time for f in b])) == pytest.approx(np.median(np.diff([f.time for f in a])), abs=1e-4)
    if info.n_frames == len(a):  # (an edit list can hide frames the source's average rate still counts)
        assert out.fps == pytest.approx(float(info.fps), rel=2e-3)
    assert out.duration_s == pytest.approx(info.duration_s, abs=frame)
    assert np.allclose([f.time for f in b], [f.time for f in a], atol=1e-3)  # VFR stays VFR
    assert (out.rotation, out.width, out.height) == (info.rotation, info.width, info.height)
    sa, sb = packets(src, "audio"), packets(dst, "audio")
    assert len(sa) == len(sb) and [x[1] for x in sa] == [x[1] for x in sb]  # copied, not re-encoded
    for fa, fb in zip(a[::7], b[::7]):
        assert np.abs(fa.image.astype(int) - fb.image.astype(int)).mean() < tol_px
    return info, out


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    made = {
        "cfr": make_test_clip(d / "cfr.mp4"),
        "vfr": make_test_clip(d / "vfr.mp4", vfr=True),
        "odd": make_test_clip(d / "odd.mp4", width=63, height=47, pix_fmt="yuv444p"),
        "rot90": make_test_clip(d / "rot90.mp4", rotation=90),
        "rot180": make_test_clip(d / "rot180.mp4", rotation=180, audio=False),
        "rot-90": make_test_clip(d / "rot-90.mp4", rotation=-90, audio=False),
        "tenbit": make_test_clip(d / "tenbit.mp4", pix_fmt="yuv420p10le"),
    }
    return {k: d / f"{k}.mp4" for k in made} | {"times": made}


# --------------------------------------------------------------------------------------------- probe

def test_probe_synthetic(clips):
    info = probe(clips["cfr"])
    assert (info.width, info.height, info.fps, info.n_frames) == (64, 48, Fraction(25), 48)
    assert info.duration_s == pytest.approx(48 / 25, abs=1e-3)
    assert info.has_audio and info.audio_codec == "aac" and info.codec == "h264" and not info.is_image
    assert info.rotation == 0 and info.pix_fmt == "yuv420p"
    rot = probe(clips["rot90"])
    assert rot.rotation == 90 and (rot.width, rot.height) == (48, 64) and (rot.coded_width, rot.coded_height) == (64, 48)
    assert probe(clips["rot180"]).rotation == 180
    assert probe(clips["tenbit"]).pix_fmt == "yuv420p10le"
    vfr = probe(clips["vfr"])
    assert vfr.n_frames == 48 and 20 < float(vfr.fps) < 25


def test_reader_streams_frames_with_source_timestamps(clips):
    frames = list(VideoReader(clips["vfr"]))
    info = probe(clips["vfr"])
    assert [f.index for f in frames] == list(range(48))
    assert [f.time for f in frames] == pytest.approx(clips["times"]["vfr"], abs=1e-6)
    assert [f.pts * info.time_base for f in frames] == pytest.approx(clips["times"]["vfr"], abs=1e-6)
    f = frames[10]
    assert f.image.dtype == np.uint8 and f.image.shape == (48, 64, 3) and f.image.flags.c_contiguous
    assert np.abs(f.image.astype(int) - pattern(10, 64, 48)).mean() < 6


def test_reader_trims(clips):
    frames = list(VideoReader(clips["cfr"], start=0.5, end=1.5))
    assert len(frames) == 25
    assert frames[0].time == pytest.approx(0.52) and frames[-1].time == pytest.approx(1.48)
    assert frames[0].index == 0
    assert np.abs(frames[0].image.astype(int) - pattern(13, 64, 48)).mean() < 6
    with pytest.raises(InputError, match="--end"):
        VideoReader(clips["cfr"], start=1.0, end=0.5)
    with pytest.raises(InputError, match="past the end"):
        VideoReader(clips["cfr"], start=60)


def test_a_video_that_starts_after_its_audio_is_trimmed_on_its_own_span(clips, tmp_path):
    """The audio begins 1 s before the first picture (a camera's or an editor's export): --start near
    the video's end was refused as past the end (the check used its duration, not where it ends), and
    the progress total counted frames before the video began."""
    src = tmp_path / "late.mkv"
    with av.open(str(clips["cfr"])) as i, av.open(str(src), "w") as o:
        v, a = i.streams.video[0], i.streams.audio[0]
        outs = {v.index: o.add_stream_from_template(v), a.index: o.add_stream_from_template(a)}
        shift = int(1 / v.time_base)
        for pkt in i.demux(v, a):
            if pkt.dts is None:
                continue
            if pkt.stream.index == v.index:
                pkt.pts, pkt.dts = pkt.pts + shift, pkt.dts + shift
            pkt.stream = outs[pkt.stream.index]
            o.mux(pkt)
    info = probe(src)
    lo, hi = info.span
    assert lo == pytest.approx(1.0, abs=0.05) and hi == pytest.approx(1.0 + probe(clips["cfr"]).duration_s, abs=0.1)
    near_end = hi - 0.2
    assert len(list(VideoReader(src, start=near_end))) == len(VideoReader(src, start=near_end)) == 5
    assert len(list(VideoReader(src, end=1.5))) == len(VideoReader(src, end=1.5)) == 12   # 1.02, 1.06 ... 1.46
    with pytest.raises(InputError, match=r"its video runs from 1\.0\d s"):
        list(VideoReader(src, start=0.2, end=0.8))


@pytest.mark.parametrize("rotation, corner", [(90, (-1, 0)), (180, (-1, -1)), (-90, (0, -1))])
def test_rotation_is_applied_so_frames_are_upright(clips, rotation, corner):
    """The green block sits top-left in the stored picture; a CCW display rotation moves it."""
    img = next(iter(VideoReader(clips[f"rot{rotation}"]))).image
    h, w = img.shape[:2]
    assert (w, h) == ((64, 48) if rotation == 180 else (48, 64))
    green = img[..., 1].astype(float)
    ys = slice(h - 4, h) if corner[0] == -1 else slice(0, 4)
    xs = slice(w - 4, w) if corner[1] == -1 else slice(0, 4)
    assert green[ys, xs].mean() > 200
    assert green[:4, -4:].mean() < 60 if corner != (0, -1) else True


def test_ten_bit_decodes_to_rgb24(clips):
    f = list(VideoReader(clips["tenbit"]))[5]
    assert f.image.dtype == np.uint8
    assert np.abs(f.image.astype(int) - pattern(5, 64, 48)).mean() < 6


# ---------------------------------------------------------------------------------------- roundtrip

@pytest.mark.parametrize("name", ["cfr", "vfr", "rot90", "rot180", "rot-90", "tenbit"])
def test_roundtrip_keeps_count_rate_duration_timestamps_audio(clips, tmp_path, name):
    check_roundtrip(clips[name], tmp_path / f"{name}.out.mp4")


def test_roundtrip_rotated_keeps_rotation_metadata_or_writes_upright(clips, tmp_path):
    src = clips["rot90"]
    check_roundtrip(src, tmp_path / "keep.mp4")
    kept = probe(tmp_path / "keep.mp4")
    assert kept.rotation == 90 and (kept.coded_width, kept.coded_height) == (64, 48)
    info = probe(src)
    with VideoWriter(tmp_path / "upright.mp4", info, keep_rotation=False, preset="ultrafast") as w:
        for f in VideoReader(src):
            w.write_frame(f)
    up = probe(tmp_path / "upright.mp4")
    assert up.rotation == 0 and (up.width, up.height) == (48, 64) == (up.coded_width, up.coded_height)
    a = next(iter(VideoReader(src))).image
    b = next(iter(VideoReader(tmp_path / "upright.mp4"))).image
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 6


def test_odd_size_is_padded_by_one_pixel(clips, tmp_path):
    info, n = roundtrip(clips["odd"], tmp_path / "odd.mp4")
    out = probe(tmp_path / "odd.mp4")
    assert (info.width, info.height) == (63, 47) and (out.width, out.height) == (64, 48)
    assert out.n_frames == n == 48 and out.pix_fmt == "yuv420p"
    a = next(iter(VideoReader(clips["odd"]))).image
    b = next(iter(VideoReader(tmp_path / "odd.mp4"))).image
    assert np.abs(b[:47, :63].astype(int) - a.astype(int)).mean() < 6
    assert np.abs(b[47, :63].astype(int) - a[46].astype(int)).mean() < 12  # padded row repeats the last


def test_trimmed_output_keeps_only_that_span_of_audio(clips, tmp_path):
    roundtrip(clips["cfr"], tmp_path / "trim.mp4", start=0.5, end=1.5)
    out = probe(tmp_path / "trim.mp4")
    frames = list(VideoReader(tmp_path / "trim.mp4"))
    assert len(frames) == 25
    assert out.duration_s == pytest.approx(1.0, abs=0.05)
    src_audio = packets(clips["cfr"], "audio")
    out_audio = packets(tmp_path / "trim.mp4", "audio")
    assert abs(len(out_audio) - 44100 / 1024) <= 2
    sa = [b for _, b in src_audio]
    first = sa.index(out_audio[0][1])  # copied packets: a contiguous run of the source's
    assert [b for _, b in out_audio] == sa[first:first + len(out_audio)]
    assert first * 1024 / 44100 == pytest.approx(0.5, abs=0.05)


def test_mjpeg_video_in_mkv_is_a_video(tmp_path):
    """A webcam's MJPEG in MKV (frame count unknown to the container) is a video, not "a JPEG image"."""
    src = tmp_path / "webcam.mkv"
    make_test_clip(src, codec="mjpeg", pix_fmt="yuvj420p")
    info = probe(src)
    assert info.codec == "mjpeg" and not info.is_image and info.has_audio
    frames = list(VideoReader(src))
    assert len(frames) == 48 and np.abs(frames[9].image.astype(int) - pattern(9, 64, 48)).mean() < 6


def test_avi_output_is_written_on_a_frame_clock(clips, tmp_path):
    """AVI keeps a frame rate, not timestamps: frames go one slot each on a 1/fps clock, no B-frames.
    On the source's 1/2500 s clock the muxer indexed an empty frame per unused tick (96 entries, 600 fps
    for 4 frames) and the frames read back out of order."""
    info, out = check_roundtrip(clips["cfr"], tmp_path / "out.avi")     # count, rate, times, copied audio
    assert out.n_frames == 48 and out.fps == 25 and out.audio_codec == "aac"


def test_avi_with_b_frames_reads_in_time_order(tmp_path):
    """AVI keeps no presentation timestamps: with B-frames (H.264, DivX "packed" streams) the decoder's
    frames carried shuffled decode-order stamps (0.04, 0.16, 0.12, ...) and the edit came out jerky."""
    src = tmp_path / "bframes.avi"
    with av.open(str(src), "w") as out:
        s = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "bf": "3"})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.time_base = s.time_base = Fraction(1, 25)
        for i in range(12):
            f = av.VideoFrame.from_ndarray(pattern(i * 3, 64, 48), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 25)
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    frames = list(VideoReader(src))
    times = [f.time for f in frames]
    assert len(frames) == 12 and np.allclose(np.diff(times), 0.04)           # in order, one frame apart
    assert all(np.abs(f.image.astype(int) - pattern(i * 3, 64, 48)).mean() < 6 for i, f in enumerate(frames))
    _, n = roundtrip(src, tmp_path / "out.mp4")
    out = [f.time for f in VideoReader(tmp_path / "out.mp4")]
    assert n == 12 and np.allclose(np.diff(out), 0.04, atol=1e-3)    # the order and spacing kept


def test_every_audio_stream_is_kept_with_its_language(clips, tmp_path):
    """A second language / commentary track: copied like the first (trimmed alike), language tags kept;
    re-encoded for WebM.  Only the first audio stream was written before."""
    make_test_clip(tmp_path / "b.mp4", tone_hz=880)
    src = tmp_path / "two.mkv"
    with av.open(str(clips["cfr"])) as a, av.open(str(tmp_path / "b.mp4")) as b, av.open(str(src), "w") as o:
        v = o.add_stream_from_template(a.streams.video[0])
        outs = {}
        for c, lang in ((a, "eng"), (b, "fra")):
            outs[c] = o.add_stream_from_template(c.streams.audio[0])
            outs[c].metadata["language"] = lang
        for c, streams in ((a, (a.streams.video[0], a.streams.audio[0])), (b, (b.streams.audio[0],))):
            for pkt in c.demux(*streams):
                if pkt.dts is not None:
                    pkt.stream = v if pkt.stream.type == "video" else outs[c]
                    o.mux(pkt)

    def tracks(path):
        with av.open(str(path)) as c:
            data = {s.index: [] for s in c.streams.audio}
            for p in c.demux(*c.streams.audio):
                if p.size:
                    data[p.stream.index].append(bytes(p))
            return [(s.metadata.get("language"), s.codec_context.name, data[s.index]) for s in c.streams.audio]

    for name, kw in (("all.mp4", {}), ("trim.mkv", dict(start=0.5, end=1.5)), ("all.webm", {})):
        roundtrip(src, tmp_path / name, **kw)
        got, want = tracks(tmp_path / name), tracks(src)
        assert [(lang, codec) for lang, codec, _ in got] == ([("eng", "opus"), ("fra", "opus")] if "webm" in name
                                                             else [("eng", "aac"), ("fra", "aac")])
        if name == "all.mp4":
            assert [t[2] for t in got] == [t[2] for t in want]                 # copied, packet for packet
        if name == "trim.mkv":
            for (_, _, g), (_, _, w) in zip(got, want):
                assert abs(len(g) - 44100 / 1024) <= 2 and g == w[w.index(g[0]):w.index(g[0]) + len(g)]
    # QuickTime keeps a language only in its own codes: French is "fra" there, German "ger" (not "deu")
    with av.open(str(src)) as i, av.open(str(tmp_path / "de.mkv"), "w") as o:
        outs = {s.index: o.add_stream_from_template(s) for s in (i.streams.video[0], i.streams.audio[1])}
        outs[i.streams.audio[1].index].metadata["language"] = "deu"
        for pkt in i.demux(i.streams.video[0], i.streams.audio[1]):
            if pkt.dts is not None:
                pkt.stream = outs[pkt.stream.index]
                o.mux(pkt)
    for name, lang in (("de.mov", "ger"), ("de.mp4", "deu")):
        roundtrip(tmp_path / "de.mkv", tmp_path / name)
        assert [t[0] for t in tracks(tmp_path / name)] == [lang]
    roundtrip(src, tmp_path / "all.mov")
    assert [t[0] for t in tracks(tmp_path / "all.mov")] == ["eng", "fra"]
    roundtrip(src, tmp_path / "one.flv")                                     # FLV holds one audio stream
    assert [t[2] for t in tracks(tmp_path / "one.flv")] == [tracks(src)[0][2]]


@pytest.mark.parametrize("codec, ext, acodec", [("libx265", ".mp4", "aac"), ("libvpx-vp9", ".webm", "opus"),
                                                ("libx264", ".mkv", "aac")])
def test_codecs_and_containers(clips, tmp_path, codec, ext, acodec, caplog):
    if codec not in av.codecs_available:
        pytest.skip(f"{codec} not in this FFmpeg")
    dst = tmp_path / f"out{ext}"
    with caplog.at_level(logging.WARNING):
        roundtrip(clips["cfr"], dst, codec=codec, crf=30)
    out = probe(dst)
    assert out.codec == {"libx265": "hevc", "libvpx-vp9": "vp9", "libx264": "h264"}[codec]
    assert out.n_frames == 48 or len(list(VideoReader(dst))) == 48
    assert out.audio_codec == acodec
    if acodec == "opus":  # WebM cannot hold AAC: re-encoded, and said so
        assert "re-encoding" in caplog.text


def test_writer_checks_and_atomicity(clips, tmp_path):
    info = probe(clips["cfr"])
    with pytest.raises(InputError, match="unknown video codec"):
        VideoWriter(tmp_path / "x.mp4", info, codec="h263")
    with VideoWriter(tmp_path / "y.mp4", info) as w:
        with pytest.raises(ValueError, match="image must be 48x64"):
            w.write(np.zeros((10, 10, 3), np.uint8), pts=0)
        with pytest.raises(ValueError, match="uint8"):
            w.write(np.zeros((48, 64, 3), np.float32), pts=0)
        w.write(np.zeros((48, 64, 3), np.uint8), pts=0)
    with pytest.raises(OutputError, match="no frame"):
        VideoWriter(tmp_path / "z.mp4", info).close()
    dst = tmp_path / "never.mp4"
    with pytest.raises(RuntimeError, match="stage failed"):
        with atomic_output(dst) as tmp, VideoWriter(tmp, info, audio_from=clips["cfr"]) as w:
            for f in VideoReader(clips["cfr"]):
                w.write_frame(f)
                if f.index == 10:
                    raise RuntimeError("stage failed")
    assert not dst.exists() and list(tmp_path.glob(".never*")) == []


def make_gif(path, n=6, size=(40, 32), durations_ms=(40, 100, 60, 200, 40, 120)):
    """An animated GIF made with Pillow: ``n`` frames of the test pattern with uneven durations."""
    from PIL import Image

    frames = [Image.fromarray(pattern(i * 9, *size)) for i in range(n)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=list(durations_ms[:n]), loop=0)
    return path


def gif_durations_ms(path) -> list[int]:
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        return [fr.info["duration"] for fr in ImageSequence.Iterator(im)]


def test_gif_in_gif_out_keeps_frames_and_durations(tmp_path):
    """Issue 10.10: an animated GIF written to .gif (the gif encoder, not libx264), timing kept."""
    src = make_gif(tmp_path / "anim.gif")
    dst = tmp_path / "out.gif"
    info, n = roundtrip(src, dst, codec="libx264")      # the old CLI default gives way to the extension
    assert n == 6
    out = probe(dst)
    assert out.codec == "gif" and (out.width, out.height) == (40, 32)
    assert gif_durations_ms(dst) == gif_durations_ms(src) == [40, 100, 60, 200, 40, 120]
    for fa, fb in zip(VideoReader(src), VideoReader(dst)):
        assert np.abs(fa.image.astype(int) - fb.image.astype(int)).mean() < 3  # a palette per frame
    assert list(tmp_path.glob(".*partial*")) == []


def test_video_to_gif_and_webm_follow_the_extension(clips, tmp_path):
    for ext, codec in ((".gif", "gif"), (".webm", "vp9"), (".mp4", "h264"), (".mov", "h264")):
        dst = tmp_path / f"out{ext}"
        roundtrip(clips["rot90"], dst)                    # codec "auto"; GIF drops audio and rotation
        out = probe(dst)
        assert out.codec == codec, ext
        assert (out.width, out.height) == (48, 64)      # upright either way
        assert len(list(VideoReader(dst))) == 48
        assert out.has_audio == (ext != ".gif")


def test_bad_output_extension_names_the_users_file(clips, tmp_path):
    info = probe(clips["cfr"])
    dst = tmp_path / "result.txt"
    with pytest.raises(OutputError) as e:
        with atomic_output(dst) as tmp, VideoWriter(tmp, info) as w:
            w.write(np.zeros((48, 64, 3), np.uint8), pts=0)
    msg = str(e.value)
    assert str(dst) in msg and "partial" not in msg and "\n" not in msg
    assert ".mp4" in msg and ".gif" in msg and ".webm" in msg
    assert not dst.exists() and list(tmp_path.glob(".*partial*")) == []


def test_encoder_choice_preset_and_threads(clips, tmp_path, monkeypatch):
    from fsvideo.video import encoders

    info = probe(clips["cfr"])
    with pytest.raises(InputError, match="unknown preset"):
        VideoWriter(tmp_path / "p.mp4", info, preset="warp")
    with VideoWriter(tmp_path / "a.mp4", info, preset="veryfast") as w:
        w.write(np.zeros((48, 64, 3), np.uint8), pts=0)
        cc = w._video.codec_context
        assert cc.thread_type.name == "FRAME" and cc.thread_count == 0    # x264 frame threads, one per core
    expected = "h264_nvenc" if encoders.nvenc_usable(64, 48) else "libx264"
    assert w.encoder == w.codec == expected and w.encoder_options["preset"] in ("veryfast", "p3")
    # NVENC listed and "usable" but failing to open here: auto falls back to libx264 cleanly.
    monkeypatch.setattr(encoders, "nvenc_usable", lambda *a, **k: False)
    with VideoWriter(tmp_path / "b.mp4", info, codec="h264_nvenc") as w:
        w.write(np.zeros((48, 64, 3), np.uint8), pts=0)
    assert w.encoder == "libx264" and probe(tmp_path / "b.mp4").codec == "h264"


def test_nvenc_is_used_when_it_opens(clips, tmp_path):
    from fsvideo.video import encoders

    if not encoders.nvenc_usable(64, 48):
        pytest.skip("no h264_nvenc with a CUDA GPU here")
    dst = tmp_path / "gpu.mp4"
    with VideoWriter(dst, probe(clips["cfr"])) as w:
        for f in VideoReader(clips["cfr"]):
            w.write_frame(f)
    assert w.encoder == "h264_nvenc" and probe(dst).codec == "h264" and len(list(VideoReader(dst))) == 48


def test_decode_encode_chain_through_the_runner(clips, tmp_path):
    src = clips["vfr"]
    info = probe(src)
    spec = tmp_path / "copy.yaml"
    spec.write_text("stages:\n  - decode\n  - encode_video: {key: image}\n")
    dst = tmp_path / "copy.mp4"
    with atomic_output(dst) as tmp, VideoWriter(tmp, info, audio_from=src, preset="ultrafast") as writer:
        stages = build_chain(spec, Components(reader=VideoReader(src, info=info), writer=writer))
        stats = run_chain(stages, queue_size=2)
    assert stats.packets == 48
    assert [f.time for f in VideoReader(dst)] == pytest.approx(clips["times"]["vfr"], abs=1e-6)
    assert len(packets(dst, "audio")) == len(packets(src, "audio"))


def test_a_stream_that_changes_size_midway_is_scaled_to_the_first_size(tmp_path, caplog):
    """Two MPEG-TS parts of different sizes back to back (a broadcast, a screen recording): every frame
    comes out at the first frame's size and the clip re-encodes (the writer refused frame 3 before)."""
    def part(path, size, first):
        with av.open(str(path), "w", format="mpegts") as out:
            s = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "bf": "0"})
            s.width, s.height, s.pix_fmt = *size, "yuv420p"
            s.codec_context.time_base = Fraction(1, 90000)
            for i in range(first, first + 3):
                f = av.VideoFrame.from_ndarray(pattern(i, *size), format="rgb24")
                f.pts, f.time_base = i * 3600, Fraction(1, 90000)
                out.mux(s.encode(f))
            out.mux(s.encode(None))
    part(tmp_path / "a.ts", (64, 48), 0)
    part(tmp_path / "b.ts", (96, 72), 3)
    src = tmp_path / "both.ts"
    src.write_bytes((tmp_path / "a.ts").read_bytes() + (tmp_path / "b.ts").read_bytes())
    with caplog.at_level(logging.WARNING):
        frames = list(VideoReader(src))
    assert [f.image.shape for f in frames] == [(48, 64, 3)] * 6
    assert "changes its frame size to 96x72 at frame 3" in caplog.text
    assert np.abs(frames[4].image.astype(int) - pattern(4, 64, 48)).mean() < 8      # scaled, not cropped
    _, n = roundtrip(src, tmp_path / "out.mp4")
    assert n == 6 and len(list(VideoReader(tmp_path / "out.mp4"))) == 6


def _pattern_h264(path, n: int, *, encoder: dict | None = None, muxer: dict | None = None) -> None:
    """``n`` frames of ``pattern`` at 64x48, 25 frames/s, H.264 with ``encoder`` options, muxed with ``muxer``'s."""
    with av.open(str(path), "w", options=muxer or {}) as out:
        s = out.add_stream("libx264", rate=25, options=encoder or {})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(n):
            f = av.VideoFrame.from_ndarray(pattern(i, 64, 48), format="rgb24")
            f.pts = i
            out.mux(s.encode(f))
        out.mux(s.encode(None))


def test_a_video_cut_before_its_first_key_frame_says_so_not_truncated(tmp_path, caplog):
    """A copy cut in the middle of a group of pictures: the frames before the first key frame cannot be
    decoded.  The warning names that (it said "may be truncated", which sends the user looking for a
    damaged end)."""
    whole = tmp_path / "whole.mp4"
    _pattern_h264(whole, 48, encoder={"g": "12", "bf": "0"})

    def cut(dst, keep):
        with av.open(str(whole)) as i, av.open(str(dst), "w") as o:
            vo = o.add_stream_from_template(i.streams.video[0])
            for n, pkt in enumerate(p for p in i.demux(i.streams.video[0]) if p.dts is not None):
                if keep(n):
                    pkt.stream = vo
                    o.mux(pkt)
    cut(tmp_path / "head.mp4", lambda n: n >= 5)              # frames 5-11 wait for the key frame at 12
    with caplog.at_level(logging.WARNING):
        frames = list(VideoReader(tmp_path / "head.mp4"))
    assert len(frames) == 36 and "first 0.28 s of video could not be decoded" in caplog.text
    assert "truncated" not in caplog.text


# ------------------------------------------------------------------------------------------- images

def test_images_are_one_frame_videos_with_exif_orientation(tmp_path):
    from PIL import Image

    img = pattern(0, 40, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    Image.fromarray(img).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    info = probe(tmp_path / "phone.jpg")
    assert info.is_image and (info.width, info.height, info.n_frames) == (30, 40, 1)
    frames = list(VideoReader(tmp_path / "phone.jpg"))
    assert len(frames) == 1 and frames[0].image.shape == (40, 30, 3)
    assert frames[0].image[:4, -4:, 1].mean() > 200  # the top-left marker is now top-right

    with atomic_output(tmp_path / "out.png") as tmp, ImageWriter(tmp) as w:
        w.write_frame(frames[0])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), frames[0].image)
    write_image(tmp_path / "direct.jpg", img)
    assert np.asarray(Image.open(tmp_path / "direct.jpg")).shape == (30, 40, 3)


# -------------------------------------------------------------------------------------- bad inputs

def _audio_only(path):
    with av.open(str(path), "w") as out:
        a = out.add_stream("aac", rate=44100)
        a.layout = "mono"
        for i in range(0, 44100, 1024):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
            fr.sample_rate, fr.pts = 44100, i
            out.mux(a.encode(fr))
        out.mux(a.encode(None))


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, clips, shared_dir):
    d = tmp_path_factory.mktemp("bad")
    (d / "zero.mp4").write_bytes(b"")
    (d / "random.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    data = clips["cfr"].read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])  # index (moov) at the end: cut off
    _pattern_h264(d / "fast.mp4", 24, muxer={"movflags": "faststart"})              # index first
    fast = (d / "fast.mp4").read_bytes()
    (d / "truncated_faststart.mp4").write_bytes(fast[: len(fast) * 2 // 3])
    shutil.copy(shared_dir / "media/images/wild/facerec-obama.jpg", d / "photo.mp4")
    _audio_only(d / "voice.m4a")
    (d / "folder.mp4").mkdir()
    from PIL import Image
    ims = [Image.fromarray(pattern(i * 20, 40, 32)) for i in range(4)]
    for name in ("anim.png", "anim.webp"):                  # animated: not to be cut to their first frame
        ims[0].save(d / name, save_all=True, append_images=ims[1:], duration=100, loop=0)
    _song_with_cover(d / "song.mp3")
    return d


def _song_with_cover(path):
    """An mp3 with cover art: FFmpeg shows the picture as a one-frame video stream (attached_pic)."""
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(pattern(3, 32, 32)).save(buf, "JPEG")
    with av.open(str(path), "w") as out:
        a = out.add_stream("libmp3lame", rate=44100)
        a.layout = "mono"
        c = out.add_stream("mjpeg", rate=1)
        c.width, c.height, c.pix_fmt = 32, 32, "yuvj420p"
        c.disposition = av.stream.Disposition.attached_pic
        pkt = av.Packet(buf.getvalue())
        pkt.stream, pkt.pts, pkt.dts = c, 0, 0
        out.mux(pkt)
        for i in range(0, 44100, 1152):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1152), np.float32), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 44100, i
            out.mux(a.encode(fr))
        out.mux(a.encode(None))


@pytest.mark.parametrize("name, match", [
    ("zero.mp4", "empty"),
    ("random.mp4", "not a video or image"),
    ("truncated.mp4", "truncated or damaged MP4"),
    ("truncated_faststart.mp4", "truncated"),
    ("photo.mp4", "JPEG image, not a video"),
    ("voice.m4a", "no video stream"),
    ("folder.mp4", "folder"),
    ("missing.mp4", "no such file"),
    ("song.mp3", "no video stream \\(audio with a cover picture\\)"),   # not "a JPEG image, rename it"
    ("anim.png", "animated PNG \\(4 frames\\)"),
    ("anim.webp", "animated WEBP \\(4 frames\\)"),
])
def test_bad_inputs_raise_input_error_naming_the_file(bad_files, name, match):
    with pytest.raises(InputError, match=match) as ei:
        probe(bad_files / name)
    assert name in str(ei.value) and ei.value.hint
    assert "\n" not in str(ei.value)
    with pytest.raises(InputError):
        list(VideoReader(bad_files / name))


# ------------------------------------------------------------------------------------- real media

@pytest.mark.parametrize("name", [
    "other/pyfeat-single_face.mp4",          # h264 + mp3
    "other/pyfeat-face_noface.mov",          # HEVC in MOV, variable frame rate, AAC
    "other/pyfeat-no_face.mp4",              # an edit list that cuts the last frame short
    "other/cremad-1001_DFA_HAP_XX.flv",      # FLV, VP6, mono mp3
])
def test_real_media_roundtrip(media_dir, tmp_path, name):
    src = media_dir / "videos" / name
    if not src.is_file():
        pytest.skip(f"{src} not present")
    check_roundtrip(src, tmp_path / (Path(name).stem + ".mp4"), tol_px=8.0)


def test_real_media_probe(media_dir):
    info = probe(media_dir / "videos/other/pyfeat-face_noface.mov")
    assert info.codec == "hevc" and info.has_audio and (info.width, info.height) == (960, 540)
    info = probe(media_dir / "videos/other/liveportrait-d13.mp4")
    assert (info.width, info.height) == (720, 1280) and not info.has_audio
    info = probe(media_dir / "videos/other/styleganex-pexels-anthony-shkraba-production-8136210.mp4")
    assert info.fps == 50 and info.n_frames == 500


@pytest.mark.parametrize("name", ["other/pyfeat-single_face.mp4", "other/cremad-1001_DFA_ANG_XX.flv"])
def test_seeking_trim_gives_the_same_frames_as_a_full_read(media_dir, name):
    src = media_dir / "videos" / name
    if not src.is_file():
        pytest.skip(f"{src} not present")
    full = [f for f in VideoReader(src, end=1.6) if f.time >= 1.0 - 1e-6]
    trimmed = list(VideoReader(src, start=1.0, end=1.6))
    assert [f.pts for f in trimmed] == [f.pts for f in full] and len(full) > 10
    assert all(np.array_equal(a.image, b.image) for a, b in zip(trimmed, full))


# ------------------------------------------------------------------------------------- atomic writes

def test_atomic_output_and_dir(tmp_path):
    from fsvideo.utils import atomic_dir

    dst = tmp_path / "a.json"
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(dst) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert not dst.exists() and list(tmp_path.iterdir()) == []
    with atomic_output(dst, fsync=True) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".json"
        tmp.write_text("done")
    assert dst.read_text() == "done" and len(list(tmp_path.iterdir())) == 1
    with pytest.raises(OutputError, match="already exists"):
        with atomic_output(dst):
            pass
    # Fails as root too: the "folder" is a regular file, or a place nobody can create files in.
    for bad in (dst / "out.mp4", Path("/proc/fsvideo-out.mp4")):
        with pytest.raises(OutputError) as e:
            with atomic_output(bad):
                pass
        assert str(bad.parent) in str(e.value) and "\n" not in str(e.value)
    folder = tmp_path / "grids"
    with atomic_dir(folder) as d:
        (d / "x.txt").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(folder, overwrite=True) as d:
            (d / "y.txt").write_text("2")
            raise RuntimeError("interrupted")
    assert [p.name for p in folder.iterdir()] == ["x.txt"]
    with atomic_dir(folder, overwrite=True) as d:
        (d / "y.txt").write_text("2")
    assert [p.name for p in folder.iterdir()] == ["y.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "grids"]


def test_atomic_outputs_get_the_umask_permissions_not_the_temp_files(tmp_path):
    """A finished output is readable as any new file is (0644 under umask 022), not owner-only as the
    0600/0700 of a mkstemp/mkdtemp temporary would leave it after the rename."""
    import os
    import stat

    from fsvideo.utils import atomic_dir

    old = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "out.mp4") as tmp:
            tmp.write_bytes(b"video")
        with atomic_dir(tmp_path / "crops") as d:
            (d / "a.png").write_bytes(b"png")
        os.umask(0o077)                                  # a private umask is respected too
        with atomic_output(tmp_path / "private.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.mp4").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "crops").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600


@pytest.mark.parametrize("start, end", [(float("nan"), 1.0), (-1.0, None), (None, float("inf")), (0.5, 0.5)])
def test_a_span_that_is_not_seconds_in_the_video_is_one_line(start, end):
    """`fsvideo edit --start nan` was an internal error (NaN passed every comparison, then `int()` failed
    deep in the run); the reader, the run's preparation and the studio share one check."""
    from fsvideo.video.reader import check_span
    with pytest.raises(InputError, match="is not a time in the video|is not after --start"):
        check_span(start, end)
    check_span(0.0, 1.0), check_span(None, None)
