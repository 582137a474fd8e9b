"""Temporal quality of an edited video against its source: TL-ID / TG-ID, flicker, background, jitter.

What users of a video editor fear is flicker, jitter, identity drifting over time and the
background being touched.  :class:`TemporalEvaluator` reads an edited video and its source in
lockstep (frame ``i`` of one against frame ``i`` of the other, as ``fsvideo edit`` keeps every
frame) and measures, per clip:

* **TL-ID / TG-ID**, the temporally local and global identity consistency of STIT ("Stitch it in
  Time: GAN-Based Facial Editing of Real Videos", Tzaban et al., SIGGRAPH Asia 2022,
  arXiv:2201.08361, Sec. 5 "Temporal coherence" metrics): with ``S`` the matrix of identity
  similarities of all frame pairs of the source (``S_ij = <R(x_i), R(x_j)>``) and ``E`` the same of
  the edited video, the element-wise ratio ``E / S`` is averaged over adjacent frames
  (``TL-ID = mean_i E_{i,i+1} / S_{i,i+1}``) and over all pairs of different frames (``TG-ID``).
  1 means "as consistent as the source".  The STIT repository (rotemtzaban/STIT) ships no metrics
  script; the averaging of the ratio (not a ratio of averages) follows the public evaluation code
  written for the paper's metrics (``measure_local_similarity``: ``np.diag(E / S, k=1).mean()``,
  ``measure_global_similarity``: the mean of ``E / S`` off the diagonal), with ArcFace as R.  Here R
  is the identity network ``fsvideo metrics`` chooses (ArcFace when present, else dlib's
  descriptor; named in every result).  Frames without a face are left out; "adjacent" means
  consecutive frames that both have a face.
* **Identity to frame 0** of the source and the edit (Eq. 9 of the Feature-Style paper, per frame).
* **Flicker** (flow-warping error inside and outside the face, and its floor on the source:
  :mod:`fsvideo.metrics.flicker`).
* **Background preservation**: PSNR and max abs difference outside the dilated face region.
* **Landmark jitter**: :func:`fsvideo.faces.crop_jitter` (motion of the brow/eye/nose
  landmarks between consecutive aligned crops, LK flow on the crop pixels; the measure of
  ``benchmarks/faces.py``) of the edited crops, against the same figure of the source crops.

Flicker and jitter pair consecutive frames of one shot only (a shot cut, found by
:class:`fsvideo.faces.keyframes.ShotCuts` on the source, starts a new run; flow across it measures
nothing), and jitter only those of one face track (not two people one after the other).

Faces come from the face front end the pipeline uses (:class:`fsvideo.faces.stream.FaceAligner`:
detection, tracking of the largest face, stabilisation, FFHQ alignment) run on the *source*
frames; the edited frame is cut with the same quad, so both crops show the same place.

Example::

    ev = TemporalEvaluator(make_detector("dlib"), load_identity("auto"), max_frames=60)
    res = ev.evaluate("talk.smile+2.mp4", "talk.mp4")
    res.metrics["tl_id"], res.metrics["warp_face"], res.frames[3]["sim_edited"]
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fsvideo.errors import FsvideoError, InputError
from fsvideo.metrics.consistency import ConsistencyAccumulator
from fsvideo.metrics.flicker import BackgroundMeter, WarpErrorMeter, face_region
from fsvideo.metrics.identity import IdentityNetwork
from fsvideo.metrics.results import ClipResult, sha256_file

log = logging.getLogger(__name__)

#: Bump when a change here changes numbers (old cache entries are then not reused; 2: pairs stop
#: at shot cuts and track changes, and the stabiliser follows the flow's motion).
TEMPORAL_VERSION = 2

#: Per-clip temporal metrics, in table order, with the direction that is better.
TEMPORAL_METRICS: dict[str, str] = {
    "tl_id": "higher", "tg_id": "higher", "ic_source": "higher", "ic_edited": "higher",
    "warp_face": "lower", "warp_face_source": "lower", "warp_bg": "lower", "warp_bg_source": "lower",
    "bg_psnr": "higher", "bg_max_abs": "lower", "jitter": "lower", "jitter_source": "lower",
}


def similarity_matrix(embeddings) -> np.ndarray:
    """Cosine similarities of all pairs of rows of ``[N, D]`` embeddings -> float64 ``[N, N]``."""
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got shape {e.shape}")
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return e @ e.T


def _ratio(source, edited) -> np.ndarray:
    s, e = similarity_matrix(source), similarity_matrix(edited)
    if s.shape != e.shape:
        raise ValueError(f"source and edited embeddings differ in number: {s.shape[0]} vs {e.shape[0]}")
    return e / s


def tl_id(source, edited, adjacent=None) -> float:
    """STIT's TL-ID: mean over adjacent frames of ``sim_edited(i, i+1) / sim_source(i, i+1)``.

    Args:
        source, edited: ``[N, D]`` identity embeddings of the same frames, in order.
        adjacent: bool ``[N - 1]``: whether rows ``i`` and ``i + 1`` are consecutive frames (default
            all); pairs across a gap are left out.

    Returns NaN when there is no adjacent pair.
    """
    r = np.diag(_ratio(source, edited), k=1)
    if adjacent is not None:
        r = r[np.asarray(adjacent, bool)]
    return float(r.mean()) if len(r) else math.nan


def tg_id(source, edited) -> float:
    """STIT's TG-ID: mean over all pairs of different frames of ``sim_edited(i, j) / sim_source(i, j)``."""
    r = _ratio(source, edited)
    n = r.shape[0]
    if n < 2:
        return math.nan
    return float(r[~np.eye(n, dtype=bool)].mean())


