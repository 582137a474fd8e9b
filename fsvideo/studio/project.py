"""One opened video in the studio: its frames, its latents (the cache) and its background inversion.

A project is keyed by the video's content (sha256), the span (start, end) and every option that
shapes the latents (models, detector, stabilisation, noise seed): reopening the same video, in
this run or a later one, reuses ``<workdir>/cache/<key>/video.latents`` instead of inverting
again.  While :func:`fsvideo.invert_video` runs, its ``on_latents`` hook hands each frame's
latents to the project, so a frame can be edited as soon as it is inverted; when the file is
complete the in-memory copies are dropped and frames are read back from it by chunk.

Frames are numbered from 0 at the span's start, as the pipeline counts them (the frames a
:class:`~fsvideo.video.VideoReader` of the span yields, and the latents file's numbers).  The
presentation time of every frame of the span is listed once from the packets, without decoding
(:func:`fsvideo.video.join.frame_times`), so frame ``i`` is found by its own timestamp, also in a
variable-frame-rate video: a read starts half-way between frames ``i - 1`` and ``i``
(:meth:`Project.boundary`), and the clip jobs cut their spans at the same boundaries.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import logging
import threading
from collections import OrderedDict
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from fsvideo.errors import FsvideoError, InputError
from fsvideo.latents import FrameLatents, LatentsReader

log = logging.getLogger(__name__)

# Latents kept in memory while a video inverts (about 0.55 MB per face at 1024 px); older frames
# are dropped and come back from the file once inversion has finished.
LIVE_FRAMES = 2048
DECODE_AHEAD = 8          # frames decoded (and cached) per seek: scrubbing forward is the common move
FRAME_CACHE = 48
CHUNK_CACHE = 2


class NotReady(FsvideoError):
    """The frame is not inverted yet (or was dropped from memory until the latents file is complete)."""


class Abandoned(FsvideoError):
    """The inversion was stopped: no tab has the video open any more (:meth:`Project.abandon`)."""


def project_key(source_sha256: str, options) -> str:
    """Hash of the source content and every option that shapes its latents."""
    keep = ("config", "generator", "encoder", "detector", "stabilize", "seed", "start", "end", "face")
    opts = {k: asdict(options)[k] for k in keep}
    return hashlib.sha256(json.dumps([source_sha256, opts], sort_keys=True, default=str).encode()).hexdigest()[:20]


class Project:
    """A video (or image) span, its latents and its inversion job.

    Args:
        source: the video file (checked by the caller).
        options: :class:`fsvideo.RunOptions` of the inversion (``face`` is forced to ``all``: the
            page picks faces afterwards).
        workdir: the studio's folder; the cache lives in ``workdir/cache/<key>``.
        sha256: the source's content hash when already known.
    """

    def __init__(self, source: Path, options, workdir: Path, sha256: str | None = None):
        from fsvideo.video import probe
        from fsvideo.weights import sha256_file
        self.source = Path(source)
        self.info = probe(self.source)                       # undecodable input fails here, clearly
        self._stat = self._source_stat()                     # frames are decoded later: it must not change
        self.options = replace(options, face="all", compare=False, overwrite=True)
        self.sha256 = sha256 or sha256_file(self.source)
        self.key = project_key(self.sha256, self.options)
        self.dir = Path(workdir) / "cache" / self.key
        self.dir.mkdir(parents=True, exist_ok=True)
        self.latents_path = self.dir / "video.latents"
        self.fps = float(self.info.fps or 25)
        self.start = self.options.start or 0.0
        self.times = self._span_times()                      # seconds (player clock) of frame 0, 1, ...
        self.n_frames = len(self.times)
        self.state, self.done, self.error = "new", 0, None
        self._lock = threading.Lock()
        self._tracks: dict[int, np.ndarray] = {}             # frame -> track ids (every inverted frame)
        self._live: OrderedDict[int, FrameLatents] = OrderedDict()
        self._reader: LatentsReader | None = None
        self._chunk_of: dict[int, int] = {}
        self._chunks: OrderedDict[int, dict[int, FrameLatents]] = OrderedDict()
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._thread: threading.Thread | None = None
        self._abandon = threading.Event()

    def _span_times(self) -> list[float]:
        """Presentation times of the span's frames (a still image: ``[0.0]``).

        From the packets (no decoding), kept with the ``start <= t < end`` rule of the reader; a file
        whose packets carry no timestamps falls back on the nominal frame rate.
        """
        from fsvideo.utils import atomic_output
        from fsvideo.video import VideoReader
        from fsvideo.video.join import frame_times, span_times
        if self.info.is_image:
            return [0.0]
        kept = self.dir / "frame_times.v2.npy"    # the key names the content and the span; v2: lists made
        #                                           before frame_times left out an edit list's cut packets are not read
        if kept.is_file():
            try:
                return [float(t) for t in np.load(kept, allow_pickle=False)]
            except (OSError, ValueError) as e:
                log.warning("%s is unreadable (%s); listing the frames again", kept, e)
        s, e = self.options.start, self.options.end
        times = span_times(frame_times(self.source, self.info), s, e)
        if not times:
            n = max(1, len(VideoReader(self.source, s, e, info=self.info)))
            return [self.start + i / self.fps for i in range(n)]
        with atomic_output(kept, overwrite=True) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.asarray(times, np.float64))
        return times

    def _source_stat(self) -> tuple[int, int] | None:
        try:
            st = self.source.stat()
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def check_inverted(self) -> None:
        """Raise InputError when the inversion failed (its error, and: open the video again to retry)."""
        if self.state == "failed":
            raise InputError(f"the inversion of {self.source.name} failed: {self.error}",
                             hint="fix that, then open the video again to retry")

    def source_unchanged(self) -> bool:
        return self._source_stat() == self._stat

    def check_source(self) -> None:
        """Raise InputError when the video was deleted or changed on disk since it was opened: its frames
        would no longer be the ones inverted (FileNotFoundError was a 500; a new file was shown silently)."""
        now = self._source_stat()
        if now != self._stat:                                # (size, mtime) as when opened
            what = "deleted or moved" if now is None else "changed on disk"
            raise InputError(f"{self.source} was {what} since the studio opened it",
                             hint="open it again (or restore the file)")

    def time(self, i: int) -> float:
        """Seconds (player clock) of frame ``i``."""
        return self.times[i] if 0 <= i < len(self.times) else self.start + i / self.fps

    def boundary(self, k: int) -> float | None:
        """A time between frames ``k - 1`` and ``k``: a read from it starts at frame ``k``, a read to it
        ends with frame ``k - 1`` (``k = 0``: the span's start, ``k = n``: its end; None: the file's)."""
        if k <= 0:
            return self.options.start
        if k >= len(self.times):
            return self.options.end
        b = (self.times[k - 1] + self.times[k]) / 2
        return b if b > 0 else None

    def history_start(self, i: int, tracks: set[int] | None, limit: int) -> int:
        """The first frame whose blend masks still count in frame ``i``'s, at most ``limit`` frames back.

        The render smooths each track's mask over the frames of its unbroken run
        (:class:`~fsvideo.faces.blend.TrackMasks`): that is how far back frame ``i``'s faces
        (of ``tracks``; None: all) were present, as far as the inverted frames tell.
        """
        from fsvideo.faces.blend import mask_history_start
        with self._lock:
            return mask_history_start(self._tracks.get, i, max(0, i - limit), tracks)

    # ------------------------------------------------------------------------------ inversion
    def start_inversion(self) -> None:
        """Reuse the cached latents when complete, else invert in a background thread (once)."""
        with self._lock:
            if self.state != "new":
                return
            self.state = "inverting"
        if self.latents_path.is_file():
            try:
                self._use_file()
                log.info("reusing %s", self.latents_path)
                return
            except InputError as e:                         # an old or broken cache: invert again
                log.warning("%s; inverting again", e)
        self._thread = threading.Thread(target=self._invert, name="fsvideo-studio-invert", daemon=True)
        self._thread.start()

    def _invert(self) -> None:
        from fsvideo import invert_video
        try:
            invert_video(self.source, self.dir / f"inversion{self._suffix()}", latents_out=self.latents_path,
                         options=self.options, progress=self._progress, on_latents=self._add)
            self._use_file()
        except Abandoned:
            log.info("inversion of %s stopped: no tab has it open", self.source)
            with self._lock:
                self.state = "abandoned"
        except BaseException as e:  # noqa: BLE001 - shown in the page, the server keeps running
            log.warning("inversion of %s failed: %s", self.source, e)
            with self._lock:
                self.state, self.error = "failed", str(e) if isinstance(e, FsvideoError) else f"{type(e).__name__}: {e}"

    def _suffix(self) -> str:
        from fsvideo.pipeline.jobs import video_suffix
        return ".png" if self.info.is_image else video_suffix(self.source)

    def abandon(self) -> None:
        """Stop the inversion at its next frame (its partial outputs are removed: they are atomic)."""
        self._abandon.set()

    def _progress(self, done: int, total: int | None) -> None:
        if self._abandon.is_set():
            raise Abandoned("inversion stopped")
        self.done = done

    def _add(self, fl: FrameLatents) -> None:
        if self._abandon.is_set():
            raise Abandoned("inversion stopped")
        with self._lock:
            self._tracks[fl.frame] = fl.track
            self._live[fl.frame] = fl
            while len(self._live) > LIVE_FRAMES:
                self._live.popitem(last=False)

    def _use_file(self) -> None:
        reader = LatentsReader(self.latents_path)
        index = reader.index()
        with self._lock:
            self._reader = reader
            self._chunk_of = {fr: c for c, fr, _ in index}
            self._tracks = {fr: t for _, fr, t in index}
            self._live.clear()
            if index and len(index) != self.n_frames:
                log.warning("%s: %d frames decoded, %d listed by their packets; frame times may be off",
                            self.source, len(index), self.n_frames)
            self.n_frames = len(index) or self.n_frames
            self.done, self.state = len(index), "ready"

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.state == "ready"

    # ------------------------------------------------------------------------------ access
    def latents(self, i: int) -> FrameLatents:
        """The latents of frame ``i``; :class:`NotReady` when it is not (yet) available."""
        with self._lock:
            if i in self._live:
                return self._live[i]
            reader, chunk = self._reader, self._chunk_of.get(i)
            if reader is None and self.state == "failed":  # not "wait": that wait would never end
                self.check_inverted()
            if reader is None or chunk is None:
                if i in self._tracks:              # inverted, dropped from memory (LIVE_FRAMES)
                    raise NotReady(f"frame {i} is inverted; it is read back when the inversion finishes",
                                   hint="wait for the inversion progress bar")
                raise NotReady(f"frame {i} is not inverted yet ({self.done}/{self.n_frames} done)",
                               hint="wait for the inversion progress bar")
            if chunk not in self._chunks:
                self._chunks[chunk] = {fl.frame: fl for fl in reader.read_chunk(chunk)}
                while len(self._chunks) > CHUNK_CACHE:
                    self._chunks.popitem(last=False)
            self._chunks.move_to_end(chunk)
            return self._chunks[chunk][i]

    def frame(self, i: int) -> np.ndarray:
        """The source frame ``i`` of the span: uint8 [H, W, 3] RGB (a few frames are cached)."""
        from fsvideo.video import VideoReader
        if not 0 <= i < self.n_frames:
            raise InputError(f"frame {i} is outside the video (0..{self.n_frames - 1})")
        with self._lock:
            if i in self._frames:
                self._frames.move_to_end(i)
                return self._frames[i]
        self.check_source()
        if self.info.is_image:
            got = {0: next(iter(VideoReader(self.source, info=self.info))).image}
        else:
            reader = VideoReader(self.source, self.boundary(i), self.boundary(min(self.n_frames, i + DECODE_AHEAD)),
                                 info=self.info)
            got = {}
            for f in reader:                                 # numbered by their own timestamps
                k = bisect.bisect_left(self.times, f.time - 1e-4)
                if k < len(self.times) and abs(self.times[k] - f.time) < 1e-4:
                    got[k] = f.image
                else:                                        # a time the packets did not list: by position
                    got.setdefault(i + f.index, f.image)
        with self._lock:
            self._frames.update(got)
            while len(self._frames) > FRAME_CACHE:
                self._frames.popitem(last=False)
        if i not in got:
            raise InputError(f"frame {i} of {self.source} could not be decoded")
        return got[i]

    def file_meta(self) -> dict | None:
        """A copy of the complete latents file's header (None while inverting)."""
        with self._lock:
            return None if self._reader is None else dict(self._reader.meta)

    def status(self) -> dict:
        return dict(state=self.state, done=self.done, total=self.n_frames, error=self.error)

    def timeline(self) -> dict:
        """Face tracks and frames without a face as runs ``[first, last]`` over the inverted frames."""
        with self._lock:
            tracks = dict(self._tracks)
        runs: dict[int, list[list[int]]] = {}
        no_face: list[list[int]] = []

        def extend(lst: list[list[int]], i: int) -> None:
            if lst and lst[-1][1] == i - 1:
                lst[-1][1] = i
            else:
                lst.append([i, i])
        for i in sorted(tracks):
            ids = tracks[i]
            if len(ids) == 0:
                extend(no_face, i)
            for t in ids:
                extend(runs.setdefault(int(t), []), i)
        counts = {t: sum(b - a + 1 for a, b in r) for t, r in runs.items()}
        return dict(n_frames=self.n_frames, fps=self.fps, inverted=len(tracks), no_face=no_face,
                    tracks=[dict(id=t, runs=runs[t], frames=counts[t]) for t in sorted(runs)])
