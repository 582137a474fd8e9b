"""Streaming temporal stabilisation of face landmarks and FFHQ crop quads.

Per-frame landmarks jitter by a pixel or two, and the aligned crop amplifies that into a visibly
shaking face.  :class:`FaceStabilizer` follows the official video pipeline (``utils/video_utils.py``
of the Feature-Style encoder, spec section 4) and makes it work on a stream:

1. **Optical-flow refinement** (causal): the previous frame's landmarks are tracked into this frame
   with pyramidal Lucas-Kanade (``cv2.calcOpticalFlowPyrLK``, window ``eye_distance / 4``,
   ``maxLevel=5``, criteria (COUNT|EPS, 10, 0.03)), and each landmark becomes
   ``(1 - a) * detected + a * tracked`` with ``a = exp(-(d / (flow_scale * eye_distance))**2)``,
   d the distance between the previous landmark and the detected one.  The official code uses
   ``exp(-d**2 / 100)`` in pixels; ``flow_scale = 0.1`` gives the same at a 100 px eye distance and
   keeps the behaviour independent of resolution.
2. **Gap bridging**: up to ``max_gap_s`` seconds of frames without a detection between two detected
   frames are filled by linear interpolation; longer gaps are frames without a face.
3. **Gaussian smoothing over time** of the landmarks (sigma ``sigma_s`` seconds), then of the quads
   computed from them (sigma ``quad_sigma_s``, twice as long by default, the official ratio).  Each
   is a Gaussian-weighted local *linear* fit, which equals the Gaussian filter inside a run of faces
   and, unlike it, does not lag at the start and end of one.  Smoothing never crosses a frame
   without a face or a detected cut (a jump of the face by more than ``cut_threshold`` of its size).

Default strength.  The official pipeline smooths with sigmas of 3 and 6 frames (``sigma_s`` about
0.1 s at 30 fps).  Measured with :func:`crop_jitter` on four talking clips of ``../shared/media``
(``benchmarks/faces.py``), the optical flow removes most of the jitter, and long sigmas then add
motion of the face inside the crop (the crop lags behind a moving head); ``sigma_s = 0.03`` (about
1 and 2 frames at 30 fps) is the default.  Pass ``sigma_s=0.1`` for the official strength.

Sigmas are in seconds and converted with ``fps``, so a 25 and a 50 fps clip of the same scene are
smoothed alike.  The look-ahead is bounded: a frame comes out at most :attr:`FaceStabilizer.delay`
frames after it went in (``max_gap + ceil(truncate * sigma) + ceil(truncate * quad_sigma)``), and
the stabiliser keeps only that many frames' landmarks (and one grey frame for the flow).

Frames without a face follow ``on_missing``: ``"passthrough"`` (the default: returned with
``status="missing"`` and no quad, so the caller keeps the frame unedited), ``"hold"`` (the last
quad is repeated, ``status="held"``) or ``"error"`` (:class:`~fsvideo.errors.InputError`).

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
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from fsvideo.errors import InputError
from fsvideo.faces.align import check_landmarks, ffhq_quad

log = logging.getLogger(__name__)

#: Values of ``on_missing``.
MISSING_POLICIES = ("passthrough", "hold", "error")

#: Default landmark smoothing sigma in seconds (quads get twice that), used by every front end
#: (``edit`` / ``invert`` ``--stabilize``, ``align --sigma``, metrics).  See "Default strength" above.
DEFAULT_SMOOTHING_S = 0.03


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


@dataclass
class _Item:
    index: int
    value: np.ndarray | None  # flattened vector, or None for a frame without a face
    status: str
    segment: int
    extra: object = None  # carried along (the landmarks while smoothing quads)


def _eye_distance(lm: np.ndarray) -> float:
    return float(np.linalg.norm(lm[42:48].mean(0) - lm[36:42].mean(0)))


class _GaussianStage:
    """Streaming Gaussian-weighted local linear smoothing of vectors, within segments."""

    def __init__(self, sigma: float, truncate: float):
        self.sigma = float(sigma)
        self.radius = int(math.ceil(truncate * sigma)) if sigma > 0 else 0
        k = np.arange(-self.radius, self.radius + 1, dtype=np.float64)
        self.offsets = k
        self.weights = np.exp(-0.5 * (k / self.sigma) ** 2) if sigma > 0 else np.ones(1)
        self.buf: deque[_Item] = deque()
        self.pos = 0  # index into buf of the first item not yet emitted

    def _smooth(self, p: int) -> np.ndarray:
        it = self.buf[p]
        if self.radius == 0:
            return it.value
        ks, ws, vs = [], [], []
        for j, k in enumerate(range(-self.radius, self.radius + 1)):
            q = p + k
            if 0 <= q < len(self.buf):
                o = self.buf[q]
                if o.value is not None and o.segment == it.segment:
                    ks.append(float(k))
                    ws.append(self.weights[j])
                    vs.append(o.value)
        k = np.asarray(ks)
        w = np.asarray(ws)
        v = np.stack(vs)
        sw, sk, skk = w.sum(), (w * k).sum(), (w * k * k).sum()
        mean = (w[:, None] * v).sum(0) / sw
        den = sw * skk - sk * sk
        if len(k) < 3 or den <= 1e-9 * sw * sw:
            return mean
        # Weighted least-squares line through the neighbours, evaluated at offset 0.
        skv = (w[:, None] * k[:, None] * v).sum(0)
        return (skk * (w[:, None] * v).sum(0) - sk * skv) / den

    def _ready(self, p: int, final: bool) -> bool:
        it = self.buf[p]
        if it.value is None or final:
            return True
        for q in range(p + 1, min(len(self.buf), p + self.radius + 1)):
            o = self.buf[q]
            if o.value is None or o.segment != it.segment:
                return True  # the run ended: no later neighbour can come
        return len(self.buf) - 1 - p >= self.radius

    def push(self, item: _Item | None, final: bool = False) -> list[_Item]:
        if item is not None:
            self.buf.append(item)
        out = []
        while self.pos < len(self.buf) and self._ready(self.pos, final):
            it = self.buf[self.pos]
            v = None if it.value is None else self._smooth(self.pos)
            out.append(_Item(it.index, v, it.status, it.segment, it.extra))
            self.pos += 1
        while self.pos > self.radius:  # keep `radius` emitted items as past context
            self.buf.popleft()
            self.pos -= 1
        return out


class FaceStabilizer:
    """Streaming stabiliser of one face track's landmarks and crop quads (see the module docstring).

    Args:
        fps: frame rate of the frames pushed (after any frame skipping).
        sigma_s: Gaussian sigma of the landmark smoothing, seconds (0 disables smoothing).
        quad_sigma_s: sigma of the quad smoothing, seconds (default ``2 * sigma_s``).
        truncate: kernel radius in sigmas (the look-ahead).
        optical_flow: refine landmarks with Lucas-Kanade tracking from the previous frame.
        flow_scale: landmark distance scale of the flow blend, in eye distances.
        max_gap_s: longest run of frames without a detection (seconds) bridged by interpolation.
        on_missing: ``"passthrough"``, ``"hold"`` or ``"error"`` for frames without a face.
        cut_threshold: a jump of the landmarks' mean position by more than this fraction of the quad
            size between consecutive detections starts a new run (no smoothing across it).
        source: a name for error messages (e.g. the video file).

    ``push(index, image, landmarks)`` returns the frames finished so far (a list, in order) and
    :meth:`flush` the rest; indices must increase.
    """

    def __init__(self, fps: float, sigma_s: float = DEFAULT_SMOOTHING_S, quad_sigma_s: float | None = None, *,
                 truncate: float = 2.0, optical_flow: bool = True, flow_scale: float = 0.1,
                 max_gap_s: float = 0.2, on_missing: str = "passthrough", cut_threshold: float = 0.3,
                 source: str = "the video"):
        if not fps or fps <= 0 or not math.isfinite(fps):
            raise ValueError(f"fps must be a positive number, got {fps}")
        if sigma_s < 0 or (quad_sigma_s is not None and quad_sigma_s < 0):
            raise ValueError("sigma_s and quad_sigma_s must be >= 0 seconds")
        if on_missing not in MISSING_POLICIES:
            raise InputError(f"unknown missing-face policy {on_missing!r}",
                             hint=f"use one of {', '.join(MISSING_POLICIES)}")
        self.fps = float(fps)
        self.sigma_s = float(sigma_s)
        self.quad_sigma_s = 2.0 * self.sigma_s if quad_sigma_s is None else float(quad_sigma_s)
        self.optical_flow = optical_flow
        self.flow_scale = float(flow_scale)
        self.max_gap = max(0, int(round(max_gap_s * self.fps)))
        self.on_missing = on_missing
        self.cut_threshold = float(cut_threshold)
        self.source = source
        self._lm_stage = _GaussianStage(self.sigma_s * self.fps, truncate)
        self._quad_stage = _GaussianStage(self.quad_sigma_s * self.fps, truncate)
        self._prev_gray = None
        self._prev_lm: np.ndarray | None = None  # refined landmarks of the previous frame (if it had a face)
        self._last_raw: np.ndarray | None = None  # last detected-and-refined landmarks (before a gap)
        self._last_index: int | None = None
        self._gap: list[int] = []  # indices of frames without a detection, not yet decided
        self._segment = 0
        self._held: StabilizedFrame | None = None
        self.n_missing = 0
        self.n_interpolated = 0

    @property
    def delay(self) -> int:
        """Most frames between pushing a frame and getting it back."""
        return self.max_gap + self._lm_stage.radius + self._quad_stage.radius

    # ------------------------------------------------------------------------------------- stage A

    def _refine(self, image: np.ndarray | None, lm: np.ndarray) -> np.ndarray:
        """Lucas-Kanade refinement of detected ``lm`` from the previous frame's landmarks."""
        if not self.optical_flow or image is None:
            return lm
        import cv2
        gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        prev_gray, prev_lm = self._prev_gray, self._prev_lm
        self._prev_gray = gray
        if prev_gray is None or prev_lm is None or prev_gray.shape != gray.shape:
            return lm
        eye = max(_eye_distance(prev_lm), 1.0)
        s = max(5, int(eye / 4))
        tracked, status, _ = cv2.calcOpticalFlowPyrLK(
            prev_gray, gray, prev_lm.astype(np.float32).reshape(-1, 1, 2), None, winSize=(s, s), maxLevel=5,
            criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 10, 0.03))
        tracked = tracked.reshape(-1, 2).astype(np.float64)
        d = np.linalg.norm(prev_lm - lm, axis=1)
        alpha = np.exp(-(d / (self.flow_scale * eye)) ** 2)
        alpha[status.ravel() == 0] = 0.0
        alpha[~np.all(np.isfinite(tracked), axis=1)] = 0.0
        tracked = np.where(np.isfinite(tracked), tracked, lm)
        return (1.0 - alpha[:, None]) * lm + alpha[:, None] * tracked

    def _is_cut(self, lm: np.ndarray) -> bool:
        if self._last_raw is None:
            return False
        _, qsize = ffhq_quad(lm)
        return float(np.linalg.norm(lm.mean(0) - self._last_raw.mean(0))) > self.cut_threshold * max(qsize, 1.0)

    def _missing_items(self, indices: Iterable[int]) -> list[_Item]:
        out = []
        for i in indices:
            out.append(_Item(i, None, "missing", -1))
        return out

    def _stage_a(self, index: int, image, landmarks) -> list[_Item]:
        """Flow refinement and gap decisions; returns items in order."""
        if landmarks is None:
            if self.optical_flow and image is not None:
                import cv2
                self._prev_gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
            self._prev_lm = None
            self._gap.append(index)
            if self._last_raw is None or len(self._gap) > self.max_gap:
                # Cannot be bridged (no face before it, or the gap is too long): release as missing.
                out = self._missing_items(self._gap)
                self._gap = []
                self._last_raw = None
                return out
            return []
        lm = check_landmarks(landmarks)
        cut = self._is_cut(lm)
        if cut:
            self._prev_lm = None
        lm = self._refine(image, lm)
        self._prev_lm = lm
        out: list[_Item] = []
        if self._gap:
            if cut or self._last_raw is None:
                out += self._missing_items(self._gap)
            else:
                n = len(self._gap) + 1
                for k, gi in enumerate(self._gap, start=1):
                    t = k / n
                    v = ((1 - t) * self._last_raw + t * lm).ravel()
                    out.append(_Item(gi, v, "interpolated", self._segment))
                self.n_interpolated += len(self._gap)
            self._gap = []
        if cut or self._last_raw is None:
            self._segment += 1
        out.append(_Item(index, lm.ravel(), "detected", self._segment))
        self._last_raw = lm
        return out

    # ------------------------------------------------------------------------------------- output

    def _stage_bc(self, items: list[_Item], final: bool) -> list[StabilizedFrame]:
        # `None` pushed with final=True drains a stage after its last real item.
        quad_in: list[_Item] = []
        for it in items + [None] if final else items:
            for s in self._lm_stage.push(it, final=final and it is None):
                if s.value is None:
                    quad_in.append(s)
                else:
                    lm = s.value.reshape(68, 2)
                    quad_in.append(_Item(s.index, ffhq_quad(lm)[0].ravel(), s.status, s.segment, lm))
        out: list[StabilizedFrame] = []
        for it in quad_in + [None] if final else quad_in:
            for s in self._quad_stage.push(it, final=final and it is None):
                out.append(self._finish(s))
        return out

    def _finish(self, s: _Item) -> StabilizedFrame:
        if s.value is not None:
            f = StabilizedFrame(s.index, np.asarray(s.extra, dtype=np.float64), s.value.reshape(4, 2), s.status)
            self._held = f
            return f
        self.n_missing += 1
        if self.on_missing == "error":
            raise InputError(f"no face found in frame {s.index} of {self.source}",
                             hint="use --on-missing-face passthrough to keep such frames unedited")
        if self.on_missing == "hold" and self._held is not None:
            return StabilizedFrame(s.index, self._held.landmarks, self._held.quad, "held")
        return StabilizedFrame(s.index, None, None, "missing")

    def push(self, index: int, image: np.ndarray | None, landmarks) -> list[StabilizedFrame]:
        """Add frame ``index`` (uint8 [H, W, 3] RGB ``image``, needed for the optical flow; its
        [68, 2] ``landmarks`` or None when no face was detected); return the frames now finished."""
        index = int(index)
        if self._last_index is not None and index <= self._last_index:
            raise ValueError(f"frame index {index} after {self._last_index}: indices must increase")
        self._last_index = index
        return self._stage_bc(self._stage_a(index, image, landmarks), final=False)

    def flush(self) -> list[StabilizedFrame]:
        """Finish every remaining frame (call at the end of the stream)."""
        items = self._missing_items(self._gap)
        self._gap = []
        return self._stage_bc(items, final=True)


