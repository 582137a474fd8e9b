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
"""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

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

    def add(self, fl: FrameLatents) -> None:
        self._buf.append(fl)
        self._frames += 1
        if len(self._buf) >= self.chunk_frames:
            self._flush()
        if self.on_add is not None:
            self.on_add(fl)

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
