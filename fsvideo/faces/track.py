"""Stable face identities through a clip, and the choice of which faces to edit.

:class:`FaceTracker` gives every detected face a ``track_id`` that stays the same for one person:

1. Boxes of the current frame are matched to active tracks by IoU with the track's predicted box
   (last box moved by its recent velocity), one-to-one (Hungarian assignment).
2. A track that is not matched is kept ``max_missed`` frames (missed detections, short occlusions);
   then it becomes *lost*.
3. Unmatched faces are compared with lost tracks (a person leaving and re-entering): by appearance
   when an ``embedder`` is given (e.g. :class:`DlibFaceEmbedder`, a 128-D identity descriptor), else
   by position and size.  A match revives the old id; otherwise the face starts a new track.

Lost tracks are remembered for ``max_lost`` frames (at most ``max_tracks`` of them), so memory does
not grow with the video.

:func:`select_faces` applies a policy (``"largest"``, a track id, or ``"all"``) to one frame's faces;
:class:`FaceSelector` does the same over a clip and keeps ``"largest"`` on one person.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from fsvideo.errors import InputError
from fsvideo.faces.detect import Face

log = logging.getLogger(__name__)

#: ``embedder(image, face) -> float vector``: an appearance descriptor of one face.
Embedder = Callable[[np.ndarray, Face], np.ndarray]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [N, M] of boxes a [N, 4] and b [M, 4] given as (x0, y0, x1, y1)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclass
class Track:
    """One person's state in the tracker."""

    track_id: int
    box: np.ndarray
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    last_frame: int = 0
    hits: int = 1
    missed: int = 0
    descriptor: np.ndarray | None = None
    descriptor_frame: int = -(10 ** 9)
    descriptor_count: int = 0

    @property
    def predicted_box(self) -> np.ndarray:
        """Last box moved by the velocity for the frames since it was seen."""
        return self.box + self.velocity * (self.missed + 1)

    @property
    def size(self) -> float:
        return float(np.sqrt(max(1e-6, (self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))))


def _assign(cost: np.ndarray, max_cost: float) -> list[tuple[int, int]]:
    """One-to-one assignment minimising ``cost`` with every pair's cost <= ``max_cost``."""
    if cost.size == 0:
        return []
    from scipy.optimize import linear_sum_assignment
    big = max_cost + 1e6
    c = np.where(cost <= max_cost, cost, big)
    rows, cols = linear_sum_assignment(c)
    return [(int(r), int(k)) for r, k in zip(rows, cols) if c[r, k] <= max_cost]


