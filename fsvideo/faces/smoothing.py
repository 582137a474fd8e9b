"""Streaming Gaussian smoothing over time of per-frame vectors (landmarks, quads), within runs.

The stabiliser (:mod:`fsvideo.faces.stabilize`) pushes one item per frame; an item comes back
smoothed once ``radius = ceil(truncate * sigma)`` later frames are in, or as soon as its run of
faces ends (a frame without a face or a cut starts a new run: smoothing never crosses one).

Two fits:

* ``"linear"`` (fsvideo's default): a Gaussian-weighted least-squares *line* through the
  neighbours, evaluated at the frame.  Inside a run it equals the Gaussian filter on a straight
  motion, and unlike it it does not lag at the start and end of a run (where the window is
  one-sided).
* ``"mean"`` (the official filter): the Gaussian-weighted mean, ``scipy.ndimage.gaussian_filter1d``
  with ``mode="reflect"``: at the ends of a run the window is completed by mirroring the run
  (``d c b a | a b c d | d c b a``).  The official code filters the whole clip in one go; here each
  run of faces is filtered alone, with the same result on a clip that has a face in every frame.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from fsvideo.errors import InputError

#: Values of ``fit``.
FITS = ("linear", "mean")

#: Named stabilisers (``FaceAligner(stabilize=...)``, ``--stabilizer``): see :func:`stabilizer_options`.
STABILIZERS = ("fsvideo", "official")

#: Default landmark smoothing sigma in seconds (quads get twice that), used by every front end
#: (``edit`` / ``invert`` ``--stabilize``, ``align --sigma``, metrics).  See "Default strength" above.
DEFAULT_SMOOTHING_S = 0.03


@dataclass
class Item:
    """One frame's vector on its way through a :class:`GaussianStage`."""

    index: int
    value: np.ndarray | None  # flattened vector, or None for a frame without a face
    status: str
    segment: int
    extra: object = None  # carried along (the landmarks while smoothing quads)


def _reflect(q: int, lo: int, hi: int) -> int:
    """Index ``q`` mirrored into ``[lo, hi]`` the way scipy's ``mode="reflect"`` extends a signal."""
    while q < lo or q > hi:
        q = 2 * lo - q - 1 if q < lo else 2 * hi - q + 1
    return q


class GaussianStage:
    """Streaming Gaussian smoothing of vectors within runs (see the module docstring).

    Args:
        sigma: in frames (0: no smoothing, no look-ahead).
        truncate: kernel radius in sigmas (the look-ahead).
        fit: ``"linear"`` or ``"mean"``.
    """

    def __init__(self, sigma: float, truncate: float, fit: str = "linear"):
        if fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
        self.sigma = float(sigma)
        self.fit = fit
        self.radius = int(math.ceil(truncate * sigma)) if sigma > 0 else 0
        k = np.arange(-self.radius, self.radius + 1, dtype=np.float64)
        self.weights = np.exp(-0.5 * (k / self.sigma) ** 2) if sigma > 0 else np.ones(1)
        self.buf: deque[Item] = deque()
        self.pos = 0  # index into buf of the first item not yet emitted

    def _same_run(self, q: int, segment: int) -> bool:
        o = self.buf[q]
        return o.value is not None and o.segment == segment

    def _mean_reflect(self, p: int) -> np.ndarray:
        seg = self.buf[p].segment
        lo, hi = p, p
        while lo - 1 >= 0 and lo - 1 >= p - self.radius and self._same_run(lo - 1, seg):
            lo -= 1
        while hi + 1 < len(self.buf) and hi + 1 <= p + self.radius and self._same_run(hi + 1, seg):
            hi += 1
        # Inside the window, lo/hi are the run's ends only where the run ends (else the whole window is in).
        v = np.stack([self.buf[_reflect(p + k, lo, hi)].value for k in range(-self.radius, self.radius + 1)])
        return (self.weights[:, None] * v).sum(0) / self.weights.sum()

    def _linear(self, p: int) -> np.ndarray:
        it = self.buf[p]
        ks, ws, vs = [], [], []
        for j, k in enumerate(range(-self.radius, self.radius + 1)):
            q = p + k
            if 0 <= q < len(self.buf) and self._same_run(q, it.segment):
                ks.append(float(k))
                ws.append(self.weights[j])
                vs.append(self.buf[q].value)
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

    def _smooth(self, p: int) -> np.ndarray:
        if self.radius == 0:
            return self.buf[p].value
        return self._linear(p) if self.fit == "linear" else self._mean_reflect(p)

    def _ready(self, p: int, final: bool) -> bool:
        it = self.buf[p]
        if it.value is None or final:
            return True
        for q in range(p + 1, min(len(self.buf), p + self.radius + 1)):
            if not self._same_run(q, it.segment):
                return True  # the run ended: no later neighbour can come
        return len(self.buf) - 1 - p >= self.radius

    def push(self, item: Item | None, final: bool = False) -> list[Item]:
        """Add ``item`` (None: nothing new); return the items now smoothed, in order.  ``final``
        drains everything (the stream ended)."""
        if item is not None:
            self.buf.append(item)
        out = []
        while self.pos < len(self.buf) and self._ready(self.pos, final):
            it = self.buf[self.pos]
            v = None if it.value is None else self._smooth(self.pos)
            out.append(Item(it.index, v, it.status, it.segment, it.extra))
            self.pos += 1
        while self.pos > self.radius:  # keep `radius` emitted items as past context
            self.buf.popleft()
            self.pos -= 1
        return out


