"""Per-frame latents of a video, written by ``fsvideo invert`` and read by ``fsvideo edit --latents``.

A latents file is a ZIP archive (stored, not compressed) written as the video streams:

* ``chunk_00000.npz`` ... : up to ``chunk_frames`` frames each, arrays (one row per face):
  ``frame`` int64 [n], ``track`` int64 [n], ``w`` float32 [n, n_latent, 512],
  ``F`` float32 (or float16) [n, C, 16, 16], ``matrix`` float64 [n, 3, 3] (aligned pixel -> frame pixel),
  ``landmarks`` float32 [n, 68, 2] (in aligned-crop coordinates);
* ``meta.json`` (last): source path and sha256, frame count, model identities (``generator``,
  ``encoder`` and their ``*_sha256``), resolution, K (``k``), ``noise_seed``, F storage dtype.

A re-edit (``fsvideo edit --latents``) must use what the file records: :meth:`LatentsReader.check`
refuses another source, another model (checksums) or another K with one line naming both values,
and :attr:`LatentsReader.noise_seed` is the seed it re-uses unless told otherwise.

Only numpy arrays are stored (``allow_pickle=False`` on read): a latents file never runs code.
Memory stays bounded: a chunk is written as soon as it is full.

A video inverted split in time (``torchrun ... fsvideo invert long.mp4 --out-dir DIR --split-time``)
gives one file per span, frames numbered from 0, whose ``meta.json`` also holds ``context_before``:
the track ids and alignment of the frames decoded before the span as stabiliser context.
:func:`join_latents` puts the spans one after the other, renumbers the frames and, by matching
those context faces with the faces the previous span stored for the same frames, gives each person
the id it had before the seam.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from fsvideo.errors import InputError

FORMAT = "fsvideo-latents/1"


@dataclass
class FrameLatents:
    """The latents of the faces of one frame (``n`` faces, possibly 0)."""

    frame: int
    track: np.ndarray            # int64 [n]
    w: np.ndarray                # float32 [n, n_latent, 512]
    F: np.ndarray                # float32 [n, C, 16, 16]
    matrix: np.ndarray           # float64 [n, 3, 3]
    landmarks: np.ndarray        # float32 [n, 68, 2]


@dataclass
class LatentsWriter:
    """Append frames, then :meth:`close` (writes ``meta.json``).  Use inside ``atomic_output``.

    ``on_add(frame_latents)`` (optional) sees every frame as it is added, before the file is complete:
    ``fsvideo studio`` shows frames while their video is still being inverted.
    """

    path: Path
    meta: dict = field(default_factory=dict)
    chunk_frames: int = 64
    f_dtype: str = "float32"
    on_add: Callable[[FrameLatents], None] | None = None

    def __post_init__(self):
        self._zip = zipfile.ZipFile(self.path, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self._buf: list[FrameLatents] = []
        self._chunks = 0
        self._frames = 0
        self._context: list[dict] = []

    def add(self, fl: FrameLatents) -> None:
        self._buf.append(fl)
        self._frames += 1
        if len(self._buf) >= self.chunk_frames:
            self._flush()
        if self.on_add is not None:
            self.on_add(fl)

    def add_context(self, fl: FrameLatents) -> None:
        """A frame decoded before a split span as context: only its track ids and alignment are kept,
        in ``meta["context_before"]`` (:func:`join_latents` matches them across the seam)."""
        self._context.append({"track": fl.track.tolist(), "matrix": fl.matrix.reshape(-1, 9).tolist()})

    def _flush(self) -> None:
        if not self._buf:
            return
        rows = [(f.frame, i) for f in self._buf for i in range(len(f.track))]
        cat = lambda key, dt: np.concatenate([getattr(f, key) for f in self._buf]).astype(dt)  # noqa: E731
        arrays = dict(frame=np.array([r[0] for r in rows], np.int64),
                      frames_in_chunk=np.array([f.frame for f in self._buf], np.int64),
                      track=cat("track", np.int64), w=cat("w", np.float32), F=cat("F", self.f_dtype),
                      matrix=cat("matrix", np.float64), landmarks=cat("landmarks", np.float32))
        bio = io.BytesIO()
        np.savez(bio, **arrays)
        self._zip.writestr(f"chunk_{self._chunks:05d}.npz", bio.getvalue())
        self._chunks += 1
        self._buf.clear()

    def close(self) -> None:
        self._flush()
        meta = dict(self.meta, format=FORMAT, frames=self._frames, chunks=self._chunks, F_dtype=self.f_dtype)
        if self._context:
            meta["context_before"] = self._context
        self._zip.writestr("meta.json", json.dumps(meta, indent=1))
        self._zip.close()

    def abort(self) -> None:
        self._zip.close()


class LatentsReader:
    """Iterate the frames of a latents file in order; ``meta`` holds the header.

    Attributes:
        first: the file's frame read first, numbered 0 (:meth:`seek`; 0: the whole file).
        first_time: the time (seconds, player clock) of the video frame that ``first`` belongs to,
            where a re-edit's first decoded frame must be (:meth:`check_start`; None: unknown).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.first = 0
        try:
            self._zip = zipfile.ZipFile(self.path)
            self.meta = json.loads(self._zip.read("meta.json"))
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as e:
            raise InputError(f"{self.path} is not a complete fsvideo latents file",
                             hint="make it with `fsvideo invert VIDEO --latents-out FILE`") from e
        if self.meta.get("format") != FORMAT:
            raise InputError(f"{self.path}: unknown latents format {self.meta.get('format')!r}",
                             hint=f"expected {FORMAT}; re-run `fsvideo invert`")
        self.first_time = self.meta.get("first_time")

    def __len__(self) -> int:
        """Frames from :attr:`first` to the end of the file."""
        return int(self.meta["frames"]) - self.first

    def seek(self, first: int, time: float | None) -> LatentsReader:
        """Read from the file's frame ``first`` on, numbered from 0: the latents of a re-edit that
        decodes from that frame (a span of a video split in time, :mod:`fsvideo.pipeline.split`).
        ``time``: that frame's time in the video, where the re-edit's first frame must be."""
        if not 0 <= first < int(self.meta["frames"]):
            raise InputError(f"{self.path} has no frame {first} (it holds {self.meta['frames']})",
                             hint="use the latents of this video made with the same --start/--end")
        self.first, self.first_time = int(first), time
        return self

    @property
    def noise_seed(self) -> int | None:
        """The generator noise seed the latents were made with (None in files that lack it)."""
        seed = self.meta.get("noise_seed")
        return None if seed is None else int(seed)

    def check_source(self, source: str | Path, source_sha256: str) -> None:
        """Refuse to re-edit another video than the one inverted (one line naming both files)."""
        if self.meta.get("source_sha256") and self.meta["source_sha256"] != source_sha256:
            raise InputError(f"{self.path} was made from another file than {source}",
                             hint=f"run `fsvideo invert {source}` to make its latents")

    def check_start(self, t0: float | None) -> None:
        """Refuse a re-edit whose first frame (at ``t0`` seconds) is not the file's first frame
        (:attr:`first_time`): latents of another ``--start`` would be pasted on the wrong frames."""
        if t0 is None or self.first_time is None or abs(t0 - self.first_time) <= 1e-4:
            return
        start = self.meta.get("start")
        what = "starts at" if self.first == 0 else f"has frame {self.first} at"
        raise InputError(f"{self.path} {what} {self.first_time:.3f} s, this run's first frame is at {t0:.3f} s",
                         hint="use the --start `fsvideo invert` used" + (f" (--start {start:g})" if start is not None
                                                                         else " (none)"))

    def check(self, *, source: str | Path, source_sha256: str, resolution: int, k: int, models: dict) -> None:
        """Refuse to re-edit with anything other than what made the file.

        Args:
            source, source_sha256: the video being edited and its checksum.
            resolution, k: the generator's size and the feature layer K of the model in use.
            models: ``{"generator": name, "generator_sha256": ..., "encoder": ..., "encoder_sha256": ...}``
                of the model in use (names are compared only where the file has no checksum).

        Raises:
            InputError: one line naming the file, what differs, and both values.
        """
        meta = self.meta
        self.check_source(source, source_sha256)
        if meta.get("resolution") not in (None, resolution):
            raise InputError(f"{self.path} holds latents of a {meta.get('resolution')} px model, this model is "
                             f"{resolution} px", hint="use the same model as `fsvideo invert` did")
        if meta.get("k") not in (None, k):
            raise InputError(f"{self.path} holds F of layer K={meta['k']}, this model uses K={k}",
                             hint="use the config (feature_index) `fsvideo invert` used")
        for role in ("generator", "encoder"):
            stored_sha, sha = meta.get(f"{role}_sha256"), models.get(f"{role}_sha256")
            stored, name = meta.get(role), models.get(role)
            if stored_sha and sha:
                differs = stored_sha != sha
            else:
                differs = stored is not None and name is not None and str(stored) != str(name)
            if differs:
                was = f"{stored} (sha256 {str(stored_sha)[:12]})" if stored_sha else str(stored)
                now = f"{name} (sha256 {str(sha)[:12]})" if sha else str(name)
                raise InputError(f"{self.path} was made with {role} {was}, this run uses {now}",
                                 hint=f"pass --{role} {stored} (the {role} `fsvideo invert` used)")

    def __iter__(self) -> Iterator[FrameLatents]:
        """The frames from :attr:`first` on, numbered from 0 (only the chunks that hold them are read)."""
        first, c0, n = self.first, 0, int(self.meta["chunks"])
        while first and c0 < n and self._last_frame(c0) < first:
            c0 += 1
        for c in range(c0, n):
            for fl in self.read_chunk(c):
                if fl.frame >= first:
                    fl.frame -= first
                    yield fl

    def _last_frame(self, c: int) -> int:
        """The last frame chunk ``c`` holds (reads only its small ``frames_in_chunk`` array)."""
        return int(self._arrays(c, ("frames_in_chunk",))["frames_in_chunk"][-1])

    def read_chunk(self, c: int) -> list[FrameLatents]:
        """The frames of chunk ``c`` (random access: see :meth:`index` for which chunk holds a frame)."""
        a = self._arrays(c)
        out = []
        for fr in a["frames_in_chunk"]:
            sel = a["frame"] == fr
            out.append(FrameLatents(int(fr), a["track"][sel], a["w"][sel], a["F"][sel].astype(np.float32),
                                    a["matrix"][sel], a["landmarks"][sel]))
        return out

    def index(self) -> list[tuple[int, int, np.ndarray]]:
        """``(chunk, frame, track ids int64 [n])`` of every frame, reading only the small arrays of each chunk."""
        out = []
        for c in range(int(self.meta["chunks"])):
            a = self._arrays(c, ("frame", "track", "frames_in_chunk"))
            out += [(c, int(fr), a["track"][a["frame"] == fr]) for fr in a["frames_in_chunk"]]
        return out

    def _arrays(self, c: int, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The arrays ``keys`` (None: all, read in one go) of chunk ``c``; unreadable data is a one-line error."""
        try:
            if keys is None:
                with np.load(io.BytesIO(self._zip.read(f"chunk_{c:05d}.npz")), allow_pickle=False) as z:
                    return {k: z[k] for k in z.files}
            with self._zip.open(f"chunk_{c:05d}.npz") as fh, np.load(fh, allow_pickle=False) as z:
                return {k: z[k] for k in keys}
        except (ValueError, OSError, KeyError, zipfile.BadZipFile) as e:   # e.g. a pickled object array
            raise InputError(f"{self.path}: chunk {c} is not readable numpy data ({e})",
                             hint="make the file again with `fsvideo invert VIDEO --latents-out FILE`") from e

    def close(self) -> None:
        self._zip.close()


def latents_for(video: str | Path, where: str | Path) -> Path:
    """The latents file of ``video``: ``where`` itself, or when ``where`` is a folder
    ``where/<video stem>.latents`` (what ``fsvideo invert VIDEOS --out-dir where`` writes).
    Whether that file exists is checked where it is opened."""
    w = Path(where)
    return w / f"{Path(video).stem}.latents" if os.path.isdir(w) else w    # os.path: False for a too-long name


def check_latents_file(path: Path, video: str | Path) -> Path:
    """``path`` when it is a file; else a one-line error naming it, the video, and how to make it."""
    if not os.path.isfile(path):        # Path.is_file() raised OSError for a name past 255 bytes
        raise InputError(f"{path}: no latents file for {video}",
                         hint=f"make it with `fsvideo invert {video} --out-dir {Path(path).parent}`")
    return Path(path)


def _centres(track, matrix, size: int) -> list[tuple[int, np.ndarray, float]]:
    """``(track, centre of the aligned crop in frame pixels [2], crop side in frame pixels)`` per face."""
    m = np.asarray(matrix, np.float64).reshape(-1, 3, 3)
    c = m @ np.array([size / 2, size / 2, 1.0])
    side = size * np.sqrt(np.abs(np.linalg.det(m[:, :2, :2])))
    return [(int(t), c[i, :2], float(side[i])) for i, t in enumerate(track)]


def _match(context: list[list], before: list[list], near: float = 0.25) -> dict[int, int]:
    """Track ids of a span's context faces -> ids the previous span gave the same person.

    ``context`` and ``before``: per frame (the same frames, aligned at the end), lists of
    :func:`_centres`.  Two faces are the same person in a frame when their crops' centres are
    closer than ``near`` x the crop side; each pair of ids counts the frames where that holds, and
    the pairs with most frames win (one to one).
    """
    n = min(len(context), len(before))
    votes: dict[tuple[int, int], int] = {}
    for now, was in zip(context[len(context) - n:], before[len(before) - n:]):
        for t, c, s in now:
            for u, d, r in was:
                if np.linalg.norm(c - d) < near * max(s, r):
                    votes[(t, u)] = votes.get((t, u), 0) + 1
    out, used = {}, set()
    for (t, u), _ in sorted(votes.items(), key=lambda kv: -kv[1]):
        if t not in out and u not in used:
            out[t] = u
            used.add(u)
    return out


def join_latents(parts: Sequence[str | Path], out: str | Path, meta: dict | None = None) -> int:
    """Write the latents of consecutive spans (:class:`LatentsWriter` files of one video, in order) to ``out``.

    Frames are renumbered from 0 across the spans and chunked as one run chunks them; the first
    span's track ids are kept, a later span's faces take the ids they had before the seam
    (:func:`_match`) and its new faces fresh ids.  ``meta`` updates the first span's header (e.g.
    the whole run's ``start`` / ``end``); ``context_before`` is dropped.  Returns the frame count.
    """
    readers = [LatentsReader(p) for p in parts]
    head = {k: v for k, v in readers[0].meta.items() if k not in ("context_before", "frames", "chunks", "F_dtype")}
    size = int(head.get("resolution") or 0)
    depth = max([len(r.meta.get("context_before", [])) for r in readers] + [1])
    recent: deque = deque(maxlen=depth)              # the faces of the last frames written (for the next seam)
    writer = LatentsWriter(Path(out), meta={**head, **(meta or {})}, f_dtype=readers[0].meta.get("F_dtype", "float32"))
    try:
        offset, next_id = 0, 0
        for i, r in enumerate(readers):
            ctx = [_centres(c["track"], c["matrix"], size) for c in r.meta.get("context_before", [])]
            ids = None if i == 0 else _match(ctx, list(recent))
            for fl in r:
                if ids is None:
                    track = fl.track
                else:
                    for t in map(int, fl.track):
                        if t not in ids:
                            ids[t] = next_id
                            next_id += 1
                    track = np.array([ids[int(t)] for t in fl.track], np.int64)
                next_id = max([next_id, *(int(t) + 1 for t in track)])
                writer.add(FrameLatents(offset + fl.frame, track, fl.w, fl.F, fl.matrix, fl.landmarks))
                recent.append(_centres(track, fl.matrix, size))
            offset += len(r)
            r.close()
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return offset
