"""Face stages of the chains: ``detect``, ``track_align``, ``blend`` and the ``write_aligned`` sink.

===========  =====================================  ==============================================
stage        reads                                  adds
===========  =====================================  ==============================================
detect       ``image``                              ``detections`` (list[Face] with 68 landmarks)
track_align  ``index``, ``image``, ``detections``   ``faces`` (list[TrackedFace]), ``aligned`` (list[AlignedFace])
blend        ``image``, ``faces``, ``generated``    ``output`` (uint8 frame; side by side with --compare)
===========  =====================================  ==============================================

``track_align`` tracks people across frames, selects the ones to edit (``--face``), stabilises
their landmarks and crop quads over a bounded look-ahead window (seconds, not frames) and cuts FFHQ
crops with their exact transforms: it is a look-ahead stage that holds at most ``window`` packets.

Components used: ``detector``, ``fps``, ``resolution``, ``source``, ``parser`` (optional),
``frame_sink`` (see :class:`~fsvideo.pipeline.components.Components`).

Run counts reported: ``track_align``: ``aligned_frames``, ``aligned_faces``,
``aligned_frames_without_face``, ``interpolated_faces``, ``held_faces``, ``stabilizer_delay_frames``;
``blend``: ``faces_edited``, ``frames_without_face``.
"""
from __future__ import annotations

import numpy as np

from fsvideo.faces.blend import MaskSmoother, face_mask, paste_back
from fsvideo.faces.stabilize import parse_stabilize
from fsvideo.faces.stream import FaceAligner
from fsvideo.pipeline.chain import register_stage
from fsvideo.pipeline.components import Components
from fsvideo.pipeline.options import DEFAULTS
from fsvideo.pipeline.stage import FunctionStage, Packet, SinkStage, Stage


class TrackAlignStage(Stage):
    """Wraps a :class:`~fsvideo.faces.stream.FaceAligner` (a look-ahead of ``window`` frames)."""

    name = "track_align"
    needs = ("index", "image", "detections")
    adds = ("faces", "aligned")

    def __init__(self, aligner: FaceAligner):
        self.aligner = aligner
        self.window = aligner.delay + 1
        self._held: dict[int, Packet] = {}

    def setup(self) -> None:
        self.count("stabilizer_delay_frames", self.aligner.delay)

    def _release(self, done) -> list[Packet]:
        out = []
        for ff in done:
            p = self._held.pop(ff.index)
            p["faces"] = ff.faces
            p["aligned"] = [f.aligned for f in ff.faces]
            self.count("aligned_frames")
            self.count("aligned_faces", len(ff.faces))
            self.count("aligned_frames_without_face", not ff.faces)
            self.count("interpolated_faces", sum(f.status == "interpolated" for f in ff.faces))
            self.count("held_faces", sum(f.status == "held" for f in ff.faces))
            out.append(p)
        return out

    def process(self, packets: list[Packet]) -> list[Packet]:
        done = []
        for p in packets:
            self._held[p["index"]] = p
            done += self.aligner.push(p["index"], p["image"], p["detections"])
        return self._release(done)

    def flush(self) -> list[Packet]:
        return self._release(self.aligner.flush())