def stabilizer_options(name: str = "fsvideo", fps: float = 30.0,
                       sigma_s: float = DEFAULT_SMOOTHING_S) -> dict:
    """:class:`FaceStabilizer` keyword arguments of a named stabiliser.

    ``"fsvideo"``: optical flow (distance scale in eye distances) + Gaussian-weighted local linear
    fits relative to the face's flow-measured motion (``follow_motion``), landmark sigma ``sigma_s``
    seconds, quads twice that, truncated at 2 sigmas.
    ``"official"``: the official video pipeline's filter (spec section 4): flow blend
    ``exp(-d**2 / 100)`` in pixels, ``gaussian_filter1d`` (reflect) with sigma 3 frames on the
    landmarks and 6 frames on the quads, whatever the frame rate, truncated at 4 sigmas (a
    look-ahead of 36 frames plus the gap bridge), not following the motion.  Both bridge short
    gaps and stop at cuts.
    """
    if name == "fsvideo":
        return {"sigma_s": float(sigma_s), "optical_flow": True}
    if name == "official":
        return {"sigma_s": 3.0 / fps, "quad_sigma_s": 6.0 / fps, "truncate": 4.0, "fit": "mean",
                "flow_px": 10.0, "optical_flow": True, "follow_motion": False}
    raise InputError(f"unknown stabiliser {name!r}", hint=f"use one of {', '.join(STABILIZERS)}")


def parse_stabilize(value) -> tuple[bool | str, float]:
    """A ``--stabilize`` value -> ``(stabilize, sigma_s)`` for :class:`~fsvideo.faces.stream.FaceAligner`.

    Seconds (``0.03``: the ``fsvideo`` stabiliser with that landmark sigma; ``0``: off) or a name
    of :data:`STABILIZERS` (``official``).  Anything else is an InputError naming the value.
    """
    if isinstance(value, str):
        v = value.strip().lower()
        if v in STABILIZERS:
            return v, DEFAULT_SMOOTHING_S
        if v in ("off", "none"):
            return False, DEFAULT_SMOOTHING_S
        try:
            value = float(v)
        except ValueError:
            raise InputError(f"--stabilize {value!r} is neither seconds nor a stabiliser name",
                             hint=f"use seconds such as {DEFAULT_SMOOTHING_S}, 0 (off) or "
                                  f"{' / '.join(STABILIZERS)}") from None
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise InputError(f"--stabilize {value} must be >= 0 seconds", hint="use 0 to turn stabilisation off")
    return ("fsvideo", value) if value > 0 else (False, DEFAULT_SMOOTHING_S)