@dataclass(frozen=True)
class TemporalSettings:
    """What a temporal measurement depends on besides the two videos (part of the cache key).

    Attributes:
        max_frames: at most this many frame pairs from the start (None: all).
        size: side of the aligned crops identity and jitter are measured on.
        detector, identity: face detector and identity network names.
        stabilize: the face front end stabilises the landmarks over time (its default strength, as
            ``fsvideo edit``); False aligns each frame alone.
        flow: optical flow method; flow_max_side: long side the flicker is measured at.
        dilate: the face region is grown by this fraction of the face's FFHQ quad side.
        version: :data:`TEMPORAL_VERSION`.
    """

    max_frames: int | None = None
    size: int = 256
    detector: str = "dlib"
    identity: str = "dlib-resnet-v1"
    stabilize: bool = True
    flow: str = "dis"
    flow_max_side: int | None = 512
    dilate: float = 0.1
    version: int = TEMPORAL_VERSION

    def to_dict(self) -> dict:
        return {"kind": "temporal", **asdict(self)}

    def key(self) -> str:
        """16 hex digits identifying these settings (canonical JSON, sha256)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class PairResult(ClipResult):
    """A :class:`~fsvideo.metrics.results.ClipResult` of an edited clip (``clip``, ``path``) and its source.

    ``sha256`` is :func:`pair_sha256` of the two files (the cache key); ``frames`` holds per-frame
    ``{index, face, sim_source, sim_edited, warp_face, warp_face_source, warp_bg, warp_bg_source,
    bg_psnr, bg_max_abs, jitter, jitter_source, face_size}`` (None where undefined).
    """

    source: str = ""
    source_sha256: str = ""
    edited_sha256: str = ""
    frames_source: int = 0  # frame counts of the two files (probe; the pairs measured: frames_sampled)
    frames_edited: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> PairResult:
        """Read back a :meth:`to_dict`: JSON has no inf, so an untouched background's PSNR comes back as inf."""
        r = super().from_dict(d)
        for rec in (r.metrics, *r.frames):
            if rec.get("bg_psnr") is None and rec.get("bg_max_abs") == 0:
                rec["bg_psnr"] = math.inf
        return r


def pair_sha256(edited_sha: str, source_sha: str) -> str:
    """One content hash for an (edited, source) pair."""
    return hashlib.sha256(f"{edited_sha}:{source_sha}".encode()).hexdigest()


def skipped_pair(edited, source, reason: str, **kw) -> PairResult:
    p = Path(edited)
    return PairResult(clip=p.name or str(p), path=str(edited), source=str(source), status="skipped",
                      reason=reason, **kw)


class _Clip:
    """Running state of one measurement."""

    def __init__(self):
        self.bg = BackgroundMeter()
        self.acc_src, self.acc_out = ConsistencyAccumulator(), ConsistencyAccumulator()
        self.emb_src: list[np.ndarray] = []
        self.emb_out: list[np.ndarray] = []
        self.face_indices: list[int] = []
        self.batch: list[tuple[dict, np.ndarray, np.ndarray, np.ndarray]] = []
        self.prev: dict | None = None
        self.rows: list[dict] = []
        from fsvideo.faces.keyframes import ShotCuts
        self.cuts = ShotCuts()


