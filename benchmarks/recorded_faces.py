"""Face detections recorded once and replayed: benchmarks and device runs without the detector's cost or package.

dlib runs on the CPU and its 68-point model is a 100 MB wheel, too big to carry to the lent GPU
machine (README "Results and benchmarks").  :func:`record` runs a detector here over the frames of
some videos / images and :func:`save` writes its faces to a small ``.npz``; there,
:func:`register` adds a ``recorded`` detector to fsvideo's registry (the public
:func:`~fsvideo.faces.registry.register_detector`), so ``--detector recorded`` replays them, and
with ``as_dlib=True`` it also stands in for ``dlib`` (what the tests and the benchmarks that name
dlib build) when dlib itself is not installed.  The registration is also written to the environment
(:data:`ENV`), so a benchmark's child processes (``benchmarks/pipeline.py --bound`` and its memory
runs) call :func:`register_inherited` and replay the same faces.

A frame is looked up by a digest of its pixels; where the decoder's colour conversion rounded a
pixel differently on the other machine, the frame whose 32x18 grey thumbnail is nearest (mean
absolute difference under :data:`NEAR`) answers instead, and :attr:`RecordedDetector.near` counts
those.  A frame that matches nothing is an error: replaying someone else's faces would be wrong.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Iterable

import numpy as np

log = logging.getLogger(__name__)

#: Largest mean absolute grey-level difference of the thumbnails for a "near" match.
NEAR = 2.0
THUMB = (32, 18)
#: Environment variable through which child processes inherit a registration (JSON: path, as_dlib).
ENV = "FSVIDEO_RECORDED_FACES"


class RecordedDetector:
    """Replays recorded faces (``fsvideo.faces.Face`` lists), looked up by the frame's pixels.

    ``table`` maps :meth:`key` to a list of faces; ``thumbs`` (optional) maps the same keys to
    uint8 [18, 32] thumbnails for the near match.  Each call returns fresh copies (the tracker
    writes track ids into them).
    """

    name = "recorded"

    def __init__(self, table: dict[bytes, list], thumbs: dict[bytes, np.ndarray] | None = None):
        self.table = table
        self.thumbs = thumbs or {}
        self.near = 0
        self._keys = list(self.thumbs)
        self._stack = np.stack([self.thumbs[k] for k in self._keys]).astype(np.float32) if self._keys else None

    @staticmethod
    def key(image: np.ndarray) -> bytes:
        """16-byte digest of uint8 [H, W, 3] ``image`` (every 7th pixel each way, and the shape)."""
        h = hashlib.blake2b(np.ascontiguousarray(image[::7, ::7]).tobytes(), digest_size=16)
        h.update(repr(image.shape).encode())
        return h.digest()

    @staticmethod
    def thumb(image: np.ndarray) -> np.ndarray:
        import cv2
        return cv2.resize(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY), THUMB,
                          interpolation=cv2.INTER_AREA)

    def lookup(self, image: np.ndarray) -> bytes:
        k = self.key(image)
        if k in self.table:
            return k
        if self._stack is not None:
            d = np.abs(self._stack - self.thumb(image).astype(np.float32)).mean(axis=(1, 2))
            i = int(np.argmin(d))
            if d[i] < NEAR:
                self.near += 1
                return self._keys[i]
        raise KeyError(f"no recorded detections for this {image.shape[1]}x{image.shape[0]} frame "
                       "(record it with benchmarks/device_prepare.sh)")

    def detect(self, image: np.ndarray) -> list:
        from fsvideo.faces.detect import Face
        return [Face(f.box.copy(), f.score, None if f.landmarks is None else f.landmarks.copy())
                for f in self.table[self.lookup(image)]]

    def detect_batch(self, images) -> list[list]:
        return [self.detect(im) for im in images]


def record(detector, images: Iterable[np.ndarray]) -> RecordedDetector:
    """Run ``detector`` on each uint8 [H, W, 3] image; the result replays its faces."""
    table, thumbs = {}, {}
    for im in images:
        k = RecordedDetector.key(im)
        table[k] = detector.detect(im)
        thumbs[k] = RecordedDetector.thumb(im)
    return RecordedDetector(table, thumbs)


def save(rec: RecordedDetector, path: Path) -> Path:
    """Write ``rec`` to ``path`` (.npz, no pickles): keys, thumbnails, and every face's box, score, landmarks."""
    keys = list(rec.table)
    faces = [(i, f) for i, k in enumerate(keys) for f in rec.table[k]]
    lm = np.full((len(faces), 68, 2), np.nan)
    for j, (_, f) in enumerate(faces):
        if f.landmarks is not None:
            lm[j] = f.landmarks
    thumbs = np.stack([rec.thumbs.get(k, np.zeros(THUMB[::-1], np.uint8)) for k in keys]) if keys else \
        np.zeros((0, THUMB[1], THUMB[0]), np.uint8)
    path = Path(path)
    tmp = path.with_name(path.name + ".partial.npz")
    np.savez_compressed(tmp, keys=np.array(keys, dtype="S16"), thumbs=thumbs,
                        frame=np.array([i for i, _ in faces], np.int64).reshape(-1),
                        box=np.array([f.box for _, f in faces], np.float64).reshape(-1, 4),
                        score=np.array([f.score for _, f in faces], np.float64).reshape(-1), landmarks=lm)
    tmp.replace(path)
    return path


def load(path: Path) -> RecordedDetector:
    """Read a file written by :func:`save`."""
    from fsvideo.faces.detect import Face
    with np.load(path, allow_pickle=False) as z:
        keys = [bytes(k) for k in z["keys"]]
        table = {k: [] for k in keys}
        for i, box, score, lm in zip(z["frame"], z["box"], z["score"], z["landmarks"]):
            table[keys[i]].append(Face(box, float(score), None if np.isnan(lm).all() else lm))
        thumbs = dict(zip(keys, z["thumbs"]))
    return RecordedDetector(table, thumbs)


def register(path: Path, *, as_dlib: bool = False) -> RecordedDetector:
    """Load ``path`` and add it to fsvideo's detector registry as ``recorded`` (and as ``dlib``
    when ``as_dlib`` and dlib cannot be imported here); returns the detector (its ``near`` count).

    Child processes started after this inherit the registration through :data:`ENV`
    (:func:`register_inherited`)."""
    from fsvideo.faces.registry import DetectorEntry, register_detector
    rec = load(path)
    os.environ[ENV] = json.dumps({"path": str(Path(path).resolve()), "as_dlib": bool(as_dlib)})

    def factory(device=None, *, max_side=None):
        return rec                                  # recorded with the default detection side
    register_detector(DetectorEntry("recorded", factory, f"faces recorded in {Path(path).name}"), replace=True)
    if as_dlib and not _importable("dlib"):
        register_detector(DetectorEntry("dlib", factory, f"dlib's faces recorded in {Path(path).name}"),
                          replace=True)
        log.warning("dlib is not installed: `dlib` replays the faces recorded in %s", path)
    return rec


def register_inherited() -> RecordedDetector | None:
    """In a child process: register the faces the parent registered (:data:`ENV`); None when it did not."""
    spec = os.environ.get(ENV)
    if not spec:
        return None
    d = json.loads(spec)
    return register(Path(d["path"]), as_dlib=bool(d.get("as_dlib")))


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True
