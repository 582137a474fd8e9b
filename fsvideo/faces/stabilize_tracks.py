"""One :class:`~fsvideo.faces.stabilize.FaceStabilizer` per face track, and shot cuts for all of them.

Used by :class:`~fsvideo.faces.stream.FaceAligner`: frames go in with their tracked faces, and come
out in order once every track's stabiliser has finished them.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from fsvideo.errors import InputError
from fsvideo.faces.keyframes import ShotCuts
from fsvideo.faces.stabilize import MISSING_POLICIES, FaceStabilizer, StabilizedFrame


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

    ``shot_cuts`` (default True): each frame's picture goes through a
    :class:`~fsvideo.faces.keyframes.ShotCuts` test (~0.1 ms), and a cut resets every track's filter
    and flow (``FaceStabilizer.push(cut=True)``), even where the face stays in place across it (the
    stabiliser's own cut test only sees the face jump).

    Keyword arguments other than ``retire_s`` and ``shot_cuts`` go to each :class:`FaceStabilizer`.
    """

    def __init__(self, fps: float, *, retire_s: float = 1.0, on_missing: str = "passthrough", shot_cuts: bool = True,
                 **kwargs):
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
        self.cuts = ShotCuts() if shot_cuts else None
        self.n_cuts = 0

    @property
    def delay(self) -> int:
        return FaceStabilizer(self.fps, **self.kwargs).delay

    def describe(self) -> dict:
        """:meth:`FaceStabilizer.describe` of the per-track stabilisers."""
        return dict(FaceStabilizer(self.fps, **self.kwargs).describe(), shot_cuts=self.cuts is not None)

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
        by_id, tracked, motions = {}, set(), {}
        for f in faces:
            if f.track_id is None:
                raise ValueError("MultiFaceStabilizer needs faces with track_id set (use FaceTracker.update)")
            if f.landmarks is not None:
                by_id[int(f.track_id)] = f.landmarks
                if getattr(f, "tracked", False):
                    tracked.add(int(f.track_id))
                motions[int(f.track_id)] = getattr(f, "motion", None)
        for tid in by_id:
            if tid not in self.stabs:
                self.stabs[tid] = FaceStabilizer(self.fps, **self.kwargs)
        self.pending[index] = {"expected": set(self.stabs), "results": {}}
        self.order.append(index)
        cut = self.cuts is not None and image is not None and self.cuts.push(image)
        self.n_cuts += cut
        for tid in list(self.stabs):
            st = self.stabs[tid]
            lm = by_id.get(tid)
            self._collect(tid, st.push(index, image, lm, refine=tid not in tracked, cut=cut, motion=motions.get(tid)))
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


__all__ = ["MultiFaceStabilizer"]