class TemporalEvaluator:
    """Measures (edited, source) video pairs with ready-built components.

    Args:
        detector: a :class:`fsvideo.faces.detect.FaceDetector` (run on the source frames).
        identity: the identity network R (TL-ID, TG-ID, identity to frame 0).
        max_frames: at most this many frame pairs from the start (None: the whole clip).
        size: aligned crop side for identity and jitter.
        stabilize: stabilise the landmarks over time as ``fsvideo edit`` does (its default strength).
        flow, flow_max_side: optical flow method and the long side flicker is measured at.
        dilate: the face region (hull with the forehead) is grown by this fraction of the face's
            FFHQ quad side, so that it holds whatever the blend mask reached.
        batch_size: crops per identity-network call.
    """

    def __init__(self, detector, identity: IdentityNetwork, *, max_frames: int | None = None, size: int = 256,
                 stabilize: bool = True, flow: str = "dis", flow_max_side: int | None = 512, dilate: float = 0.1,
                 batch_size: int = 8):
        if max_frames is not None and max_frames < 2:
            raise InputError(f"--max-frames {max_frames} is too few for temporal metrics",
                             hint="use at least 2 (consecutive frames are compared)")
        if size < 64:
            raise InputError(f"--size {size} is too small", hint="use at least 64 (256 is the default)")
        if dilate < 0:
            raise InputError(f"--dilate {dilate} must be >= 0", hint="0.1 grows the face region by a tenth of its size")
        self.detector = detector
        self.identity = identity
        self.max_frames = None if not max_frames else int(max_frames)
        self.size = int(size)
        self.stabilize = bool(stabilize)
        self.warp = WarpErrorMeter(flow, flow_max_side)
        self.dilate = float(dilate)
        self.batch_size = max(1, int(batch_size))

    @property
    def settings(self) -> TemporalSettings:
        return TemporalSettings(max_frames=self.max_frames, size=self.size,
                                detector=getattr(self.detector, "name", type(self.detector).__name__),
                                identity=self.identity.name, stabilize=self.stabilize, flow=self.warp.method,
                                flow_max_side=self.warp.max_side, dilate=self.dilate)

    def evaluate(self, edited: str | os.PathLike, source: str | os.PathLike, *, sha256: str | None = None,
                 progress=None) -> PairResult:
        """Measure one pair; never raises for a bad clip (returns a skipped result naming the fix).

        Args:
            edited, source: the edited video and the video it was made from.
            sha256: :func:`pair_sha256` when already known.
            progress: ``progress(clip_name, frames_done)``.
        """
        from fsvideo.video import VideoReader, probe
        e, s = Path(edited), Path(source)
        settings = self.settings
        base = {"settings_key": settings.key(), "identity_network": self.identity.name,
                "settings": settings.to_dict()}
        try:
            ie, is_ = probe(e), probe(s)
            sha_e, sha_s = sha256_file(e), sha256_file(s)
        except FsvideoError as err:
            return skipped_pair(e, s, str(err), **base)
        except OSError as err:
            return skipped_pair(e, s, f"{err.filename or e}: cannot read ({err.strerror or err})", **base)
        base.update(sha256=sha256 or pair_sha256(sha_e, sha_s), edited_sha256=sha_e, source_sha256=sha_s)
        if (ie.width, ie.height) != (is_.width, is_.height):
            return skipped_pair(e, s, f"{e} is {ie.width}x{ie.height} but its source {s} is {is_.width}x{is_.height}",
                                **base)
        res = PairResult(clip=e.name, path=str(e), source=str(s), frames_source=is_.n_frames,
                         frames_edited=ie.n_frames, **base)
        t0 = time.perf_counter()
        try:
            self._measure(VideoReader(e, info=ie), VideoReader(s, info=is_), float(is_.fps) or 25.0, res, progress)
        except FsvideoError as err:
            return skipped_pair(e, s, str(err), **base)
        if res.frames_used == 0:
            return skipped_pair(e, s, f"no face found in the {res.frames_sampled} frames of {s}",
                                frames_sampled=res.frames_sampled, **base)
        log.info("%s: %d/%d frames with a face in %.1f s", e.name, res.frames_used, res.frames_sampled,
                 time.perf_counter() - t0)
        return res

    # -- internals

    def _measure(self, edited, source, fps: float, res: PairResult, progress) -> None:
        from fsvideo.faces.stream import FaceAligner
        aligner = FaceAligner(self.detector, fps, output_size=self.size, policy="largest", stabilize=self.stabilize,
                              source=res.source)
        st = _Clip()
        pending: dict[int, np.ndarray] = {}
        it_e, it_s = iter(edited), iter(source)
        while self.max_frames is None or res.frames_sampled < self.max_frames:
            fs, fe = next(it_s, None), next(it_e, None)
            if fs is None or fe is None:
                if fs is not None or fe is not None:
                    short, other = (res.path, res.source) if fe is None else (res.source, res.path)
                    log.warning("%s ends after %d frames, before %s: measured %d frame pairs", short,
                                res.frames_sampled, other, res.frames_sampled)
                break
            pending[fs.index] = fe.image
            res.frames_sampled += 1
            for done in aligner.push(fs.index, fs.image):
                self._frame(done, pending.pop(done.index), st)
            if progress is not None:
                progress(res.clip, res.frames_sampled)
        for done in aligner.flush():
            self._frame(done, pending.pop(done.index), st)
        self._embed(st)
        res.faces_found = aligner.stats.faces
        res.frames_used = len(st.face_indices)
        res.frames = st.rows
        res.metrics = self._summarise(st)

    def _frame(self, done, out_image: np.ndarray, st: _Clip) -> None:
        """One finished frame: background, flicker against the previous frame, crops for identity/jitter."""
        from fsvideo.faces import crop_jitter  # (faces.stabilize here, faces.jitter on newer trees)
        from fsvideo.faces.align import align_quad_fast, quad_size
        src = done.image
        if out_image.shape != src.shape:
            raise InputError(f"frame {done.index} of the edited video is {out_image.shape[1]}x{out_image.shape[0]}, "
                             f"the source's {src.shape[1]}x{src.shape[0]}", hint="pass the source the edit was made from")
        face = done.faces[0] if done.faces else None
        row: dict = {"index": int(done.index), "face": face is not None}
        mask = None
        if face is not None:
            fsize = quad_size(face.aligned.quad)
            row["face_size"] = float(fsize)
            mask = face_region(face.landmarks, src.shape, dilate_px=self.dilate * fsize)
        bg = st.bg.add(src, out_image, mask)
        row["bg_psnr"], row["bg_max_abs"] = bg["psnr"], bg["max_abs"]
        prev = st.prev
        cut = st.cuts.push(src)
        if cut:
            row["cut"] = True
        consecutive = prev is not None and prev["index"] == done.index - 1 and not cut
        if consecutive:
            w = self.warp.pair(prev["src"], src, prev["out"], out_image, mask)
            row.update(warp_face=w["face"], warp_face_source=w["face_source"], warp_bg=w["background"],
                       warp_bg_source=w["background_source"])
        crop = None
        if face is not None:
            a = face.aligned
            crop = (a.image, align_quad_fast(out_image, a.quad, self.size, landmarks=face.landmarks).image,
                    a.landmarks)
            if consecutive and prev["crop"] is not None and prev["track"] == face.track_id:
                (ps, po, plm), (cs, co, _) = prev["crop"], crop
                row["jitter"] = crop_jitter([po, co], [plm, plm])
                row["jitter_source"] = crop_jitter([ps, cs], [plm, plm])
            st.batch.append((row, crop[0], crop[1], crop[2]))
            st.face_indices.append(int(done.index))
            if len(st.batch) >= self.batch_size:
                self._embed(st)
        st.rows.append(row)
        st.prev = {"index": int(done.index), "src": src, "out": out_image, "crop": crop,
                   "track": None if face is None else face.track_id}

    def _embed(self, st: _Clip) -> None:
        if not st.batch:
            return
        lms = np.stack([b[3] for b in st.batch])
        es = self.identity.embed(np.stack([b[1] for b in st.batch]), lms)
        eo = self.identity.embed(np.stack([b[2] for b in st.batch]), lms)
        ss, so = st.acc_src.add(es), st.acc_out.add(eo)
        for (row, *_), a, b in zip(st.batch, ss, so):
            row["sim_source"], row["sim_edited"] = float(a), float(b)
        st.emb_src.append(es)
        st.emb_out.append(eo)
        st.batch = []

    @staticmethod
    def _summarise(st: _Clip) -> dict[str, float | None]:
        def mean(key):
            v = [r[key] for r in st.rows if r.get(key) is not None and math.isfinite(r[key])]
            return float(np.mean(v)) if v else None

        m: dict[str, float | None] = {}
        if st.emb_src:
            es, eo = np.concatenate(st.emb_src), np.concatenate(st.emb_out)
            idx = np.asarray(st.face_indices)
            m["tl_id"] = tl_id(es, eo, adjacent=np.diff(idx) == 1)
            m["tg_id"] = tg_id(es, eo)
        m["ic_source"], m["ic_edited"] = st.acc_src.value, st.acc_out.value
        for k in ("warp_face", "warp_face_source", "warp_bg", "warp_bg_source", "jitter", "jitter_source"):
            m[k] = mean(k)
        m["bg_psnr"], m["bg_max_abs"] = st.bg.psnr, float(st.bg.max_abs)
        return m


__all__ = ["TEMPORAL_METRICS", "TEMPORAL_VERSION", "PairResult", "TemporalEvaluator", "TemporalSettings",
           "pair_sha256", "similarity_matrix", "skipped_pair", "tg_id", "tl_id"]
