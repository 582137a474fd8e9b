"""Face stages of the chains: ``detect``, ``align`` and ``blend``.

=========  =====================================  ==============================================
stage      reads                                  adds
=========  =====================================  ==============================================
detect     ``image``                              ``detections`` (list[Face] with 68 landmarks)
align      ``index``, ``image``, ``detections``   ``faces`` (list[TrackedFace]), ``aligned`` (list[AlignedFace])
blend      ``image``, ``faces``, ``generated``    ``output`` (uint8 frame; side by side with --compare)
=========  =====================================  ==============================================

``align`` tracks people across frames, selects the ones to edit (``--face``), stabilises their
landmarks and crop quads over a bounded look-ahead window (seconds, not frames) and cuts FFHQ
crops with their exact transforms: it is a look-ahead stage that holds at most ``window`` packets.

Components: ``detector`` (a FaceDetector), ``fps`` (float), ``resolution`` (aligned crop size),
``parser`` (optional face-parsing callable for blend masks).
"""
from __future__ import annotations

import numpy as np

from fsvideo.faces.blend import MaskSmoother, face_mask, paste_back
from fsvideo.faces.stabilize import DEFAULT_SMOOTHING_S, parse_stabilize
from fsvideo.faces.stream import FaceAligner
from fsvideo.pipeline.chain import register_stage
from fsvideo.pipeline.runner import FunctionStage, Packet, SinkStage, Stage


class AlignStage(Stage):
    """Wraps a :class:`~fsvideo.faces.stream.FaceAligner` (a look-ahead of ``window`` frames)."""

    name = "align"
    needs = ("index", "image", "detections")
    adds = ("faces", "aligned")

    def __init__(self, aligner: FaceAligner):
        self.aligner = aligner
        self.window = aligner.delay + 1
        self._held: dict[int, Packet] = {}

    def _release(self, done) -> list[Packet]:
        out = []
        for ff in done:
            p = self._held.pop(ff.index)
            p["faces"] = ff.faces
            p["aligned"] = [f.aligned for f in ff.faces]
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
        self.faces = 0                     # faces blended, and frames that had none (run summary)
        self.frames_without_face = 0

    def _paste(self, frame: np.ndarray, faces, crops: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
        out = frame
        for face, crop, mask in zip(faces, crops, masks):
            out = paste_back(out, crop, face.aligned.matrix, mask, poisson=self.poisson)
        return out

    def process(self, packets: list[Packet]) -> list[Packet]:
        for p in packets:
            faces = p["faces"]
            self.faces += len(faces)
            self.frames_without_face += not faces
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
def make_detect(components, options) -> Stage:
    """Faces and 68 landmarks of every frame (``components['detector']``): adds ``detections``."""
    det = components["detector"]

    def run(ps):
        for p, faces in zip(ps, det.detect_batch([p["image"] for p in ps])):
            p["detections"] = faces
        return ps
    return FunctionStage("detect", run, needs=("image",), adds=("detections",),
                         batch_size=int(getattr(options, "detect_batch", 1) or 1))


@register_stage("align")
def make_align(components, options) -> Stage:
    """Track, select (``--face``), stabilise and align: adds ``faces`` and ``aligned``."""
    stabilize, sigma_s = parse_stabilize(getattr(options, "stabilize", DEFAULT_SMOOTHING_S))
    aligner = FaceAligner(None, components["fps"], output_size=components["resolution"],
                          policy=getattr(options, "face", "largest"), stabilize=stabilize, sigma_s=sigma_s,
                          on_missing=getattr(options, "on_missing", "passthrough"),
                          method=getattr(options, "align_method", "fast"),
                          source=str(components.get("source", "the video")))
    return AlignStage(aligner)


class WriteAlignedStage(SinkStage):
    """Hands every finished frame (``index``, ``time``, ``faces``) to ``components['aligned_sink']``."""

    name = "write_aligned"
    needs = ("index", "faces")

    def __init__(self, sink):
        self.sink = sink

    def consume(self, packet: Packet) -> None:
        self.sink(packet)


@register_stage("write_aligned")
def make_write_aligned(components, options) -> Stage:
    """Sink of ``pipelines/align.yaml``: the caller's ``aligned_sink(packet)`` writes the crops."""
    return WriteAlignedStage(components["aligned_sink"])


@register_stage("blend")
def make_blend(components, options) -> Stage:
    """Un-crop and blend into the frame: adds ``output``."""
    return BlendStage(components["fps"], parser=components.get("parser"),
                      poisson=getattr(options, "blend", "alpha") == "poisson",
                      compare=bool(getattr(options, "compare", False)))
