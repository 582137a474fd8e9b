"""Subtitle passthrough: carry a source's subtitle streams into an output, as ``ffmpeg -c:s copy`` would.

Every subtitle stream is kept, in the source's order with its language tag.  Where the output
container holds the source's codec (SRT/ASS/WebVTT in MKV, mov_text in MP4/MOV, WebVTT in WebM) the
packets are copied as they are.  Where it holds text subtitles of another codec (SRT or ASS into an
MP4 or a WebM) each cue is decoded and re-encoded to the container's text codec (``mov_text``,
``webvtt``), with PyAV's subtitle encoder (``SubtitleCodecContext.encode_subtitle``, PyAV >= 16).
Where the output holds no subtitles players read (GIF, AVI, FLV, MPEG-TS), or a bitmap subtitle (DVD,
PGS) would need converting to text, the streams are left out with ONE warning naming them and the fix.

Timing follows the audio (:mod:`fsvideo.video.audio`): output time 0 is source time ``offset_s``,
and with a trim only the cues that overlap ``[start, end)`` are kept, cut to it (a cue shown from
before ``--start`` starts at 0; one running past ``--end`` stops there).  The subtitle streams are read
from the file's start, however late ``--start`` is: a cue shown at ``--start`` may have begun at any
time before it, and a seek lands on the last cue that began before its target, or a key frame, not on
the cues still showing (a 60 s look-back missed a sign shown for minutes).  Only subtitle packets
reach Python; the demuxer reads the file's other packets before ``--start`` and drops them (0.2 s to
skip 38 minutes of a 500 MB MKV in the page cache, against 0.05 s for the seek).  The shift is the audio's:
``floor(offset_s / time_base)`` ticks of the source stream's time base.

The writer calls :meth:`SubtitlePassthrough.pump` after each video frame with that frame's output time
(so the cues are interleaved with the video) and ``pump(None)`` at the end.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import av
import av.error

from fsvideo.video.audio import SourceCopy, Track, language_tag

log = logging.getLogger(__name__)

# Containers that hold subtitle streams players read: Matroska any codec, the others those of _TEXT_CODEC.
# (An MPEG-TS takes SRT packets as an unnamed data stream no player shows; GIF, AVI and FLV take none.)
_HOLDS_SUBTITLES = (".mkv", ".mp4", ".m4v", ".mov", ".webm")
# The text subtitle codec a container takes when the source's codec cannot be copied into it.
_TEXT_CODEC = {".mp4": "mov_text", ".m4v": "mov_text", ".mov": "mov_text", ".webm": "webvtt"}
# Decoders that give text cues (ASS events) an encoder of another text codec can take.
_TEXT_SOURCES = ("subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text")


def _describe(s) -> str:
    lang = (s.metadata or {}).get("language")
    return f"#{s.index} ({s.codec_context.name}{', ' + lang if lang else ''})"


class SubtitlePassthrough(SourceCopy):
    """Carries the subtitle streams of ``src`` into ``out`` (an open output container, header not written).

    Args:
        out: the output container (streams are added now).
        src: the file whose subtitle streams are carried.
        offset_s: the source time (absolute seconds, container clock) that is output time 0.
        start: the trim start (seconds, player clock), or None: cues ending before ``offset_s`` are left out.
        end_abs: absolute source time where the cues stop, or None for the end.
        shown: the output's name for log lines (the user's file, not a temporary one).
        warn: log the warning about streams left out (False where another writer already did).
    """

    def __init__(self, out, src: Path, *, offset_s: float, start: float | None, end_abs: float | None,
                 shown: str, warn: bool = True):
        super().__init__(out, src, offset_s=offset_s, start=start, end_abs=end_abs)
        self.done = True
        self._streams: dict[int, Track] = {}       # source stream index -> its output track
        sources = list(self._in.streams.subtitles)
        if not sources:
            return
        ext = Path(shown).suffix.lower()
        dropped = []
        for s in sources:
            track = self._add_output_stream(s, ext) if ext in _HOLDS_SUBTITLES else None
            if track is None:
                dropped.append(s)
            else:
                self._streams[s.index] = track
        if dropped and warn:
            fix = "write an .mkv output to keep them"
            log.warning("%s: a %s file cannot hold the subtitle stream%s %s of %s; %s left out (%s)", shown, ext,
                        "s" if len(dropped) > 1 else "", ", ".join(_describe(s) for s in dropped), src,
                        "they are" if len(dropped) > 1 else "it is", fix)
        if not self._streams:
            return
        self._iter = self._in.demux(*[t.src for t in self._streams.values()])   # from the start: module doc
        self.done = False

    def _add_output_stream(self, s, ext: str) -> Track | None:
        """The output track for source stream ``s``: a copy, a text conversion, or None (not possible)."""
        try:
            out, convert = self._out.add_stream_from_template(s), False
        except ValueError:
            target = _TEXT_CODEC.get(ext)
            if target is None or s.codec_context.name not in _TEXT_SOURCES:
                return None
            try:
                dec = s.codec_context
                dec.open()                            # the decoder makes the ASS header the encoder needs
                out = self._out.add_stream(target)
                out.codec_context.subtitle_header = dec.subtitle_header
                out.codec_context.time_base = s.time_base
                out.time_base = s.time_base
            except (av.error.FFmpegError, ValueError, AttributeError) as e:
                log.debug("cannot convert %s subtitles to %s (%s)", s.codec_context.name, target, e)
                return None
            convert = True
            log.info("converting subtitle stream %s to %s", _describe(s), target)
        lang = language_tag((s.metadata or {}).get("language"), ext)
        if lang:
            out.metadata["language"] = lang
        return Track(s, out, convert)

    def pump(self, until: float | None) -> None:
        """Carry the cues that start up to output time ``until`` seconds (None: to the end)."""
        while not self.done:
            pkt, self._pending = self._pending, None
            if pkt is None:
                try:
                    pkt = next(self._iter)
                except StopIteration:
                    self.done = True
                    return
                except av.error.FFmpegError as e:
                    log.warning("subtitles of %s stop early (FFmpeg: %s)", self._in.name, e)
                    self.done = True
                    return
            track = self._streams.get(pkt.stream.index)
            if track is None or track.ended or pkt.pts is None or not pkt.size:
                continue                              # (the demuxer's empty flush packet has no pts)
            t0 = float(pkt.pts * track.tb)
            if self.end_abs is not None and t0 >= self.end_abs - 1e-9:
                track.ended = True
                self.done = all(t.ended for t in self._streams.values())
                continue
            if self.start and t0 + float((pkt.duration or 0) * track.tb) <= self.offset_s + 1e-9:
                continue                              # shown and gone before --start
            if until is not None and t0 - self.offset_s > until:
                self._pending = pkt
                return
            self._mux(track, pkt)

    def _mux(self, track: Track, pkt) -> None:
        """Shift ``pkt`` by the audio's offset, cut it to the kept span, and write it (re-encoded if need be)."""
        off = int(math.floor(self.offset_s / track.tb + 1e-9))
        pts, dur = int(pkt.pts) - off, int(pkt.duration or 0)
        if self.start and pts < 0:                    # shown from before --start: from 0 on
            dur, pts = max(1, dur + pts) if dur else 0, 0
        if self.end_abs is not None and dur:
            end = int(math.floor(self.end_abs / track.tb + 1e-9)) - off
            dur = max(1, min(dur, end - pts))
        if track.recode:
            try:
                cues = track.src.codec_context.decode2(pkt)
                if cues is None:
                    return
                pkt = track.out.codec_context.encode_subtitle(cues)
            except (av.error.FFmpegError, ValueError) as e:
                log.warning("subtitle stream %s of %s stops at %.2f s: a cue could not be converted to %s (%s); "
                            "write an .mkv output to keep it whole", _describe(track.src), self._in.name,
                            pts * float(track.tb), track.out.codec_context.name, e)
                track.ended = True
                return
        pkt.pts = pkt.dts = pts
        pkt.duration = dur
        pkt.time_base = track.tb
        pkt.stream = track.out
        self._out.mux(pkt)

    def close(self) -> None:
        """Stop and close the source file (idempotent)."""
        self.done = True
        super().close()
