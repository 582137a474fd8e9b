"""Streaming temporal stabilisation of face landmarks and FFHQ crop quads.

Per-frame landmarks jitter by a pixel or two, and the aligned crop amplifies that into a visibly
shaking face.  :class:`FaceStabilizer` takes the steps of the official video pipeline
(``utils/video_utils.py`` of the Feature-Style encoder, spec section 4), makes them work on a
stream, and by default runs them *differently from the official code* (see the table below):

1. **Optical-flow refinement** (causal): the previous frame's landmarks are tracked into this frame
   with pyramidal Lucas-Kanade (``cv2.calcOpticalFlowPyrLK``, window ``eye_distance / 4``,
   ``maxLevel=5``, criteria (COUNT|EPS, 10, 0.03)), and each landmark becomes
   ``(1 - a) * detected + a * tracked`` with ``a = exp(-(d / (flow_scale * eye_distance))**2)``,
   d the distance between the previous landmark and the detected one
   (:class:`~fsvideo.faces.landmark_flow.LandmarkFlow`).
2. **Motion following** (not in the official code; ``follow_motion``): the same flow gives the
   face's translation from frame to frame (the median motion of its brow, eye and nose points,
   when they agree), summed into a path ``P``.  The filters of step 4 smooth ``landmarks - P`` and
   ``quad - P`` and add ``P`` back, so real motion, however fast or jerky, is followed as the flow
   measures it and only the detector's noise is smoothed.  Without it a line fit through +-2
   frames cuts through a hand-held shake: on ``facerec-short_hamilton_clip.mp4`` (24 fps film at
   29.97 fps, every 5th frame repeated, a ~90 px face moving 5-10 px a frame) the crops shook 2.3x
   *more* than unstabilised ones (3.89 vs 1.71 px at 256); following the motion, 0.65x (1.11 px).
   Where the flow cannot measure the motion (no previous face, LK's points disagree) that step
   adds nothing to ``P``, i.e. plain smoothing.
3. **Gap bridging** (not in the official code): up to ``max_gap_s`` seconds of frames without a
   detection between two detected frames are filled by linear interpolation of ``landmarks - P``,
   the flow following the face through the gap; longer gaps are frames without a face.
4. **Gaussian smoothing over time** of the landmarks (sigma ``sigma_s`` seconds), then of the quads
   computed from them (sigma ``quad_sigma_s``, twice as long by default, the official ratio), with
   the fit of :mod:`fsvideo.faces.smoothing`.  Smoothing, flow and bridging never cross a frame
   without a face, a detected jump of the face by more than ``cut_threshold`` of its size, or a
   shot cut reported with ``push(cut=True)`` (:class:`~fsvideo.faces.stabilize_tracks.MultiFaceStabilizer`
   runs :class:`~fsvideo.faces.keyframes.ShotCuts` on every frame).

=====================  ==============================================  ==============================
                       default (``--stabilize 0.03``)                  ``--stabilize official``
=====================  ==============================================  ==============================
flow weight distance   ``0.1 * eye distance`` (= the official 10 px    10 px, ``exp(-d**2 / 100)``
                       only at a 100 px eye distance)
motion following       yes (smoothing relative to the flow's path)     no (as the official code)
landmark filter        Gaussian-weighted local *linear* fit, sigma     ``gaussian_filter1d``, sigma
                       0.03 s (~1 frame at 30 fps), cut at 2 sigmas    3 frames, cut at 4 sigmas
quad filter            the same, sigma 0.06 s (~2 frames)              sigma 6 frames
ends of a run          one-sided window, no lag (the line fit)         mirrored (``mode="reflect"``)
look-ahead at 30 fps   2 + 4 + 6 (gap) = 12 frames                     12 + 24 + 6 (gap) = 42 frames
=====================  ==============================================  ==============================

So the default is a much *lighter* filter than the official one, not the same strength.  Measured
by ``python benchmarks/faces.py --only stabilise --frames 90`` on five talking clips of
``../shared/media`` and 90 frames of the hamilton clip's second shot (crop jitter: frame-to-frame
motion of the face inside 256 px crops; none = each frame aligned alone), the default removes
35-79 % of the jitter (before it followed the motion: 35-74 % on the five, and it *added* 128 % on
hamilton), the official filter 7-69 % (it adds 254 % on hamilton): the optical flow removes most of
it, and long sigmas then smooth away real head motion, so the face moves inside the crop again (the
crop does not lag: the filters are symmetric, the measured shift is within 0.4 frame, but it sits
0.3-0.55 px at 256 off the detected face, 7 px on hamilton, instead of the default's 0.2-0.56 px).
``stabilizer_options("official", fps)`` (``--stabilize official``) runs the official filter (equal
to ``scipy.ndimage.gaussian_filter1d`` on a clip with a face in every frame; tested).

The default's sigmas are in seconds and converted with ``fps``, so a 25 and a 50 fps clip of the
same scene are smoothed alike (the official sigmas are in frames).  The look-ahead is bounded: a
frame comes out at most :attr:`FaceStabilizer.delay` frames after it went in
(``max_gap + ceil(truncate * sigma) + ceil(truncate * quad_sigma)``), and the stabiliser keeps
only that many frames' landmarks (and one grey frame for the flow).  The flow costs one LK pass
of 68 points a frame, as before motion following (its median needs no second pass).

Frames without a face follow ``on_missing``: ``"passthrough"`` (the default: returned with
``status="missing"`` and no quad, so the caller keeps the frame unedited), ``"hold"`` (the last
quad is repeated, ``status="held"``, until the face is seen again or the stream ends) or
``"error"`` (:class:`~fsvideo.errors.InputError`).

Example::

    stab = FaceStabilizer(fps=30)
    for i, image in enumerate(frames):
        for out in stab.push(i, image, landmarks_or_none):
            use(out.index, out.quad)          # out.quad is None for frames without a face
    for out in stab.flush():
        use(out.index, out.quad)
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from fsvideo.errors import InputError
from fsvideo.faces.align import check_landmarks, ffhq_quad
from fsvideo.faces.landmark_flow import LandmarkFlow
from fsvideo.faces.smoothing import (
    DEFAULT_SMOOTHING_S,
    STABILIZERS,
    GaussianStage,
    Item,
    parse_stabilize,
    stabilizer_options,
)

log = logging.getLogger(__name__)

#: Values of ``on_missing``.
MISSING_POLICIES = ("passthrough", "hold", "error")



@dataclass
class StabilizedFrame:
    """One frame's stabilised face.

    Attributes:
        index: the frame index given to :meth:`FaceStabilizer.push`.
        landmarks: float64 [68, 2] smoothed landmarks in image pixels, or None (no face).
        quad: float64 [4, 2] smoothed FFHQ quad in image pixels, or None (no face).
        status: ``"detected"``, ``"interpolated"`` (a bridged gap), ``"held"`` or ``"missing"``.
    """

    index: int
    landmarks: np.ndarray | None
    quad: np.ndarray | None
    status: str

    @property
    def has_face(self) -> bool:
        return self.quad is not None


class FaceStabilizer:
    """Streaming stabiliser of one face track's landmarks and crop quads (see the module docstring).

    Args:
        fps: frame rate of the frames pushed (after any frame skipping).
        sigma_s: Gaussian sigma of the landmark smoothing, seconds (0 disables smoothing).
        quad_sigma_s: sigma of the quad smoothing, seconds (default ``2 * sigma_s``).
        truncate: kernel radius in sigmas (the look-ahead).
        optical_flow: refine landmarks with Lucas-Kanade tracking from the previous frame.
        flow_scale: landmark distance scale of the flow blend, in eye distances.
        flow_px: if set, the flow blend's distance scale in pixels instead (the official
            ``exp(-d**2 / 100)`` is ``flow_px=10``).
        fit: ``"linear"`` (Gaussian-weighted local line, the default) or ``"mean"`` (the Gaussian
            filter, reflected at the ends of a run): see :mod:`fsvideo.faces.smoothing`.
        max_gap_s: longest run of frames without a detection (seconds) bridged by interpolation.
        on_missing: ``"passthrough"``, ``"hold"`` or ``"error"`` for frames without a face.
        cut_threshold: a jump of the landmarks' mean position by more than this fraction of the quad
            size between consecutive detections starts a new run (no smoothing across it).
        follow_motion: smooth relative to the face's motion measured by the optical flow (step 2;
            needs ``optical_flow``); False in the official filter.
        source: a name for error messages (e.g. the video file).
        pixel_aspect: width / height of one frame pixel: the quads are built on square pixels
            (an anamorphic video's, see :mod:`fsvideo.faces.aspect`).

    ``push(index, image, landmarks)`` returns the frames finished so far (a list, in order) and
    :meth:`flush` the rest; indices must increase.
    """

    def __init__(self, fps: float, sigma_s: float = DEFAULT_SMOOTHING_S, quad_sigma_s: float | None = None, *,
                 truncate: float = 2.0, optical_flow: bool = True, flow_scale: float = 0.1,
                 flow_px: float | None = None, fit: str = "linear", max_gap_s: float = 0.2,
                 on_missing: str = "passthrough", cut_threshold: float = 0.3,
                 follow_motion: bool = True, source: str = "the video", pixel_aspect: float = 1.0):
        if not fps or fps <= 0 or not math.isfinite(fps):
            raise ValueError(f"fps must be a positive number, got {fps}")
        if sigma_s < 0 or (quad_sigma_s is not None and quad_sigma_s < 0):
            raise ValueError("sigma_s and quad_sigma_s must be >= 0 seconds")
        if on_missing not in MISSING_POLICIES:
            raise InputError(f"unknown missing-face policy {on_missing!r}",
                             hint=f"use one of {', '.join(MISSING_POLICIES)}")
        self.fps = float(fps)
        self.pixel_aspect = float(pixel_aspect)
        self.sigma_s = float(sigma_s)
        self.quad_sigma_s = 2.0 * self.sigma_s if quad_sigma_s is None else float(quad_sigma_s)
        self.optical_flow = optical_flow
        self.flow_scale = float(flow_scale)
        self.flow_px = None if flow_px is None else float(flow_px)
        self.fit = fit
        self.max_gap = max(0, int(round(max_gap_s * self.fps)))
        self.on_missing = on_missing
        self.cut_threshold = float(cut_threshold)
        self.source = source
        self._lm_stage = GaussianStage(self.sigma_s * self.fps, truncate, fit)
        self._quad_stage = GaussianStage(self.quad_sigma_s * self.fps, truncate, fit)
        self.follow_motion = bool(follow_motion)
        self._flow = LandmarkFlow()
        self._path = np.zeros(2)  # the face's summed flow motion in this run: smoothing is relative to it
        self._cut_pending = False  # a shot cut was reported since the last detection
        self.n_followed = 0  # frames whose motion the flow measured
        self._last_raw: np.ndarray | None = None  # last detected-and-refined landmarks (before a gap)
        self._last_index: int | None = None
        self._gap: list[int] = []  # indices of frames without a detection, not yet decided
        self._gap_path: list[np.ndarray] = []  # the flow's path at each of them
        self._last_path = self._path  # the path at _last_raw
        self._segment = 0
        self._held: StabilizedFrame | None = None
        self.n_missing = 0
        self.n_interpolated = 0

    @property
    def delay(self) -> int:
        """Most frames between pushing a frame and getting it back."""
        return self.max_gap + self._lm_stage.radius + self._quad_stage.radius

    def describe(self) -> dict:
        """The settings as run, for reports (``alignment.json``)."""
        return {"stabilizer": "official" if self.fit == "mean" else "fsvideo", "sigma_s": round(self.sigma_s, 6),
                "quad_sigma_s": round(self.quad_sigma_s, 6), "optical_flow": self.optical_flow,
                "follow_motion": self.follow_motion and self.optical_flow, "delay_frames": self.delay}

    # ------------------------------------------------------------------------------------- stage A

    def _is_cut(self, lm: np.ndarray) -> bool:
        if self._last_raw is None:
            return False
        _, qsize = ffhq_quad(lm)
        return float(np.linalg.norm(lm.mean(0) - self._last_raw.mean(0))) > self.cut_threshold * max(qsize, 1.0)

    def _missing_items(self, indices: Iterable[int]) -> list[Item]:
        out = []
        for i in indices:
            out.append(Item(i, None, "missing", -1))
        return out

    def _follow(self) -> bool:
        return self.follow_motion and self.optical_flow

    def _stage_a(self, index: int, image, landmarks, refine: bool = True, cut: bool = False,
                 motion: np.ndarray | None = None) -> list[Item]:
        """Flow refinement, motion and gap decisions; returns items in order."""
        self._cut_pending |= cut
        if landmarks is None:
            self._gap.append(index)
            if self._last_raw is None or len(self._gap) > self.max_gap:
                # Cannot be bridged (no face before it, or the gap is too long): release as missing.
                out = self._missing_items(self._gap)
                self._gap, self._gap_path = [], []
                self._last_raw = None
                self._flow.remember(None)
                return out
            # Inside a gap the flow keeps following the face (rigidly), so the bridge follows its motion.
            moved = None
            if self._follow() and not self._cut_pending:
                self._flow.track(image)
                if self._flow.motion is not None:
                    self._path = self._path + self._flow.motion
                    moved = self._flow.followed + self._flow.motion
            self._flow.remember(moved)
            self._gap_path.append(self._path)
            return []
        lm = check_landmarks(landmarks)
        cut = self._cut_pending or self._is_cut(lm)
        self._cut_pending = False
        if cut or self._gap:
            motion = None  # a caller's motion is from the previous frame, which is not this run's
        if self.optical_flow:
            # LK only where needed: a tracked face with its motion given needs neither refinement nor flow.
            self._flow.track(image, follow=not cut and (refine or (self._follow() and motion is None)))
            if refine and not self._gap:
                lm = self._flow.refine(lm, self.flow_scale, self.flow_px)
            self._flow.remember(lm)
            motion = self._flow.motion if motion is None else np.asarray(motion, dtype=np.float64).reshape(2)
        new_run = cut or self._last_raw is None
        if new_run:
            self._path = np.zeros(2)
        elif self._follow() and motion is not None:
            self._path = self._path + motion
            self.n_followed += 1
        out: list[Item] = []
        if self._gap:
            if new_run:
                out += self._missing_items(self._gap)
            else:
                # Linear interpolation of the landmarks relative to the flow's path.
                r0, r1 = self._last_raw - self._last_path, lm - self._path
                n = len(self._gap) + 1
                for k, (gi, path) in enumerate(zip(self._gap, self._gap_path), start=1):
                    v = (1 - k / n) * r0 + k / n * r1
                    out.append(Item(gi, v.ravel(), "interpolated", self._segment, path))
                self.n_interpolated += len(self._gap)
            self._gap, self._gap_path = [], []
        if new_run:
            self._segment += 1
        out.append(Item(index, (lm - self._path).ravel(), "detected", self._segment, self._path))
        self._last_raw, self._last_path = lm, self._path
        return out

    # ------------------------------------------------------------------------------------- output

    def _stage_bc(self, items: list[Item], final: bool) -> list[StabilizedFrame]:
        # `None` pushed with final=True drains a stage after its last real item.
        quad_in: list[Item] = []
        for it in items + [None] if final else items:
            for s in self._lm_stage.push(it, final=final and it is None):
                if s.value is None:
                    quad_in.append(s)
                else:
                    lm = s.value.reshape(68, 2) + s.extra  # back from the flow's moving frame
                    quad = ffhq_quad(lm, self.pixel_aspect)[0] - s.extra
                    quad_in.append(Item(s.index, quad.ravel(), s.status, s.segment, (lm, s.extra)))
        out: list[StabilizedFrame] = []
        for it in quad_in + [None] if final else quad_in:
            for s in self._quad_stage.push(it, final=final and it is None):
                out.append(self._finish(s))
        return out

    def _finish(self, s: Item) -> StabilizedFrame:
        if s.value is not None:
            lm, path = s.extra
            f = StabilizedFrame(s.index, np.asarray(lm, dtype=np.float64), s.value.reshape(4, 2) + path, s.status)
            self._held = f
            return f
        self.n_missing += 1
        if self.on_missing == "error":
            raise InputError(f"no face found in frame {s.index} of {self.source}",
                             hint="use --on-missing-face passthrough to keep such frames unedited")
        if self.on_missing == "hold" and self._held is not None:
            return StabilizedFrame(s.index, self._held.landmarks, self._held.quad, "held")
        return StabilizedFrame(s.index, None, None, "missing")

    def push(self, index: int, image: np.ndarray | None, landmarks, *, refine: bool = True,
             cut: bool = False, motion: np.ndarray | None = None) -> list[StabilizedFrame]:
        """Add frame ``index`` (uint8 [H, W, 3] RGB ``image``, needed for the optical flow; its
        [68, 2] ``landmarks`` or None when no face was detected); return the frames now finished.
        ``refine=False`` skips the flow refinement of this frame's landmarks (they were tracked by
        flow already: :attr:`~fsvideo.faces.detect.Face.tracked`).  ``cut=True``: a shot cut starts
        at this frame (:class:`~fsvideo.faces.keyframes.ShotCuts`): nothing is smoothed, bridged or
        followed by flow across it.  ``motion``: the face's translation (float [2], pixels) since the
        previous frame when the caller measured it (:attr:`~fsvideo.faces.detect.Face.motion`);
        the stabiliser then follows it instead of running its own flow."""
        index = int(index)
        if self._last_index is not None and index <= self._last_index:
            raise ValueError(f"frame index {index} after {self._last_index}: indices must increase")
        self._last_index = index
        return self._stage_bc(self._stage_a(index, image, landmarks, refine, cut, motion), final=False)

    def flush(self) -> list[StabilizedFrame]:
        """Finish every remaining frame (call at the end of the stream)."""
        items = self._missing_items(self._gap)
        self._gap, self._gap_path = [], []
        return self._stage_bc(items, final=True)


def stabilize_sequence(landmarks: Sequence[np.ndarray | None], fps: float,
                       images: Sequence[np.ndarray] | None = None, **kwargs) -> list[StabilizedFrame]:
    """:class:`FaceStabilizer` over a whole list (offline convenience; frames indexed 0..N-1)."""
    stab = FaceStabilizer(fps, **kwargs)
    out: list[StabilizedFrame] = []
    for i, lm in enumerate(landmarks):
        out += stab.push(i, None if images is None else images[i], lm)
    return out + stab.flush()


__all__ = ["DEFAULT_SMOOTHING_S", "MISSING_POLICIES", "STABILIZERS", "FaceStabilizer",
           "StabilizedFrame", "parse_stabilize", "stabilize_sequence", "stabilizer_options"]
