"""Audio passthrough: copy a source's audio packets into an output container, interleaved with the video.

Every audio stream is copied, in the source's order with its language tag (a second language or a
commentary track is kept; a FLV file holds only the first).  The packets are copied as they are (no
re-encode, so no quality loss and no work), shifted onto the output clock and trimmed to the span
the video was read with.  Only when the output container cannot hold the source's codec (AAC in
WebM) is the audio decoded and re-encoded to the container's default audio codec, with a warning.
A container that holds no audio at all (GIF) gets none, with a log line.

The writer calls :meth:`AudioPassthrough.pump` after each video frame with that frame's output
time, so audio and video stay interleaved in the file, and :meth:`finish` at the end.
"""
from __future__ import annotations

import logging
import math
from fractions import Fraction
from pathlib import Path

import av
import av.error

from fsvideo.video.probe import _open_error

log = logging.getLogger(__name__)

# Containers that hold a single audio stream: the first is copied, the others are left out (with a warning).
_ONE_AUDIO_STREAM = (".flv",)


class Track:
    """One carried stream (audio here, subtitles in :mod:`fsvideo.video.subtitles`): its source stream,
    output stream, and whether its packets are re-encoded rather than copied."""

    def __init__(self, src, out, recode: bool):
        self.src, self.out, self.recode = src, out, recode
        self.tb = Fraction(src.time_base)
        self.ended = False


#: QuickTime (.mov) keeps a language only as one of its Macintosh codes, which for these languages is the
#: other ISO 639-2 form (German "ger", not "deu"; Swedish "sve"): FFmpeg's MOV muxer drops the others
#: (measured: a .mov written with "deu" reads back with no language, with "ger" as "ger").
_MOV_LANGUAGE = {"sqi": "alb", "hye": "arm", "eus": "baq", "mya": "bur", "zho": "chi", "nld": "dut", "kat": "geo",
                 "deu": "ger", "ell": "gre", "isl": "ice", "mkd": "mac", "msa": "may", "fas": "per", "bod": "tib",
                 "cym": "wel", "cze": "ces", "fre": "fra", "rum": "ron", "slo": "slk", "swe": "sve"}


def language_tag(lang: str | None, ext: str) -> str | None:
    """The tag that keeps language ``lang`` (ISO 639-2, a stream's ``language`` metadata) in an output
    of extension ``ext`` (".mov"): the QuickTime form for a .mov, ``lang`` itself elsewhere."""
    if lang and ext.lower() == ".mov":
        return _MOV_LANGUAGE.get(lang.lower(), lang)
    return lang


class SourceCopy:
    """What a passthrough of a source's streams into an output shares: the open source and the output clock.

    Args: see :class:`AudioPassthrough`.  ``_pending`` holds a packet read ahead of the output time.
    """

    def __init__(self, out, src: Path, *, offset_s: float, start: float | None, end_abs: float | None):
        self._out = out
        self.offset_s, self.start, self.end_abs = offset_s, start, end_abs
        self._pending = None
        self._iter = None
        try:
            self._in = av.open(str(src), mode="r", metadata_errors="replace")
        except av.error.FFmpegError as e:
            raise _open_error(src, e) from e

    def close(self) -> None:
        """Close the source file (idempotent; errors are ignored, the output's matter)."""
        if self._in is not None:
            try:
                self._in.close()
            except Exception:  # noqa: BLE001 - closing a reader cannot lose data
                pass
            self._in = None