class FaceTracker:
    """Assigns stable track ids to the faces of successive frames.

    Args:
        max_missed: frames a track may go undetected and still be matched by box overlap.
        iou_threshold: minimum IoU between a predicted track box and a detection to match them.
        max_lost: frames a lost track is remembered for re-identification (None: as long as there is
            room among ``max_tracks``).
        max_tracks: most lost tracks remembered (oldest dropped first).
        embedder: optional ``embedder(image, face) -> vector`` appearance descriptor; with it, lost
            tracks are re-identified by descriptor distance (``reid_threshold``), wherever the face is.
        reid_threshold: largest descriptor distance (Euclidean) of the same person (0.6 for dlib's).
        reid_distance: without an embedder, a returning face matches a lost track when its centre is
            within this many track-box sizes of the track's last centre and its size within a
            factor 1.5.
        embed_every: recompute a matched track's descriptor every this many frames.
        velocity_smoothing: weight of the newest box motion in the velocity estimate (0 disables).

    Example::

        tracker = FaceTracker()
        for image in frames:
            faces = tracker.update(detector.detect(image), image)
            print([f.track_id for f in faces])
    """

    def __init__(self, max_missed: int = 5, iou_threshold: float = 0.3, *, max_lost: int | None = None,
                 max_tracks: int = 64, embedder: Embedder | None = None, reid_threshold: float = 0.6,
                 reid_distance: float = 1.0, embed_every: int = 15, velocity_smoothing: float = 0.5):
        if max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {max_missed}")
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        self.max_missed = int(max_missed)
        self.iou_threshold = float(iou_threshold)
        self.max_lost = max_lost
        self.max_tracks = int(max_tracks)
        self.embedder = embedder
        self.reid_threshold = float(reid_threshold)
        self.reid_distance = float(reid_distance)
        self.embed_every = int(embed_every)
        self.velocity_smoothing = float(velocity_smoothing)
        self.reset()

    def reset(self) -> None:
        """Forget every track (e.g. at a scene cut chosen by the caller)."""
        self.active: list[Track] = []
        self.lost: list[Track] = []
        self.frame = -1
        self._next_id = 0

    def is_active(self, track_id: int) -> bool:
        """True while ``track_id`` is matched or missed for at most ``max_missed`` frames."""
        return any(t.track_id == track_id for t in self.active)

    @property
    def n_tracks(self) -> int:
        """Track ids handed out so far."""
        return self._next_id

    # ----------------------------------------------------------------------------------------- steps

    def _descriptor(self, image, face: Face) -> np.ndarray | None:
        if self.embedder is None or image is None:
            return None
        d = np.asarray(self.embedder(image, face), dtype=np.float64).ravel()
        return d if d.size and np.all(np.isfinite(d)) else None

    def _update_track(self, t: Track, face: Face, image) -> None:
        box = np.asarray(face.box, dtype=np.float64)
        step = (box - t.box) / (t.missed + 1)
        a = self.velocity_smoothing
        t.velocity = (1 - a) * t.velocity + a * step if t.hits > 1 else step * a
        t.box = box
        t.last_frame = self.frame
        t.hits += 1
        t.missed = 0
        if self.embedder is not None and self.frame - t.descriptor_frame >= self.embed_every:
            d = getattr(face, "_descriptor", None)
            d = d if d is not None else self._descriptor(image, face)
            if d is not None:
                n = min(t.descriptor_count, 9)  # running mean over about the last 10 samples
                t.descriptor = d if t.descriptor is None else (t.descriptor * n + d) / (n + 1)
                t.descriptor_count += 1
                t.descriptor_frame = self.frame
        face.track_id = t.track_id

    def _new_track(self, face: Face, image) -> None:
        t = Track(track_id=self._next_id, box=np.asarray(face.box, dtype=np.float64), last_frame=self.frame)
        self._next_id += 1
        d = getattr(face, "_descriptor", None)
        d = d if d is not None else self._descriptor(image, face)
        if d is not None:
            t.descriptor, t.descriptor_count, t.descriptor_frame = d, 1, self.frame
        face.track_id = t.track_id
        self.active.append(t)
        log.debug("frame %d: new face track %d", self.frame, t.track_id)

    def _reid_cost(self, faces: list[Face], image) -> np.ndarray:
        """Cost [lost, faces] of reviving each lost track with each face (inf: not allowed)."""
        cost = np.full((len(self.lost), len(faces)), np.inf)
        if self.embedder is not None and image is not None:
            for f in faces:
                f._descriptor = self._descriptor(image, f)  # type: ignore[attr-defined]
            for i, t in enumerate(self.lost):
                if t.descriptor is None:
                    continue
                for j, f in enumerate(faces):
                    d = getattr(f, "_descriptor", None)
                    if d is not None and d.shape == t.descriptor.shape:
                        dist = float(np.linalg.norm(d - t.descriptor))
                        if dist <= self.reid_threshold:
                            cost[i, j] = dist / self.reid_threshold
            return cost
        for i, t in enumerate(self.lost):
            tc = np.array([(t.box[0] + t.box[2]) / 2, (t.box[1] + t.box[3]) / 2])
            for j, f in enumerate(faces):
                fs = np.sqrt(max(f.area, 1e-6))
                ratio = fs / t.size
                dist = float(np.linalg.norm(f.center - tc)) / t.size
                if 1 / 1.5 <= ratio <= 1.5 and dist <= self.reid_distance:
                    cost[i, j] = dist / max(self.reid_distance, 1e-9)
        return cost

    def update(self, faces: Sequence[Face], image: np.ndarray | None = None) -> list[Face]:
        """Set ``track_id`` on this frame's ``faces`` (in place) and return them.

        Call once per frame, in order, also for frames without faces (an empty list), so that
        missed-frame counts stay right.  ``image`` (uint8 [H, W, 3]) is needed only by an embedder.
        """
        self.frame += 1
        faces = list(faces)
        # 1. active tracks by IoU with their predicted boxes.
        unmatched = list(range(len(faces)))
        if self.active and faces:
            iou = box_iou(np.stack([t.predicted_box for t in self.active]), np.stack([f.box for f in faces]))
            pairs = _assign(1.0 - iou, 1.0 - self.iou_threshold)
            for ti, fi in pairs:
                self._update_track(self.active[ti], faces[fi], image)
            matched_t = {ti for ti, _ in pairs}
            unmatched = [fi for fi in unmatched if fi not in {f for _, f in pairs}]
        else:
            matched_t = set()
        still = []
        for i, t in enumerate(self.active):
            if i in matched_t:
                still.append(t)
                continue
            t.missed += 1
            if t.missed > self.max_missed:
                self.lost.append(t)
                log.debug("frame %d: face track %d lost", self.frame, t.track_id)
            else:
                still.append(t)
        self.active = still
        # 2. lost tracks (re-entry).
        if self.lost and unmatched:
            rest = [faces[i] for i in unmatched]
            pairs = _assign(self._reid_cost(rest, image), 1.0)
            revived = set()
            for li, fj in pairs:
                t = self.lost[li]
                t.missed = 0
                t.velocity = np.zeros(4)
                self._update_track(t, rest[fj], image)
                self.active.append(t)
                revived.add(li)
                log.debug("frame %d: face track %d re-entered", self.frame, t.track_id)
            self.lost = [t for i, t in enumerate(self.lost) if i not in revived]
            done = {unmatched[fj] for _, fj in pairs}
            unmatched = [i for i in unmatched if i not in done]
        # 3. new tracks.
        for i in unmatched:
            self._new_track(faces[i], image)
        # Forget old lost tracks (bounded memory).
        if self.max_lost is not None:
            self.lost = [t for t in self.lost if self.frame - t.last_frame <= self.max_lost]
        if len(self.lost) > self.max_tracks:
            self.lost = sorted(self.lost, key=lambda t: t.last_frame)[-self.max_tracks:]
        for f in faces:
            if hasattr(f, "_descriptor"):
                del f._descriptor  # type: ignore[attr-defined]
        return faces