def stabilize_sequence(landmarks: Sequence[np.ndarray | None], fps: float,
                       images: Sequence[np.ndarray] | None = None, **kwargs) -> list[StabilizedFrame]:
    """:class:`FaceStabilizer` over a whole list (offline convenience; frames indexed 0..N-1)."""
    stab = FaceStabilizer(fps, **kwargs)
    out: list[StabilizedFrame] = []
    for i, lm in enumerate(landmarks):
        out += stab.push(i, None if images is None else images[i], lm)
    return out + stab.flush()


class MultiFaceStabilizer:
    """One :class:`FaceStabilizer` per face track, with the frames put back together in order.

    ``push(index, image, faces)`` takes the frame's selected faces (with ``track_id`` set by a
    :class:`~fsvideo.faces.track.FaceTracker`) and returns finished frames as
    ``(index, [(track_id, StabilizedFrame), ...])`` with only the tracks that have a face (detected,
    interpolated or held) in that frame.  A track absent for ``retire_s`` seconds is finished and
    dropped, so memory stays bounded, except with ``on_missing="hold"``: there a track is never
    retired, and its last face is held until that person is seen again or the video ends (each held
    track keeps one stabiliser's bounded look-ahead).  ``on_missing="error"`` raises for a frame with
    no face at all.

    Keyword arguments other than ``retire_s`` go to each :class:`FaceStabilizer`.
    """

    def __init__(self, fps: float, *, retire_s: float = 1.0, on_missing: str = "passthrough", **kwargs):
        if on_missing not in MISSING_POLICIES:
            raise InputError(f"unknown missing-face policy {on_missing!r}",
                             hint=f"use one of {', '.join(MISSING_POLICIES)}")
        self.fps = float(fps)
        self.on_missing = on_missing
        self.kwargs = dict(kwargs, on_missing="hold" if on_missing == "hold" else "passthrough")
        self.retire = max(1, int(round(retire_s * self.fps)))
        self.stabs: dict[int, FaceStabilizer] = {}
        self.absent: dict[int, int] = {}
        self.pending: dict[int, dict] = {}  # index -> {"expected": set, "results": dict}
        self.order: deque[int] = deque()
        self.n_missing = 0
        self.source = kwargs.get("source", "the video")

    @property
    def delay(self) -> int:
        return FaceStabilizer(self.fps, **self.kwargs).delay

    def _collect(self, tid: int, frames: list[StabilizedFrame]) -> None:
        for f in frames:
            p = self.pending.get(f.index)
            if p is not None:
                p["results"][tid] = f

    def _emit(self) -> list[tuple[int, list[tuple[int, StabilizedFrame]]]]:
        out = []
        while self.order:
            i = self.order[0]
            p = self.pending[i]
            if not p["expected"] <= set(p["results"]):
                break
            self.order.popleft()
            del self.pending[i]
            faces = [(t, f) for t, f in sorted(p["results"].items()) if f.has_face]
            if not faces:
                self.n_missing += 1
                if self.on_missing == "error":
                    raise InputError(f"no face found in frame {i} of {self.source}",
                                     hint="use --on-missing-face passthrough to keep such frames unedited")
            out.append((i, faces))
        return out

    def push(self, index: int, image: np.ndarray | None,
             faces) -> list[tuple[int, list[tuple[int, StabilizedFrame]]]]:
        """Add one frame's faces (each with ``track_id`` and ``landmarks``); return finished frames."""
        by_id = {}
        for f in faces:
            if f.track_id is None:
                raise ValueError("MultiFaceStabilizer needs faces with track_id set (use FaceTracker.update)")
            if f.landmarks is not None:
                by_id[int(f.track_id)] = f.landmarks
        for tid in by_id:
            if tid not in self.stabs:
                self.stabs[tid] = FaceStabilizer(self.fps, **self.kwargs)
        self.pending[index] = {"expected": set(self.stabs), "results": {}}
        self.order.append(index)
        for tid in list(self.stabs):
            st = self.stabs[tid]
            lm = by_id.get(tid)
            self._collect(tid, st.push(index, image, lm))
            self.absent[tid] = 0 if lm is not None else self.absent.get(tid, 0) + 1
            if self.on_missing != "hold" and self.absent[tid] > max(self.retire, st.max_gap):
                self._collect(tid, st.flush())
                del self.stabs[tid], self.absent[tid]
        return self._emit()

    def flush(self) -> list[tuple[int, list[tuple[int, StabilizedFrame]]]]:
        for tid, st in list(self.stabs.items()):
            self._collect(tid, st.flush())
        self.stabs.clear()
        self.absent.clear()
        return self._emit()


