"""Subtitle streams are carried into the output like the audio: copied, converted for MP4, trimmed and
shifted with ``--start``/``--end``, or left out with one warning where the container holds none.
(They were silently dropped before.)"""
from __future__ import annotations

import logging

import av
import pytest

from fsvideo.utils import atomic_output
from fsvideo.video import VideoReader, VideoWriter, probe
from fsvideo.video.join import SpanWriter, frame_times, join_segments, split_spans
from fsvideo.video.synth import add_subtitles, make_test_clip

SRT = """1
00:00:00,200 --> 00:00:00,800
Bonjour

2
00:00:01,000 --> 00:00:01,400
Salut

3
00:00:01,500 --> 00:00:01,900
Fin
"""
# The mkv muxer moves every stream by the AAC priming (1024 / 44100 s) so that no timestamp is negative.
D = 0.023
CUES = [(round(0.2 + D, 3), round(0.8 + D, 3), "Bonjour"), (round(1.0 + D, 3), round(1.4 + D, 3), "Salut"),
        (round(1.5 + D, 3), round(1.9 + D, 3), "Fin")]


def kept(start, end=None):
    """CUES as a run with --start/--end keeps them: those overlapping the span, cut to it, moved by -start."""
    end = end or 9.0
    return [(round(max(a, start) - start, 3), round(min(b, end) - start, 3), t) for a, b, t in CUES
            if b > start and a < end]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 48-frame (1.92 s) .mkv with H.264 video, AAC audio and an SRT subtitle stream in French."""
    d = tmp_path_factory.mktemp("subs")
    make_test_clip(d / "a.mp4")
    (d / "fra.srt").write_text(SRT)
    src = d / "film.mkv"
    add_subtitles(d / "a.mp4", d / "fra.srt", src, "fra")
    return src


def write(src, dst, start=None, end=None):
    info = probe(src)
    with atomic_output(dst) as tmp, VideoWriter(tmp, info, audio_from=src, start=start, end=end,
                                                 preset="ultrafast", shown=dst) as w:
        for f in VideoReader(src, start, end, info=info):
            w.write_frame(f)


def cues(path):
    """[(language, codec, [(start s, end s, text)])] of each subtitle stream of ``path``."""
    out = []
    with av.open(str(path)) as c:
        for s in c.streams.subtitles:
            got = []
            for p in c.demux(s):
                if not p.size or p.pts is None:
                    continue
                text = "".join(r.dialogue.decode() if isinstance(r.dialogue, bytes) else r.dialogue
                               for r in (s.codec_context.decode2(p) or ()))
                if text:                               # (MP4 fills the gaps with empty cues)
                    t0 = float(p.pts * s.time_base)
                    got.append((round(t0, 3), round(t0 + float(p.duration * s.time_base), 3), text))
            out.append(((s.metadata or {}).get("language"), s.codec_context.name, got))
    return out


def test_mkv_output_keeps_the_subtitle_stream_language_and_cues(source, tmp_path):
    assert cues(source) == [("fra", "srt", CUES)]
    write(source, tmp_path / "out.mkv")
    assert cues(tmp_path / "out.mkv") == [("fra", "srt", CUES)]
    assert probe(tmp_path / "out.mkv").has_audio


def test_start_end_shift_and_cut_the_cues_as_the_audio(source, tmp_path):
    """--start 0.5 --end 1.6: 'Bonjour' (0.22-0.82) shows from 0 to 0.32, 'Salut' moves to 0.52-0.92,
    'Fin' is cut at the end (1.52-1.6 -> 1.02-1.1); the audio moves by the same 0.5 s."""
    write(source, tmp_path / "trim.mkv", start=0.5, end=1.6)
    assert kept(0.5, 1.6) == [(0.0, 0.323, "Bonjour"), (0.523, 0.923, "Salut"), (1.023, 1.1, "Fin")]
    assert cues(tmp_path / "trim.mkv") == [("fra", "srt", kept(0.5, 1.6))]
    write(source, tmp_path / "late.mkv", start=0.9)
    assert cues(tmp_path / "late.mkv") == [("fra", "srt", kept(0.9))] and len(kept(0.9)) == 2

    def first_audio(path):
        with av.open(str(path)) as c:
            return next(float(p.pts * p.time_base) for p in c.demux(c.streams.audio[0]) if p.size)
    # the audio's first kept packet moves by the same offset (a packet boundary, within one AAC frame)
    assert first_audio(tmp_path / "late.mkv") == pytest.approx(0.0, abs=1024 / 44100)


def test_mp4_output_converts_srt_to_mov_text(source, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        write(source, tmp_path / "out.mp4")
    assert not [r for r in caplog.records if "subtitle" in r.getMessage()]
    assert cues(tmp_path / "out.mp4") == [("fra", "mov_text", CUES)]
    write(tmp_path / "out.mp4", tmp_path / "again.mp4", start=0.5)          # mov_text copied into MP4
    assert cues(tmp_path / "again.mp4") == [("fra", "mov_text", kept(0.5))]


@pytest.mark.parametrize("ext", [".gif", ".avi", ".ts"])
def test_container_without_subtitles_warns_once_naming_the_stream(source, tmp_path, caplog, ext):
    with caplog.at_level(logging.WARNING):
        write(source, tmp_path / f"out{ext}")
    warned = [r.getMessage() for r in caplog.records if "subtitle" in r.getMessage()]
    assert len(warned) == 1 and "#2 (srt, fra)" in warned[0] and ".mkv" in warned[0], warned
    with av.open(str(tmp_path / f"out{ext}")) as c:
        assert {s.type for s in c.streams} <= {"video", "audio"}      # (not an unnamed data stream either)


@pytest.mark.parametrize("trim", [(None, None), (0.5, 1.6)])
def test_split_run_joins_with_the_single_runs_subtitles(source, tmp_path, trim):
    """Spans edited apart and joined carry the cues as a single run does (the join crashed on nothing but
    dropped them silently before: it copies only video and audio)."""
    start, end = trim
    info = probe(source)
    write(source, tmp_path / "single.mkv", start, end)
    spans = split_spans(frame_times(source, info), 3, start, end)
    parts = [tmp_path / f"p{i}.mkv" for i in range(len(spans))]
    for p, (a, b) in zip(parts, spans):
        with SpanWriter(VideoWriter(p, info, audio_from=source, start=a, end=b, preset="ultrafast"),
                        info, a, b) as w:
            for f in VideoReader(source, max(0.0, (a or 0.0) - 0.3) or None, b, info=info):
                w.write_frame(f)
    join_segments(parts, tmp_path / "joined.mkv", info, [a for a, _ in spans], end=spans[-1][1])
    assert cues(tmp_path / "joined.mkv") == cues(tmp_path / "single.mkv") == [("fra", "srt", kept(start or 0.0, end))]


def test_a_cue_begun_long_before_start_is_kept(tmp_path):
    """A cue that began more than 60 s before --start and still shows at --start was missed: the reader
    of the subtitles sought 60 s back and never saw it.  The subtitle stream is now read from the file's
    start, so it shows from 0 (cut to the span like any cue)."""
    import numpy as np
    with av.open(str(tmp_path / "a.mp4"), "w") as o:      # 150 s at 2 fps, a key frame every 5 s (seek points)
        v = o.add_stream("libx264", rate=2, options={"g": "10", "preset": "ultrafast"})
        v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
        for i in range(300):
            img = np.full((32, 32, 3), i % 256, np.uint8)
            o.mux(v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        o.mux(v.encode())
    (tmp_path / "eng.srt").write_text("1\n00:00:02,000 --> 00:02:26,000\nA long sign\n\n"   # (the seek on the
                                      "2\n00:00:50,000 --> 00:00:51,000\nEarly\n\n"       # subtitle stream lands
                                      "3\n00:02:23,000 --> 00:02:24,000\nLate\n")         # on "Early")
    src = tmp_path / "long.mkv"
    add_subtitles(tmp_path / "a.mp4", tmp_path / "eng.srt", src, "eng")
    start, end = 140.0, 145.0
    assert start - 2.0 > 60                       # (the look-back of the seek the reader made)
    write(src, tmp_path / "trim.mkv", start=start, end=end)
    (lang, codec, got), = cues(tmp_path / "trim.mkv")
    assert lang == "eng" and [t for *_, t in got] == ["A long sign", "Late"], got
    (a0, a1, _), (b0, b1, _) = got
    assert a0 == 0.0 and a1 == pytest.approx(end - start, abs=0.05)        # shown from 0, cut at --end
    assert b0 == pytest.approx(143.0 - start, abs=0.05) and b1 == pytest.approx(144.0 - start, abs=0.05)
