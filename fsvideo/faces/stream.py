"""Frames in, aligned faces out: detection, tracking, selection, stabilisation and alignment on a stream.

:class:`FaceAligner` is the per-frame face front end of a video job.  Push frames in order; it
returns the frames it has finished (in order, each with its aligned faces) after the stabiliser's
bounded look-ahead, and :meth:`FaceAligner.flush` returns the rest.  It keeps only the frames
inside that look-ahead, so memory does not depend on the video's length.

Example::

    fa = FaceAligner(make_detector("dlib"), fps=30, output_size=1024, policy="largest")
    for frame in VideoReader("talk.mp4"):
        for done in fa.push(frame.index, frame.image):
            for face in done.faces:
                encode(face.aligned.image)      # uint8 [1024, 1024, 3]
    for done in fa.flush():
        ...
    print(fa.stats)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from fsvideo.faces.align import AlignedFace, align_quad, align_quad_fast
from fsvideo.faces.aspect import square_pixels
from fsvideo.faces.detect import Face, FaceDetector, check_image
from fsvideo.faces.keyframes import DEFAULT_TRACK, KeyframeStats, with_keyframes
from fsvideo.faces.stabilize import DEFAULT_SMOOTHING_S, MISSING_POLICIES, stabilizer_options
from fsvideo.faces.stabilize_tracks import MultiFaceStabilizer
from fsvideo.faces.track import FaceSelector, FaceTracker

log = logging.getLogger(__name__)


@dataclass
class TrackedFace:
    """One aligned face of a finished frame.

    Attributes:
        track_id: the person's id through the clip.
        status: ``"detected"``, ``"interpolated"`` (bridged gap) or ``"held"``.
        aligned: the crop, its quad and exact matrix (landmarks in crop coordinates).
        landmarks: float64 [68, 2] (stabilised) landmarks in frame pixels.
        detection: the raw detection of this frame (box, score, landmarks), None when bridged/held.
    """

    track_id: int
    status: str
    aligned: AlignedFace
    landmarks: np.ndarray
    detection: Face | None = None


@dataclass
class FrameFaces:
    """A finished frame: its index, the image pushed, its selected aligned faces (maybe none), and
    its time in seconds when the caller knows it (:class:`~fsvideo.faces.frontend.VideoFaces` does)."""

    index: int
    image: np.ndarray
    faces: list[TrackedFace]
    time: float | None = None


@dataclass
class AlignStats:
    """Counts over the frames finished so far (``detections``: every face found in the frames
    pushed, before selection)."""

    frames: int = 0
    frames_with_face: int = 0
    frames_without_face: int = 0
    faces: int = 0
    interpolated: int = 0
    held: int = 0
    detections: int = 0
    track_ids: set = field(default_factory=set)


class FaceAligner:
    """Streaming detect -> track -> select -> stabilise -> align (see the module docstring).

    Args:
        detector: a ready :class:`~fsvideo.faces.detect.FaceDetector`.
        fps: frame rate of the pushed frames (used for the stabiliser's seconds).
        output_size: side of the aligned crops.
        policy: ``"largest"`` (one person, kept while tracked), a track id, several (``"0,2"``), or ``"all"``.
        stabilize: temporal stabilisation: True or ``"fsvideo"`` (optical flow + local linear
            smoothing, ``sigma_s``, relative to the face's flow-measured motion), ``"official"`` (the
            official pipeline's filter, see :func:`~fsvideo.faces.stabilize.stabilizer_options`), or
            False (each frame alone).  Both reset at shot cuts
            (:class:`~fsvideo.faces.stabilize_tracks.MultiFaceStabilizer`).
        sigma_s: landmark smoothing sigma in seconds of the ``fsvideo`` stabiliser (quads get twice that).
        on_missing: ``"passthrough"``, ``"hold"`` or ``"error"`` for frames without a face.
        method: ``"fast"`` (cv2 warp, the video path) or ``"exact"`` (FFHQ procedure, ~0.5 s a face).
        tracker: a :class:`FaceTracker` (default: a new one).
        source: name used in error messages.
        detect_every: full detections on keyframes only, tracking in between (``--detect-every``:
            seconds as a number or ``"1s"``, frames as ``"12f"``, ``0`` every frame): the detector is
            wrapped in a :class:`~fsvideo.faces.keyframes.KeyframeDetector` (see
            :func:`~fsvideo.faces.keyframes.with_keyframes`); :attr:`keyframes` is its stats.
        track: how faces are followed between full detections, ``roi`` or ``flow`` (``--track``).
        pixel_aspect: width / height of one pixel of the pushed frames (an anamorphic video's,
            :func:`~fsvideo.faces.aspect.upright_pixel_aspect`): faces are detected on a square-pixel
            copy and their quads built on square pixels (:mod:`fsvideo.faces.aspect`).
        **stab_kwargs: more :class:`~fsvideo.faces.stabilize.FaceStabilizer` options.
    """

    def __init__(self, detector: FaceDetector | None, fps: float, *, output_size: int = 1024,
                 policy: str | int = "largest", stabilize: bool | str = True, sigma_s: float = DEFAULT_SMOOTHING_S,
                 on_missing: str = "passthrough", method: str = "fast", tracker: FaceTracker | None = None,
                 source: str = "the video", detect_every=0, track: str = DEFAULT_TRACK, pixel_aspect: float = 1.0,
                 **stab_kwargs):
        if method not in ("fast", "exact"):
            raise ValueError(f"method must be 'fast' or 'exact', got {method!r}")
        if on_missing not in MISSING_POLICIES:
            from fsvideo.errors import InputError
            raise InputError(f"unknown missing-face policy {on_missing!r}",
                             hint=f"use one of {', '.join(MISSING_POLICIES)}")
        self.detector = square_pixels(with_keyframes(detector, detect_every, fps, track), pixel_aspect)
        self.output_size = int(output_size)
        self.method = method
        self.tracker = tracker or FaceTracker()
        self.selector = FaceSelector(policy, self.tracker)
        if stabilize:
            kw = stabilizer_options("fsvideo" if stabilize is True else stabilize, fps, sigma_s)
        else:
            kw = dict(sigma_s=0.0, quad_sigma_s=0.0, optical_flow=False, max_gap_s=0.0, shot_cuts=False)
        kw.update(stab_kwargs, pixel_aspect=pixel_aspect)
        self.stabilizer = MultiFaceStabilizer(fps, on_missing=on_missing, source=source, **kw)
        self._frames: dict[int, tuple[np.ndarray, dict[int, Face]]] = {}
        self.stats = AlignStats()

    @property
    def delay(self) -> int:
        """Most frames between pushing a frame and getting it back."""
        return self.stabilizer.delay

    @property
    def keyframes(self) -> KeyframeStats | None:
        """Full detections and tracked faces so far (None when every frame is detected)."""
        stats = getattr(self.detector, "stats", None)
        return stats if isinstance(stats, KeyframeStats) else None

    def _align(self, image: np.ndarray, quad: np.ndarray, landmarks: np.ndarray) -> AlignedFace:
        if self.method == "exact":
            return align_quad(image, quad, self.output_size, max(self.output_size, 4 * self.output_size),
                              landmarks=landmarks)
        return align_quad_fast(image, quad, self.output_size, landmarks=landmarks)

    def _finish(self, done) -> list[FrameFaces]:
        out = []
        for index, tracks in done:
            image, dets = self._frames.pop(index)
            faces = []
            for tid, sf in tracks:
                faces.append(TrackedFace(track_id=tid, status=sf.status,
                                         aligned=self._align(image, sf.quad, sf.landmarks),
                                         landmarks=sf.landmarks, detection=dets.get(tid)))
                self.stats.track_ids.add(tid)
                self.stats.interpolated += sf.status == "interpolated"
                self.stats.held += sf.status == "held"
            self.stats.frames += 1
            self.stats.faces += len(faces)
            if faces:
                self.stats.frames_with_face += 1
            else:
                self.stats.frames_without_face += 1
            out.append(FrameFaces(index, image, faces))
        return out

    def push(self, index: int, image: np.ndarray, faces: Sequence[Face] | None = None) -> list[FrameFaces]:
        """Add frame ``index`` (uint8 [H, W, 3] RGB); ``faces`` when already detected, else the
        detector runs.  Returns the frames finished so far, in order."""
        check_image(image)
        if faces is None:
            if self.detector is None:
                raise ValueError("FaceAligner has no detector: pass the frame's faces")
            faces = self.detector.detect(image)
        return self._push_detected(index, image, list(faces))

    def push_batch(self, indices: Sequence[int], images: Sequence[np.ndarray]) -> list[FrameFaces]:
        """Several frames at once, detected as one batch where the detector can."""
        if self.detector is None:
            raise ValueError("FaceAligner has no detector: pass each frame's faces to push()")
        out = []
        for i, im, fs in zip(indices, images, self.detector.detect_batch(list(images))):
            out += self._push_detected(i, im, fs)
        return out

    def _push_detected(self, index: int, image: np.ndarray, faces: list[Face]) -> list[FrameFaces]:
        self.stats.detections += len(faces)
        faces = self.tracker.update(faces, image)
        chosen = self.selector(faces)
        self._frames[index] = (image, {f.track_id: f for f in chosen})
        return self._finish(self.stabilizer.push(index, image, chosen))

    def flush(self) -> list[FrameFaces]:
        """Finish every remaining frame (call at the end of the stream)."""
        missing = self.selector.missing_id_message()
        if missing:
            log.warning(missing)
        return self._finish(self.stabilizer.flush())
