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
    """Iterate the frames of a latents file in order; ``meta`` holds the header."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._zip = zipfile.ZipFile(self.path)
            self.meta = json.loads(self._zip.read("meta.json"))
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as e:
            raise InputError(f"{self.path} is not a complete fsvideo latents file",
                             hint="make it with `fsvideo invert VIDEO --latents-out FILE`") from e
        if self.meta.get("format") != FORMAT:
            raise InputError(f"{self.path}: unknown latents format {self.meta.get('format')!r}",
                             hint=f"expected {FORMAT}; re-run `fsvideo invert`")

    def __len__(self) -> int:
        return int(self.meta["frames"])

    @property
    def noise_seed(self) -> int | None:
        """The generator noise seed the latents were made with (None in files that lack it)."""
        seed = self.meta.get("noise_seed")
        return None if seed is None else int(seed)

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
        if meta.get("source_sha256") and meta["source_sha256"] != source_sha256:
            raise InputError(f"{self.path} was made from another file than {source}",
                             hint=f"run `fsvideo invert {source}` to make its latents")
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
        for c in range(int(self.meta["chunks"])):
            yield from self.read_chunk(c)

    def read_chunk(self, c: int) -> list[FrameLatents]:
        """The frames of chunk ``c`` (random access: see :meth:`index` for which chunk holds a frame)."""
        try:
            with np.load(io.BytesIO(self._zip.read(f"chunk_{c:05d}.npz")), allow_pickle=False) as z:
                a = {k: z[k] for k in z.files}
        except (ValueError, OSError, KeyError, zipfile.BadZipFile) as e:   # e.g. a pickled object array
            raise InputError(f"{self.path}: chunk {c} is not readable numpy data ({e})",
                             hint="make the file again with `fsvideo invert VIDEO --latents-out FILE`") from e
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
            with self._zip.open(f"chunk_{c:05d}.npz") as fh, np.load(fh, allow_pickle=False) as z:
                frame, track = z["frame"], z["track"]
                out += [(c, int(fr), track[frame == fr]) for fr in z["frames_in_chunk"]]
        return out

    def close(self) -> None:
        self._zip.close()


def latents_for(video: str | Path, where: str | Path) -> Path:
    """The latents file of ``video``: ``where`` itself, or when ``where`` is a folder
    ``where/<video stem>.latents`` (what ``fsvideo invert VIDEOS --out-dir where`` writes).
    Whether that file exists is checked where it is opened."""
    w = Path(where)
    return w / f"{Path(video).stem}.latents" if w.is_dir() else w


def check_latents_file(path: Path, video: str | Path) -> Path:
    """``path`` when it is a file; else a one-line error naming it, the video, and how to make it."""
    if not Path(path).is_file():
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
