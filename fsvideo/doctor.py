"""Installation check: device, codecs, detectors, weights, and a few-frame run of the edit pipeline.

The run needs no download: a clip is generated (a drawn face on a moving background, 1 s, with a
tone), a detector that knows where the face was drawn stands in for the real one, and the
Feature-Style model is a tiny seeded random model of the real classes, saved and re-loaded in the
official checkpoint formats.  Every other part is the real pipeline: decoding, alignment, batched
encoding, Eq. 1, generation, blending, re-encoding with the audio.
"""
from __future__ import annotations

import logging
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: Mean 68-point (iBUG) landmarks of an FFHQ-aligned face, as fractions of the crop side (measured
#: with dlib on FFHQ-style aligned photos; used to draw and "detect" the doctor's synthetic face).
MEAN_FACE_68 = np.array([
    0.198, 0.475, 0.202, 0.553, 0.209, 0.63, 0.225, 0.705, 0.256, 0.773, 0.305, 0.831, 0.365, 0.879, 0.43, 0.916, 0.5,
    0.926, 0.568, 0.91, 0.623, 0.866, 0.671, 0.813, 0.71, 0.752, 0.732, 0.686, 0.745, 0.617, 0.754, 0.549, 0.757,
    0.479, 0.268, 0.43, 0.307, 0.397, 0.36, 0.388, 0.412, 0.396, 0.462, 0.416, 0.55, 0.417, 0.597, 0.398, 0.646, 0.39,
    0.693, 0.399, 0.724, 0.431, 0.506, 0.469, 0.507, 0.519, 0.509, 0.569, 0.511, 0.619, 0.447, 0.648, 0.475, 0.657,
    0.506, 0.667, 0.536, 0.658, 0.562, 0.647, 0.328, 0.477, 0.361, 0.459, 0.397, 0.46, 0.429, 0.484, 0.394, 0.49,
    0.358, 0.489, 0.57, 0.484, 0.603, 0.46, 0.639, 0.459, 0.667, 0.477, 0.64, 0.489, 0.604, 0.489, 0.38, 0.728, 0.427,
    0.717, 0.473, 0.709, 0.506, 0.717, 0.537, 0.708, 0.577, 0.715, 0.617, 0.725, 0.579, 0.768, 0.539, 0.788, 0.506,
    0.792, 0.47, 0.789, 0.426, 0.77, 0.397, 0.731, 0.472, 0.731, 0.505, 0.734, 0.537, 0.729, 0.6, 0.729, 0.538, 0.752,
    0.506, 0.757, 0.472, 0.753]).reshape(68, 2)


def synthetic_face_landmarks(i: int, width: int, height: int) -> np.ndarray:
    """Landmarks (68, 2) of the drawn face in frame ``i`` (it drifts and nods slowly)."""
    side = 0.8 * min(width, height)
    cx = width / 2 + 0.05 * width * np.sin(i / 7)
    cy = height / 2 + 0.03 * height * np.cos(i / 9)
    return (MEAN_FACE_68 - 0.5) * side + np.array([cx, cy])


def synthetic_face_frame(i: int, width: int, height: int) -> np.ndarray:
    """uint8 [H, W, 3]: a gradient background and a drawn face at :func:`synthetic_face_landmarks`."""
    import cv2
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([(xx * 255 // max(1, width - 1) + 3 * i) % 256, yy * 255 // max(1, height - 1),
                    np.full_like(xx, 90)], -1).astype(np.uint8)
    lm = synthetic_face_landmarks(i, width, height)
    cv2.fillConvexPoly(img, cv2.convexHull(np.round(lm[:27]).astype(np.int32)), (224, 180, 150), cv2.LINE_AA)
    for a, b in ((36, 42), (42, 48), (48, 60)):
        cv2.fillPoly(img, [np.round(lm[a:b]).astype(np.int32)], (60, 40, 40), cv2.LINE_AA)
    return img


def make_doctor_clip(path: Path, *, n_frames: int = 24, width: int = 320, height: int = 240, fps: int = 24) -> None:
    """Write the synthetic face clip (H.264 + AAC tone) used by :func:`check_pipeline`."""
    import av
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        a = out.add_stream("aac", rate=44100)
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(synthetic_face_frame(i, width, height), format="rgb24")
            frame.pts = i
            out.mux(v.encode(frame))
        out.mux(v.encode())
        sr, n = 44100, int(44100 * n_frames / fps)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / sr)).astype(np.float32)
        for s in range(0, n, 1024):
            chunk = tone[s:s + 1024]
            af = av.AudioFrame.from_ndarray(chunk[None], format="flt", layout="mono")
            af.sample_rate, af.pts = sr, s
            out.mux(a.encode(af))
        out.mux(a.encode())


class _KnownFaceDetector:
    """Stands in for a detector on the synthetic clip: returns where the face was drawn."""

    name = "synthetic"

    def __init__(self, width: int, height: int):
        self.width, self.height, self.i = width, height, 0

    def detect(self, image):
        from fsvideo.faces.detect import Face
        lm = synthetic_face_landmarks(self.i, self.width, self.height)
        self.i += 1
        box = np.array([*lm.min(0), *lm.max(0)])
        return [Face(box=box, score=1.0, landmarks=lm)]

    def detect_batch(self, images):
        return [self.detect(im) for im in images]


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))