class DlibFaceEmbedder:
    """dlib's ResNet face descriptor (128-D; same person below about 0.6), for :class:`FaceTracker`.

    About 90 ms per face on a CPU; the tracker calls it only every ``embed_every`` frames per track
    and for faces that could be a returning person.  Uses the 68 landmarks of the face.
    """

    def __init__(self):
        import dlib

        from fsvideo.faces.detect import dlib_model_path
        path = dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")
        self._net = dlib.face_recognition_model_v1(str(path))

    def __call__(self, image: np.ndarray, face: Face) -> np.ndarray:
        import dlib
        if face.landmarks is None:
            raise ValueError("DlibFaceEmbedder needs faces with 68 landmarks")
        b = face.box
        rect = dlib.rectangle(int(round(b[0])), int(round(b[1])), int(round(b[2])), int(round(b[3])))
        pts = [dlib.point(int(round(x)), int(round(y))) for x, y in face.landmarks]
        shape = dlib.full_object_detection(rect, pts)
        d = self._net.compute_face_descriptor(np.ascontiguousarray(image), shape)
        return np.asarray(d, dtype=np.float64)


_IDS = re.compile(r"[0-9]+(?:\s*,\s*[0-9]+)*")     # "3", "0,2", "2, 0"


def parse_policy(policy) -> str | int | frozenset[int]:
    """``"largest"``, ``"all"``, an int track id, or several (``"0,2"``: a frozenset) from a CLI string
    or a value (InputError otherwise)."""
    if isinstance(policy, (int, np.integer)) and not isinstance(policy, bool):
        if policy < 0:
            raise InputError(f"face track id {policy} is negative", hint="use largest, all or a track id >= 0")
        return int(policy)
    if isinstance(policy, frozenset) and len(policy) > 1 and all(isinstance(i, int) and i >= 0 for i in policy):
        return policy                                    # parsed already
    if isinstance(policy, str):
        p = policy.strip().lower()
        if p in ("largest", "all"):
            return p
        if _IDS.fullmatch(p):                            # ASCII digits only ("²".isdigit() is true; int() refuses it)
            ids = frozenset(int(x) for x in p.split(","))
            return next(iter(ids)) if len(ids) == 1 else ids
    raise InputError(f"unknown face selection {policy!r}",
                     hint="use largest, all, a track id such as 0, or several such as 0,2")