class AudioPassthrough(SourceCopy):
    """Copies the audio streams of ``src`` into ``out`` (an open output container).

    Args:
        out: the output container (streams are added now, before the header is written).
        src: the file whose audio streams are copied.
        offset_s: the source time (absolute seconds, container clock) that is output time 0.
        start: the trim start the video was read with (seconds, player clock), or None:
            packets before it are left out (at most one packet, some tens of milliseconds).
        end_abs: absolute source time where the copy stops, or None for the end.
        shown: the output's name for log lines (the user's file, not a temporary one).
    """

    def __init__(self, out, src: Path, *, offset_s: float, start: float | None, end_abs: float | None,
                 shown: str):
        super().__init__(out, src, offset_s=offset_s, start=start, end_abs=end_abs)
        self.done = False
        self._streams: dict[int, Track] = {}       # source stream index -> its output track
        sources = list(self._in.streams.audio)
        if not sources:
            log.info("%s has no audio stream; writing video only", src)
            self.done = True
            return
        if out.default_audio_codec in ("none", "", None):
            log.info("%s: a %s file holds no audio; the audio of %s is left out", shown, Path(shown).suffix, src)
            self.done = True
            return
        if len(sources) > 1 and Path(shown).suffix.lower() in _ONE_AUDIO_STREAM:
            log.warning("%s: a %s file holds one audio stream; the other %d of %s are left out", shown,
                        Path(shown).suffix, len(sources) - 1, src)
            sources = sources[:1]
        for a_in in sources:
            self._streams[a_in.index] = Track(a_in, *self._add_output_stream(a_in, shown))
        a_in = sources[0]
        if start:
            target = int(math.floor((offset_s - 1.0) / a_in.time_base)) if a_in.time_base else 0
            try:
                self._in.seek(max(0, target), stream=a_in, backward=True)
            except av.error.FFmpegError:
                self._in.seek(0)
        self._iter = self._in.demux(*sources)

    def _add_output_stream(self, a_in, shown: str):
        """``(output stream, re-encoded?)`` for source stream ``a_in``: a copy when the container holds its codec."""
        try:
            stream = self._out.add_stream_from_template(a_in)
            transcode = False
        except ValueError:
            transcode = True
            target = self._out.default_audio_codec
            log.warning("%s: a %s file cannot hold %s audio as is; re-encoding it to %s",
                        shown, Path(shown).suffix, a_in.codec_context.name, target)
            rate = a_in.codec_context.sample_rate or 48000
            if "opus" in target:
                rate = 48000  # the only rate libopus takes; PyAV resamples the decoded frames
            stream = self._out.add_stream(target, rate=rate)
            channels = a_in.codec_context.channels if hasattr(a_in.codec_context, "channels") else 2
            stream.layout = "mono" if channels == 1 else "stereo"
        lang = language_tag((a_in.metadata or {}).get("language"), Path(shown).suffix)
        if lang:
            stream.metadata["language"] = lang
        return stream, transcode

    def pump(self, until: float | None) -> None:
        """Copy the source's audio packets up to output time ``until`` seconds (None: to the end)."""
        if self._iter is None or self.done:
            return
        while True:
            pkt, self._pending = self._pending, None
            if pkt is None:
                try:
                    pkt = next(self._iter)
                except StopIteration:
                    self.finish()
                    return
                except av.error.FFmpegError as e:
                    log.warning("audio of %s stops early (FFmpeg: %s)", self._in.name, e)
                    self.finish()
                    return
            if pkt.dts is None and pkt.pts is None:
                continue  # the demuxer's empty flush packet
            track = self._streams.get(pkt.stream.index)
            if track is None or track.ended:
                continue
            t_abs = float((pkt.pts if pkt.pts is not None else pkt.dts) * track.tb)
            if self.end_abs is not None and t_abs >= self.end_abs - 1e-9:
                track.ended = True                   # this stream is done; the others may still have packets
                if all(t.ended for t in self._streams.values()):
                    self.finish()
                    return
                continue
            if self.start and t_abs < self.offset_s - 1e-9:
                continue  # before --start (without a trim, priming packets before 0 are kept)
            if until is not None and t_abs - self.offset_s > until:
                self._pending = pkt
                return
            if track.recode:
                self._reencode(track, pkt)
            else:
                a_off = int(math.floor(self.offset_s / track.tb + 1e-9))
                if pkt.pts is not None:
                    pkt.pts -= a_off
                if pkt.dts is not None:
                    pkt.dts -= a_off
                pkt.stream = track.out
                self._out.mux(pkt)

    def _reencode(self, track: Track, pkt) -> None:
        for fr in pkt.decode():
            if fr.pts is not None:
                t = float(fr.pts * track.tb) - self.offset_s
                fr.pts = int(round(t * fr.sample_rate))
                fr.time_base = Fraction(1, fr.sample_rate)
            self._out.mux(track.out.encode(fr))

    def finish(self) -> None:
        """Stop copying (flushes the audio encoders of re-encoded streams)."""
        if self.done:
            return
        self.done = True
        for track in self._streams.values():
            if track.recode:
                self._out.mux(track.out.encode(None))