def _try(report: DoctorReport, name: str, fn) -> None:
    try:
        ok, detail = fn()
    except Exception as e:  # noqa: BLE001 - the doctor reports every failure as a row
        ok, detail = False, f"{type(e).__name__}: {e}"
    report.add(name, ok, detail)


def check_device() -> tuple[bool, str]:
    import torch
    parts = [f"torch {torch.__version__}", f"python {platform.python_version()}"]
    if torch.cuda.is_available():
        parts.append(", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())))
    else:
        parts.append(f"CPU only ({torch.get_num_threads()} threads)")
    from fsvideo.cores import available_cores, cgroup_cpu_quota
    quota = cgroup_cpu_quota()
    parts.append(f"{available_cores()} cores for the run" + (f" (cgroup CPU quota {quota:g})" if quota else ""))
    from fsvideo.pipeline.memory import huge_pages_status
    parts.append(huge_pages_status())
    return True, "; ".join(parts)


def check_codecs() -> tuple[bool, str]:
    from fsvideo.video import codec_report
    rep = codec_report()
    return bool(rep.get("libx264")), ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in rep.items())


def check_detectors() -> tuple[bool, str]:
    """Every registered detector's availability; ``auto``'s choice is built and run once."""
    from fsvideo.faces.registry import detector_entries, make_detector
    rows = [f"{e.name}: {detail}" for e in detector_entries() for _, detail in [e.check()]]
    det = make_detector("auto")
    det.detect(np.zeros((64, 64, 3), np.uint8))
    return True, f"auto -> {det.name} (ran); " + "; ".join(rows)


def check_weights() -> tuple[bool, str]:
    from fsvideo import weights
    rows = weights.entries_status()
    have = [r.name for r in rows if r.present]
    need = {"stylegan2-ffhq", "fse-ffhq"}
    missing = sorted(need - set(have))
    detail = f"present: {', '.join(have) or 'none'}"
    problem = _unwritable(weights.weights_home())
    if missing and problem:     # a read-only cache is fine once it holds everything; otherwise nothing can be added
        return False, (f"{detail}; the weights folder {weights.weights_home()} cannot be written ({problem}), so "
                       f"{', '.join(missing)} cannot be downloaded or imported: set FSVIDEO_HOME to a writable folder")
    if missing:
        sizes = ", ".join(f"{n} {weights.size_text(weights.entry(n))}" for n in missing)
        if weights.offline():
            detail += f"; offline: for `fsvideo edit` run: fsvideo weights download {' '.join(missing)} " \
                      "direction-smile"
        else:
            detail += f"; `fsvideo edit` fetches {sizes} on first use " \
                      f"(or: fsvideo weights download {' '.join(missing)})"
    return True, detail


def _unwritable(folder: Path) -> str | None:
    """Why files cannot be created in ``folder`` (or in its nearest existing parent, when it does not exist
    yet: the store creates it), or None; only a temporary file is made and removed."""
    p = Path(folder)
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        return f"{p} is a file"
    try:
        with tempfile.TemporaryFile(dir=p):
            return None
    except OSError as e:
        return e.strerror or str(e)


def check_pipeline(workdir: Path | None = None) -> tuple[bool, str]:
    """Edit the synthetic clip with a tiny random model through the real pipeline."""
    from fsvideo import EditRequest, RunOptions, edit_video
    from fsvideo.models.random_init import random_model, save_official_checkpoints
    from fsvideo.video import probe
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        d = Path(d)
        model = random_model(64, seed=0)
        enc, gen = save_official_checkpoints(model, d)
        direction = np.random.default_rng(0).standard_normal(model.generator.n_latent * model.generator.style_dim)
        np.save(d / "direction.npy", direction.astype(np.float32))
        clip = d / "face.mp4"
        make_doctor_clip(clip)
        info = probe(clip)
        t = time.perf_counter()
        opts = RunOptions(generator=str(gen), encoder=str(enc), mask="hull", batch_size=4)
        summary = edit_video(clip, d / "out.mp4", edits=[EditRequest(str(d / "direction.npy"), 1.0)], options=opts,
                             detector=_KnownFaceDetector(info.width, info.height))
        out = probe(d / "out.mp4")
        ok = out.n_frames == info.n_frames and out.has_audio and summary.faces_edited == info.n_frames
        return ok, (f"{summary.frames} frames edited in {time.perf_counter() - t:.1f} s on {summary.device}; "
                    f"output {out.n_frames} frames at {float(out.fps):g} fps, audio {'kept' if out.has_audio else 'LOST'}")


def run_doctor(pipeline: bool = True) -> DoctorReport:
    """Run every check (each failure is a row, never an exception)."""
    report = DoctorReport()
    _try(report, "device", check_device)
    _try(report, "video codecs", check_codecs)
    _try(report, "face detectors", check_detectors)
    _try(report, "weights", check_weights)
    if pipeline:
        _try(report, "edit pipeline (tiny random model)", check_pipeline)
    return report
