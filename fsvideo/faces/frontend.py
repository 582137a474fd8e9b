"""The face front end of every job: frames in, aligned faces out, the same way everywhere.

``fsvideo edit`` / ``invert`` (the pipeline's ``align`` stage), ``fsvideo align`` and ``fsvideo
metrics`` all find, track, select, stabilise and align faces with one
:class:`~fsvideo.faces.stream.FaceAligner`, so metrics measure the crops users get.  This module
adds what the non-pipeline callers share:

* :func:`sample_frames` / :func:`sampled_count`: every N-th frame, at most M (``--every``,
  ``--max-frames``), written once;
* :class:`VideoFaces`: a video file -> sampled frames -> :class:`~fsvideo.faces.stream.FrameFaces`
  (stabilised by default, as ``invert`` aligns);
* :func:`photo_faces`: one photo -> its aligned faces, numbered largest first.

Example::

    vf = VideoFaces("talk.mp4", make_detector("dlib"), output_size=256, every=2, max_frames=100)
    for ff in vf:                      # frames in order, after the stabiliser's bounded look-ahead
        for face in ff.faces:
            use(ff.index, ff.time, face.aligned.image)    # uint8 [256, 256, 3]
    print(vf.stats.frames_without_face)

With ``every > 1`` the stabiliser sees the sampled frames (its seconds are converted with the
sampled frame rate); only ``every = 1`` aligns exactly as ``invert`` does, frame for frame.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Iterator, Protocol, TypeVar

import numpy as np

from fsvideo.errors import InputError
from fsvideo.faces.aspect import upright_pixel_aspect
from fsvideo.faces.stream import AlignStats, FaceAligner, FrameFaces, TrackedFace

log = logging.getLogger(__name__)


class _Indexed(Protocol):
    index: int


F = TypeVar("F", bound=_Indexed)


def check_sampling(every: int, max_frames: int | None) -> tuple[int, int | None]:
    """``(every, max_frames)`` checked (InputError naming the option otherwise); None: no limit."""
    if int(every) < 1:
        raise InputError(f"--every {every} must be >= 1", hint="use 1 for every frame, 10 for every 10th")
    if max_frames is not None and int(max_frames) < 1:
        raise InputError(f"--max-frames {max_frames} must be >= 1", hint="leave it out to use the whole clip")
    return int(every), None if max_frames is None else int(max_frames)


def sample_frames(frames: Iterable[F], every: int = 1, max_frames: int | None = None) -> Iterator[F]:
    """The frames whose ``index`` is a multiple of ``every``, at most ``max_frames`` of them.

    Stops reading ``frames`` once ``max_frames`` are out (the rest is never decoded).
    """
    every, max_frames = check_sampling(every, max_frames)
    used = 0
    for fr in frames:
        if fr.index % every:
            continue
        if max_frames is not None and used >= max_frames:
            return
        used += 1
        yield fr


def sampled_count(n_frames: int | None, every: int = 1, max_frames: int | None = None) -> int | None:
    """How many frames :func:`sample_frames` yields from ``n_frames`` (None when unknown)."""
    every, max_frames = check_sampling(every, max_frames)
    if not n_frames:
        return max_frames
    n = (int(n_frames) + every - 1) // every
    return min(n, max_frames) if max_frames else n


class VideoFaces:
    """A video's sampled frames with their aligned faces (see the module docstring).

    Args:
        path: the video (or image) file.
        detector: a ready :class:`~fsvideo.faces.detect.FaceDetector`.
        output_size: side of the aligned crops.
        every, max_frames: frame sampling (:func:`sample_frames`).
        detect_batch: frames per detector call (batching detectors such as FAN use it).
        **aligner: :class:`~fsvideo.faces.stream.FaceAligner` options (``policy``, ``stabilize``,
            ``sigma_s``, ``on_missing``, ``method``, ``detect_every``...); the defaults are
            ``invert``'s.  ``detect_every`` (e.g. ``"1s"``) detects on keyframes and tracks between
            them (:mod:`fsvideo.faces.keyframes`).

    Iterating decodes the file once (streamed; memory bounded by the stabiliser's look-ahead) and
    yields :class:`~fsvideo.faces.stream.FrameFaces` with ``time`` set; :attr:`stats` counts them.
    """

    def __init__(self, path: str | os.PathLike, detector, *, output_size: int, every: int = 1,
                 max_frames: int | None = None, detect_batch: int = 1, info=None, **aligner):
        from fsvideo.video import probe
        self.path = Path(path)
        self.every, self.max_frames = check_sampling(every, max_frames)
        self.info = info if info is not None else probe(self.path)
        self.fps = float(self.info.fps or 25.0) / self.every
        self.detect_batch = max(1, int(detect_batch))
        aligner.setdefault("source", str(self.path))
        aligner.setdefault("pixel_aspect", upright_pixel_aspect(self.info))
        self.aligner = FaceAligner(detector, self.fps, output_size=output_size, **aligner)

    def __len__(self) -> int:
        return sampled_count(self.info.n_frames, self.every, self.max_frames) or 0

    @property
    def stats(self) -> AlignStats:
        return self.aligner.stats

    @property
    def delay(self) -> int:
        """Most sampled frames between decoding a frame and yielding it."""
        return self.aligner.delay

    def __iter__(self) -> Iterator[FrameFaces]:
        from fsvideo.video import VideoReader
        times: dict[int, float] = {}
        batch: list = []

        def done(out: list[FrameFaces]) -> list[FrameFaces]:
            for ff in out:
                ff.time = times.pop(ff.index)
            return out

        frames = sample_frames(VideoReader(self.path, info=self.info), self.every, self.max_frames)
        for fr in frames:
            times[fr.index] = float(fr.time)
            batch.append(fr)
            if len(batch) >= self.detect_batch:
                if self.detect_batch == 1:
                    yield from done(self.aligner.push(fr.index, fr.image))
                else:
                    yield from done(self.aligner.push_batch([b.index for b in batch], [b.image for b in batch]))
                batch = []
        if batch:
            yield from done(self.aligner.push_batch([b.index for b in batch], [b.image for b in batch]))
        yield from done(self.aligner.flush())


def photo_faces(image: np.ndarray, detector, *, output_size: int, policy: str | int = "all",
                method: str = "exact", transform_size: int = 4096) -> tuple[list[TrackedFace], int]:
    """Aligned faces of one photo: ``(faces chosen by policy, faces found)``.

    Faces are numbered largest first (``track_id`` 0, 1, ...); ``policy`` is ``"all"``,
    ``"largest"``, one number or several (``"0,2"``).  ``method="exact"`` is the FFHQ procedure (supersampled at
    ``transform_size``), ``"fast"`` one cv2 warp.  No tracking or smoothing: a photo stands alone.
    """
    from fsvideo.faces.align import align_face, align_face_fast
    from fsvideo.faces.track import select_faces
    faces = detector.detect(image)
    for k, f in enumerate(faces):
        f.track_id = k
    out = []
    for f in select_faces(faces, policy):
        if method == "exact":
            a = align_face(image, f.landmarks, output_size, transform_size)
        else:
            a = align_face_fast(image, f.landmarks, output_size)
        out.append(TrackedFace(track_id=f.track_id, status="detected", aligned=a, landmarks=f.landmarks,
                               detection=f))
    return out, len(faces)


__all__ = ["VideoFaces", "check_sampling", "photo_faces", "sample_frames", "sampled_count"]