def policy_text(policy: str | int | frozenset[int]) -> str:
    """The CLI spelling of a parsed policy (``"largest"``, ``"3"``, ``"0,2"``)."""
    return ",".join(str(i) for i in sorted(policy)) if isinstance(policy, frozenset) else str(policy)


def select_faces(faces: Sequence[Face], policy: str | int = "largest") -> list[Face]:
    """The faces of one frame to edit under ``policy``.

    ``"largest"``: the face with the largest box (or none); ``"all"``: every face; an int: the faces
    whose ``track_id`` equals it; a set of ints: those whose ``track_id`` is in it.  Strings such as
    ``"3"`` or ``"0,2"`` are read as ids.
    """
    p = parse_policy(policy)
    faces = list(faces)
    if p == "all":
        return faces
    if p == "largest":
        return [max(faces, key=lambda f: f.area)] if faces else []
    ids = p if isinstance(p, frozenset) else {p}
    return [f for f in faces if f.track_id in ids]


class FaceSelector:
    """:func:`select_faces` over a clip, with ``"largest"`` kept on one person.

    With ``"largest"`` it locks onto the track of the largest face and follows it while the tracker
    keeps it active (a missed detection gives no face for that frame, which the stabiliser bridges,
    rather than a jump to another person); when that track is lost it locks onto the new largest.
    """

    def __init__(self, policy: str | int = "largest", tracker: FaceTracker | None = None):
        self.policy = parse_policy(policy)
        self.tracker = tracker
        self.locked: int | None = None
        self.seen: set[int] = set()        # track ids met, and faces chosen: see missing_id_message
        self.chosen = 0

    def __call__(self, faces: Sequence[Face]) -> list[Face]:
        faces = list(faces)
        self.seen.update(f.track_id for f in faces if f.track_id is not None)
        chosen = self._choose(faces)
        self.chosen += len(chosen)
        return chosen

    def missing_id_message(self) -> str | None:
        """The track ids asked for that no face had, said with the ids there were (None: all were met)."""
        if self.policy in ("largest", "all"):
            return None
        asked = self.policy if isinstance(self.policy, frozenset) else {self.policy}
        missing = sorted(asked - self.seen) if self.chosen else sorted(asked)
        if not missing:
            return None
        ids = ", ".join(str(i) for i in sorted(self.seen)) or "none: no face was found"
        what = f"track id {missing[0]}" if len(missing) == 1 else "track ids " + ", ".join(map(str, missing))
        return (f"no face has {what} (the track ids are {ids}){'' if self.chosen else ', so no face was chosen'}; "
                "use --face largest, --face all, or ids that `fsvideo align` lists")

    def _choose(self, faces: list[Face]) -> list[Face]:
        if self.policy != "largest":
            return select_faces(faces, self.policy)
        if self.locked is not None:
            mine = [f for f in faces if f.track_id == self.locked]
            if mine:
                return mine[:1]
            if self.tracker is not None and self.tracker.is_active(self.locked):
                return []
        chosen = select_faces(faces, "largest")
        self.locked = chosen[0].track_id if chosen and chosen[0].track_id is not None else None
        return chosen