#: Landmarks that move with the head, not with speech: brows, nose, eyes (iBUG 17-47).
RIGID_LANDMARKS = slice(17, 48)


def crop_jitter(crops: Sequence[np.ndarray], landmarks: Sequence[np.ndarray], points=RIGID_LANDMARKS) -> float:
    """Mean frame-to-frame motion (crop pixels) of the face's landmarks inside successive aligned crops.

    For each pair of consecutive crops, the crop-``t`` landmarks ``points`` (brows, nose, eyes by
    default: they move with the head, not with speech) are followed into crop ``t + 1`` with
    pyramidal Lucas-Kanade optical flow on the crop pixels, and their mean displacement is taken.
    This measures how the face moves *in the crop* (what the encoder sees), independently of the
    landmarks any stabiliser used.  A perfectly stable crop of a still head gives 0.

    Args:
        crops: uint8 [O, O, 3] aligned crops of consecutive frames.
        landmarks: float [68, 2] landmarks in each crop's coordinates (``AlignedFace.landmarks``).
    """
    import cv2
    if len(crops) != len(landmarks) or len(crops) < 2:
        raise ValueError("crop_jitter needs at least 2 crops and one landmark array per crop")
    size = crops[0].shape[0]
    win = max(9, (size // 16) | 1)
    motions = []
    prev = cv2.cvtColor(np.ascontiguousarray(crops[0]), cv2.COLOR_RGB2GRAY)
    for t in range(len(crops) - 1):
        nxt = cv2.cvtColor(np.ascontiguousarray(crops[t + 1]), cv2.COLOR_RGB2GRAY)
        p = np.asarray(landmarks[t], dtype=np.float32)[points].reshape(-1, 1, 2)
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01)
        q, st, _ = cv2.calcOpticalFlowPyrLK(prev, nxt, p, None, winSize=(win, win), maxLevel=3, criteria=crit)
        ok = st.ravel() == 1
        if ok.any():
            motions.append(float(np.linalg.norm((q - p).reshape(-1, 2)[ok], axis=1).mean()))
        prev = nxt
    return float(np.mean(motions)) if motions else float("nan")