class BlendStage(Stage):
    """Pastes the generated faces back with feathered, temporally smoothed masks."""

    name = "blend"
    adds = ("output",)

    def __init__(self, fps: float, parser=None, poisson: bool = False, compare: bool = False,
                 mask_tau_s: float = 0.08):
        self.fps, self.parser, self.poisson, self.compare = fps, parser, poisson, compare
        self.mask_tau_s = mask_tau_s
        self.needs = ("image", "faces", "generated") + (("reconstructed",) if compare else ())
        self._smoothers: dict[int, MaskSmoother] = {}

    def _paste(self, frame: np.ndarray, faces, crops: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
        out = frame
        for face, crop, mask in zip(faces, crops, masks):
            out = paste_back(out, crop, face.aligned.matrix, mask, poisson=self.poisson)
        return out

    def process(self, packets: list[Packet]) -> list[Packet]:
        for p in packets:
            faces = p["faces"]
            self.count("faces_edited", len(faces))
            self.count("frames_without_face", not faces)
            seen = set()
            masks = []
            for face, crop in zip(faces, p["generated"]):
                m = face_mask(crop, landmarks=face.aligned.landmarks, parser=self.parser)
                sm = self._smoothers.setdefault(face.track_id, MaskSmoother(self.fps, self.mask_tau_s))
                masks.append(sm(m))
                seen.add(face.track_id)
            for tid in list(self._smoothers):          # a track that left: its next mask starts afresh
                if tid not in seen:
                    del self._smoothers[tid]
            edited = self._paste(p["image"], faces, p["generated"], masks)
            if self.compare:
                recon = self._paste(p["image"], faces, p["reconstructed"], masks)
                edited = np.concatenate([p["image"], recon, edited], axis=1)
            p["output"] = edited
        return packets


@register_stage("detect")
def make_detect(components: Components, *, batch_size: int = DEFAULTS.detect_batch,
                detect_every: float | str = DEFAULTS.detect_every) -> Stage:
    """Faces and 68 landmarks of every frame (``components.detector``): adds ``detections``.

    ``batch_size`` frames go to the detector at once (FAN batches all their faces in one pass).
    ``detect_every`` (seconds, ``"12f"`` frames, 0: every frame): full detection on keyframes and
    shot cuts only, landmarks tracked by optical flow in between
    (:class:`~fsvideo.faces.keyframes.KeyframeDetector`).  Per-frame detection depends on the frame
    alone, so the runner may run it in several workers; tracking needs the frames in order, in one.
    """
    from fsvideo.faces.keyframes import KeyframeDetector, with_keyframes
    det = with_keyframes(components.need("detector", "detect"), detect_every, components.fps)

    def run(ps):
        for p, faces in zip(ps, det.detect_batch([p["image"] for p in ps])):
            p["detections"] = faces
        return ps
    return FunctionStage("detect", run, needs=("image",), adds=("detections",), batch_size=int(batch_size),
                         per_frame=not isinstance(det, KeyframeDetector))


@register_stage("track_align")
def make_track_align(components: Components, *, face: str | int = DEFAULTS.face,
                     stabilize: float | str = DEFAULTS.stabilize, on_missing: str = DEFAULTS.on_missing,
                     method: str = DEFAULTS.align_method) -> Stage:
    """Track, select (``face``), stabilise (``stabilize``: seconds of smoothing, 0 off, or a stabiliser
    name such as ``official``) and align: adds ``faces`` and ``aligned``."""
    stabilizer, sigma_s = parse_stabilize(stabilize)
    aligner = FaceAligner(None, components.fps, output_size=components.need("resolution", "track_align"),
                          policy=face, stabilize=stabilizer, sigma_s=sigma_s, on_missing=on_missing,
                          method=method, source=components.source)
    return TrackAlignStage(aligner)


class WriteAlignedStage(SinkStage):
    """Hands every finished frame (``index``, ``time``, ``faces``) to ``components.frame_sink``."""

    name = "write_aligned"
    needs = ("index", "faces")

    def __init__(self, sink):
        self.sink = sink

    def consume(self, packet: Packet) -> None:
        self.sink(packet)


@register_stage("write_aligned")
def make_write_aligned(components: Components) -> Stage:
    """Sink of ``pipelines/align.yaml``: the caller's ``frame_sink(packet)`` writes the crops."""
    return WriteAlignedStage(components.need("frame_sink", "write_aligned"))


@register_stage("blend")
def make_blend(components: Components, *, poisson: bool = DEFAULTS.blend == "poisson",
               compare: bool = DEFAULTS.compare) -> Stage:
    """Un-crop and blend into the frame: adds ``output`` (with ``compare``: source | reconstruction | edit)."""
    return BlendStage(components.fps, parser=components.parser, poisson=bool(poisson), compare=bool(compare))
