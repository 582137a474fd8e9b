"""Spans written separately (each from a fresh encoder) join without re-encoding into the single-run file."""
from __future__ import annotations

import av
import numpy as np
import pytest

from fsvideo.errors import PipelineError
from fsvideo.video import VideoReader, VideoWriter, probe
from fsvideo.video.join import SpanWriter, frame_times, join_segments, split_spans
from fsvideo.video.synth import make_test_clip


def _write(src, info, path, start, end, context=0.5, crf=0):
    """Copy frames of [start, end) (reading `context` s around it) through a SpanWriter, losslessly."""
    lo = max(0.0, (start or 0.0) - context) or None
    hi = end + context if end is not None else None
    with SpanWriter(VideoWriter(path, info, crf=crf, audio_from=src if info.has_audio else None,
                                start=start, end=end), info, start, end) as w:
        for f in VideoReader(src, lo, hi, info=info):
            w.write_frame(f)
    return w.kept


def _packets(path, kind):
    with av.open(str(path)) as c:
        streams = c.streams.video if kind == "video" else c.streams.audio
        return [(p.pts, p.dts, bytes(p) if kind == "audio" else None) for p in c.demux(streams[0]) if p.size]


# an mp4 with AAC, an flv with MP3 (ms time base, re-timed by the MP4 muxer), a mov whose audio starts late
@pytest.mark.parametrize("clip", ["videos/other/pyfeat-single_face.mp4", "videos/other/cremad-1001_DFA_ANG_XX.flv",
                                  "videos/other/pyfeat-face_noface.mov"])
def test_joined_spans_equal_the_single_file(media_dir, tmp_path, clip):
    src = media_dir / clip
    info = probe(src)
    single = tmp_path / "single.mp4"
    n = _write(src, info, single, None, None)
    spans = split_spans(frame_times(src, info), 3)
    assert len(spans) == 3 and spans[0][0] is None and spans[-1][1] is None
    assert all(spans[i][1] == spans[i + 1][0] for i in range(2))
    parts = [tmp_path / f"p{i}.mp4" for i in range(3)]
    kept = [_write(src, info, p, a, b) for p, (a, b) in zip(parts, spans)]
    assert sum(kept) == n and min(kept) >= n // 3 - 1
    for p in parts:                                           # every span file starts with a key frame
        with av.open(str(p)) as c:
            assert next(x for x in c.demux(c.streams.video[0]) if x.size).is_keyframe
    joined = tmp_path / "joined.mp4"
    assert join_segments(parts, joined, info, [a for a, _ in spans]) == n
    # the same timestamps, the same audio packets (bytes and times), the same pixels (lossless encode)
    sv, jv = _packets(single, "video"), _packets(joined, "video")
    assert sorted(p[0] for p in sv) == sorted(p[0] for p in jv)
    if info.has_audio:
        assert _packets(single, "audio") == _packets(joined, "audio")
    a = [f.image for f in VideoReader(single)]
    b = [f.image for f in VideoReader(joined)]
    assert len(a) == len(b) == n and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert probe(joined).duration_s == pytest.approx(probe(single).duration_s, abs=1e-3)


def _two_languages(tmp_path, eng_until=None, fra_from=None):
    """An .mkv: 48 frames (1.92 s), an 'eng' AAC track (440 Hz) up to ``eng_until`` s and a 'fra'
    one (880 Hz) from ``fra_from`` s (None: the whole video), mono."""
    make_test_clip(tmp_path / "a.mp4")
    make_test_clip(tmp_path / "b.mp4", tone_hz=880)
    src = tmp_path / "two.mkv"
    keep = {"eng": lambda t: eng_until is None or t < eng_until, "fra": lambda t: fra_from is None or t >= fra_from}
    with av.open(str(tmp_path / "a.mp4")) as a, av.open(str(tmp_path / "b.mp4")) as b, \
            av.open(str(src), "w") as o:
        v = o.add_stream_from_template(a.streams.video[0])
        outs = {}
        for c, lang in ((a, "eng"), (b, "fra")):
            outs[c] = (o.add_stream_from_template(c.streams.audio[0]), lang)
            outs[c][0].metadata["language"] = lang
        for c, streams in ((a, (a.streams.video[0], a.streams.audio[0])), (b, (b.streams.audio[0],))):
            for pkt in c.demux(*streams):
                if pkt.dts is None:
                    continue
                if pkt.stream.type == "audio" and not keep[outs[c][1]](float(pkt.pts * pkt.time_base)):
                    continue
                pkt.stream = v if pkt.stream.type == "video" else outs[c][0]
                o.mux(pkt)
    return src


