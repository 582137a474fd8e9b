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

Where the warps run: on the CPU with cv2 (the reference), unless the networks run on CUDA
(``components.executor.device``): then ``track_align`` cuts its fast crops and ``blend`` pastes the
faces back with the PyTorch twins in :mod:`fsvideo.faces.warp_torch` on that GPU (see
:func:`warp_device`; Poisson blending and the exact FFHQ alignment stay on the CPU).

Run counts reported: ``track_align``: ``aligned_frames``, ``aligned_faces``,
``aligned_frames_without_face``, ``interpolated_faces``, ``held_faces``, ``stabilizer_delay_frames``;
``blend``: ``faces_edited``, ``frames_without_face``.
"""
from __future__ import annotations

import numpy as np
import torch

from fsvideo.faces.align import AlignedFace, quad_matrix, transform_points
from fsvideo.faces.aspect import square_pixels
from fsvideo.faces.blend import MASK_SIDES, MASK_TAU_S, TrackMasks, face_mask
from fsvideo.faces.paste import paste_back
from fsvideo.faces.stabilize import parse_stabilize
from fsvideo.faces.stream import FaceAligner
from fsvideo.pipeline.chain import register_stage
from fsvideo.pipeline.components import Components
from fsvideo.pipeline.options import DEFAULTS
from fsvideo.pipeline.stage import FunctionStage, Packet, SinkStage, Stage


def warp_device(components: Components) -> torch.device | None:
    """The device the align and paste-back warps run on: the networks' when it is a CUDA GPU, else
    None (cv2 on the CPU, the reference path; a CPU run gains nothing from the torch twins)."""
    ex = components.executor
    dev = getattr(ex, "device", None)
    return torch.device(dev) if dev is not None and torch.device(dev).type == "cuda" else None


class DeviceFaceAligner(FaceAligner):
    """A :class:`~fsvideo.faces.stream.FaceAligner` whose fast crops are cut on ``device``
    (:func:`~fsvideo.faces.warp_torch.align_crops_torch`): each frame is uploaded once, for all its faces."""

    def __init__(self, *args, device: torch.device | str, **kwargs):
        super().__init__(*args, **kwargs)
        self.device = torch.device(device)
        self._uploaded: tuple[np.ndarray | None, torch.Tensor | None] = (None, None)

    def _align(self, image: np.ndarray, quad: np.ndarray, landmarks: np.ndarray) -> AlignedFace:
        if self.method != "fast":
            return super()._align(image, quad, landmarks)
        from fsvideo.faces.warp_torch import align_crops_torch, frame_to_tensor
        if self._uploaded[0] is not image:
            self._uploaded = (image, frame_to_tensor(image, self.device))
        m = quad_matrix(quad, self.output_size)
        crop = align_crops_torch(self._uploaded[1], [m], self.output_size)[0].cpu().numpy()
        lm = None if landmarks is None else transform_points(np.linalg.inv(m), landmarks)
        return AlignedFace(crop, np.asarray(quad, np.float64).copy(), m, lm, self.output_size)


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


class MaskStage(Stage):
    """The blend mask of every face (face parsing, else the landmark hull), smoothed over time per
    track: adds ``masks`` (float32 [S, S] per face, over the face's crop).  Runs in order, in one
    thread (the smoothing carries state); the paste-back that uses the masks is the per-frame
    ``blend`` stage after it.

    S is the crop's side in frame pixels rounded up to one of ``sides``
    (:func:`~fsvideo.faces.blend.mask_side`; None: the crop's own side O): the paste-back samples
    the mask once per frame pixel, so a finer mask is work thrown away (the 1024 px crop of the face
    in ``liveportrait-d18.mp4``, 480x480, is 400 frame pixels wide and gets a 448 px mask: 5x fewer
    pixels to fill, feather, smooth and warp).  A track whose side
    changes carries its smoothing over (:class:`~fsvideo.faces.blend.MaskSmoother` resamples).

    ``counted(pts) -> bool`` (the span writer's :meth:`~fsvideo.video.join.SpanWriter.inside` when a
    video is split in time) says which frames the run's counts cover: frames decoded only as the
    stabiliser's context get masks (they smooth the next ones) but are not written or counted.
    """

    name = "mask"
    adds = ("masks",)

    def __init__(self, fps: float, parser=None, mask_tau_s: float = MASK_TAU_S, counted=None,
                 sides: tuple[int, ...] | None = MASK_SIDES):
        self.fps, self.parser, self.mask_tau_s, self.counted = fps, parser, mask_tau_s, counted
        self.needs = ("faces", "generated") + (("pts",) if counted is not None else ())
        self._tracks = TrackMasks(fps, mask_tau_s, sides)

    def process(self, packets: list[Packet]) -> list[Packet]:
        for p in packets:
            faces = p["faces"]
            if self.counted is None or self.counted(p["pts"]):
                self.count("faces_edited", len(faces))
                self.count("frames_without_face", not faces)
            masks = [face_mask(crop, landmarks=face.aligned.landmarks, parser=self.parser,
                               size=self._tracks.side(face.track_id, face.aligned.matrix, crop.shape[0]))
                     for face, crop in zip(faces, p["generated"])]
            p["masks"] = self._tracks([face.track_id for face in faces], masks)
        return packets


class BlendStage(Stage):
    """Pastes the generated faces back into their frames with the ``mask`` stage's masks: adds
    ``output``.  A pure function of each packet, so the runner may run it in several workers."""

    name = "blend"
    adds = ("output",)
    per_frame = True

    def __init__(self, poisson: bool = False, compare: bool = False, device: torch.device | str | None = None):
        self.poisson, self.compare = poisson, compare
        # Poisson blending (cv2.seamlessClone) has no GPU twin: it keeps the CPU path.
        self.device = None if device is None or poisson else torch.device(device)
        self.needs = ("image", "faces", "generated", "masks") + (("reconstructed",) if compare else ())

    def _paste(self, frame: np.ndarray, faces, crops: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
        """The frame with every face pasted back: a new array when there is a face (one copy, however
        many faces), ``frame`` itself when there is none."""
        if not len(faces):
            return frame
        if self.device is not None:
            from fsvideo.faces.warp_torch import paste_back_torch
            return paste_back_torch(frame, crops, [f.aligned.matrix for f in faces], masks, device=self.device)
        out = frame.copy()
        for face, crop, mask in zip(faces, crops, masks):
            paste_back(out, crop, face.aligned.matrix, mask, poisson=self.poisson, inplace=True)
        return out

    def process(self, packets: list[Packet]) -> list[Packet]:
        for p in packets:
            edited = self._paste(p["image"], p["faces"], p["generated"], p["masks"])
            if self.compare:
                recon = self._paste(p["image"], p["faces"], p["reconstructed"], p["masks"])
                edited = np.concatenate([p["image"], recon, edited], axis=1)
            p["output"] = edited
        return packets


@register_stage("detect")
def make_detect(components: Components, *, batch_size: int = DEFAULTS.detect_batch,
                detect_every: float | str = DEFAULTS.detect_every, track: str = DEFAULTS.track) -> Stage:
    """Faces and 68 landmarks of every frame (``components.detector``): adds ``detections``.

    ``batch_size`` frames go to the detector at once (FAN batches all their faces in one pass).
    ``detect_every`` (seconds, ``"12f"`` frames, 0: every frame): full detection on keyframes and
    shot cuts only, faces followed in between by ``track``: ``roi`` (the detector's search in a
    region around each face, :class:`~fsvideo.faces.roi.RoiDetector`) or ``flow`` (optical flow,
    :class:`~fsvideo.faces.keyframes.KeyframeDetector`).  Per-frame detection depends on the frame
    alone, so the runner may run it in several workers; tracking needs the frames in order, in one.
    """
    from fsvideo.faces.keyframes import KeyframeDetector, with_keyframes
    det = with_keyframes(components.need("detector", "detect"), detect_every, components.fps, track)
    per_frame = not isinstance(det, KeyframeDetector)
    det = square_pixels(det, components.pixel_aspect)

    def run(ps):
        for p, faces in zip(ps, det.detect_batch([p["image"] for p in ps])):
            p["detections"] = faces
        return ps
    return FunctionStage("detect", run, needs=("image",), adds=("detections",), batch_size=int(batch_size),
                         per_frame=per_frame)


@register_stage("track_align")
def make_track_align(components: Components, *, face: str | int = DEFAULTS.face,
                     stabilize: float | str = DEFAULTS.stabilize, on_missing: str = DEFAULTS.on_missing,
                     method: str = DEFAULTS.align_method) -> Stage:
    """Track, select (``face``), stabilise (``stabilize``: seconds of smoothing, 0 off, or a stabiliser
    name such as ``official``) and align: adds ``faces`` and ``aligned``."""
    stabilizer, sigma_s = parse_stabilize(stabilize)
    device = warp_device(components)
    cls, extra = (FaceAligner, {}) if device is None else (DeviceFaceAligner, {"device": device})
    aligner = cls(None, components.fps, output_size=components.need("resolution", "track_align"),
                  policy=face, stabilize=stabilizer, sigma_s=sigma_s, on_missing=on_missing,
                  method=method, source=components.source, pixel_aspect=components.pixel_aspect, **extra)
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


@register_stage("mask")
def make_mask(components: Components) -> Stage:
    """Blend masks (``components.parser`` when there is one), smoothed per track: adds ``masks``."""
    return MaskStage(components.fps, parser=components.parser, counted=getattr(components.writer, "inside", None))


@register_stage("blend")
def make_blend(components: Components, *, poisson: bool = DEFAULTS.blend == "poisson",
               compare: bool = DEFAULTS.compare) -> Stage:
    """Un-crop and blend into the frame: adds ``output`` (with ``compare``: source | reconstruction | edit)."""
    return BlendStage(poisson=bool(poisson), compare=bool(compare), device=warp_device(components))