def _audio_tracks(path):
    """``[(language, [(pts, dts, bytes), ...]), ...]``, one entry per audio stream in order."""
    with av.open(str(path)) as c:
        data = {s.index: [] for s in c.streams.audio}
        for p in c.demux(*c.streams.audio) if data else ():     # (no stream given: demux() reads all)
            if p.size:
                data[p.stream.index].append((p.pts, p.dts, bytes(p)))
        return [(s.metadata.get("language"), data[s.index]) for s in c.streams.audio]


# spans of 48 frames cut at 0.64 and 1.28 s.  'gaps': the first span holds only 'eng', the second no audio
# and the third only 'fra', as its first audio stream (an MP4 keeps no empty track; an MKV keeps them all).
# 'end': --end 1.2 before 'fra' starts, so every span holds only 'eng' (the join is told the last span's end).
@pytest.mark.parametrize("case, ext", [("both", ".mp4"), ("gaps", ".mp4"), ("gaps", ".mkv"), ("end", ".mp4")])
def test_joined_spans_keep_every_audio_stream(tmp_path, case, ext):
    """A second language survives a split run as it does a single run (the join kept only the first),
    also where a span holds one of the tracks or none: each span stream goes to its own track."""
    src = _two_languages(tmp_path, **{"both": {}, "gaps": dict(eng_until=0.5, fra_from=1.4),
                                      "end": dict(fra_from=1.4)}[case])
    end = 1.2 if case == "end" else None
    info = probe(src)
    single = tmp_path / f"single{ext}"
    n = _write(src, info, single, None, end)
    want = _audio_tracks(single)
    assert [lang for lang, _ in want] == (["eng"] if case == "end" else ["eng", "fra"])
    assert all(len(t) > 5 for _, t in want)
    spans = split_spans(frame_times(src, info), 3, end=end)
    parts = [tmp_path / f"p{i}{ext}" for i in range(3)]
    for p, (a, b) in zip(parts, spans):
        _write(src, info, p, a, b)
    if ext == ".mp4" and case != "both":                    # the spans the join has to sort out
        assert [[lang for lang, _ in _audio_tracks(p)] for p in parts] == \
            ([["eng"], [], ["fra"]] if case == "gaps" else [["eng"]] * 3)
    joined = tmp_path / f"joined{ext}"
    assert join_segments(parts, joined, info, [a for a, _ in spans], end=end) == n
    assert _packets(single, "video") == _packets(joined, "video")
    assert _audio_tracks(joined) == want
    if case == "end":                                        # not told where the last span ends: refused
        with pytest.raises(PipelineError, match="audio streams"):
            join_segments(parts, tmp_path / "j2.mp4", info, [a for a, _ in spans])


def test_reencoded_audio_is_refused(tmp_path):
    """WebM cannot hold AAC: each span's audio was re-encoded (with its own priming), so no lossless join."""
    if "libvpx-vp9" not in av.codecs_available:
        pytest.skip("libvpx-vp9 not in this FFmpeg")
    src = _two_languages(tmp_path)
    info = probe(src)
    spans = split_spans(frame_times(src, info), 2, end=1.0)
    parts = [tmp_path / f"p{i}.webm" for i in range(2)]
    for p, (a, b) in zip(parts, spans):
        _write(src, info, p, a, b, crf=40)
    with pytest.raises(PipelineError, match=r"re-encoded \(aac -> opus\)"):
        join_segments(parts, tmp_path / "j.webm", info, [a for a, _ in spans], end=1.0)


def test_spans_of_different_settings_are_refused(media_dir, tmp_path):
    src = media_dir / "videos/other/pyfeat-single_face.mp4"
    info = probe(src)
    (a0, b0), (a1, b1) = split_spans(frame_times(src, info), 2, end=1.0)
    _write(src, info, tmp_path / "p0.mp4", a0, b0)
    with SpanWriter(VideoWriter(tmp_path / "p1.mp4", info, codec="libx264", crf=0, start=a1, end=b1,
                                width=info.width // 2 * 2 - 2, height=info.height), info, a1, b1) as w:
        for f in VideoReader(src, a1, b1, info=info):
            w.write(np.ascontiguousarray(f.image[:, :w.writer.width]), pts=f.pts, duration=f.duration)
    with pytest.raises(PipelineError, match="encoded differently"):
        join_segments([tmp_path / "p0.mp4", tmp_path / "p1.mp4"], tmp_path / "j.mp4", info, [a0, a1])


def test_split_spans_edges():
    t = [i / 10 for i in range(10)]
    spans = split_spans(t, 4, start=0.2, end=0.8)                        # 6 frames: 0.2 .. 0.7
    assert spans == [(0.2, 0.3), (0.3, 0.5), (0.5, 0.6), (0.6, 0.8)]
    sizes = [sum(a - 1e-6 <= x < b - 1e-6 for x in t) for a, b in spans]
    assert sum(sizes) == 6 and max(sizes) - min(sizes) <= 1
    assert split_spans(t[:2], 4) == [(None, 0.1), (0.1, None)]           # fewer frames than parts
