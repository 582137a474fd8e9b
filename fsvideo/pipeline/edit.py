"""The public API of the main jobs: :func:`edit_video` and :func:`invert_video`.

Both build a chain of stages from ``pipelines/<name>.yaml``, hand it ready-built components (the
Feature-Style model, the face detector, the face parser) and stream the video through it::

    decode -> detect -> stabilize -> align -> encode -> edit -> generate -> blend -> encode_video

Example::

    from fsvideo import edit_video, EditRequest
    summary = edit_video("talk.mp4", edits=[EditRequest("smile", 2.0)])
    print(summary.output, summary.frames, summary.frames_without_face)
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from fsvideo.config import ModelConfig, load_config, resolve_config_path
from fsvideo.errors import InputError
from fsvideo.pipeline.components import EditRequest, load_model, resolve_edits
from fsvideo.utils import atomic_output, check_input_file, check_output_path, pick_device, pick_dtype
from fsvideo.weights import sha256_file

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    """Everything a run can be told; the CLI fills it from its flags.

    Args:
        config: bundled config name (``ffhq``) or a YAML path (see ``configs/``).
        generator, encoder: weights files or registry names overriding the config.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1`` ...
        precision: ``auto`` (fp16 on CUDA, fp32 on CPU), ``fp32``, ``fp16``, ``bf16``.
        batch_size: faces per network call.
        detector: ``auto``, ``dlib``, ``dlib-cnn``, ``fan``.
        face: ``largest``, a track id, or ``all``.
        on_missing: frames without a face: ``passthrough`` (kept unedited), ``hold`` (last face
            kept), ``error``.
        stabilize: temporal smoothing strength in seconds (0 turns it off).
        blend: ``alpha`` (feathered mask) or ``poisson`` (``cv2.seamlessClone``).
        mask: ``auto`` (face parsing when its weights are present, else landmark hull), ``hull``, ``parsing``.
        start, end: seconds of the input to process (the output covers only that span).
        seed: generator noise seed, fixed for the whole video.
        codec, crf: output video codec and quality.
        compare: write original | reconstruction | edit side by side.
        overwrite: replace an existing output.
    """

    config: str = "ffhq"
    generator: str | None = None
    encoder: str | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 4
    detector: str = "auto"
    face: str = "largest"
    on_missing: str = "passthrough"
    stabilize: float = 0.03
    blend: str = "alpha"
    mask: str = "auto"
    start: float | None = None
    end: float | None = None
    seed: int = 0
    codec: str = "libx264"
    crf: int = 18
    compare: bool = False
    overwrite: bool = False
    queue_size: int = 8
    threads: bool = True


@dataclass
class RunSummary:
    """What a run did (the CLI prints it; ``--json`` dumps it)."""

    input: str
    output: str | None
    latents: str | None = None
    frames: int = 0
    faces_edited: int = 0
    frames_without_face: int = 0
    seconds: float = 0.0
    fps: float = 0.0
    device: str = ""
    detector: str = ""
    edits: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


ProgressFn = Callable[[int, int | None], None]


def default_output(input_path: Path, edits: list[EditRequest], suffix: str | None = None) -> Path:
    """``talk.mp4`` + smile 2 -> ``talk.smile+2.mp4``; several edits are joined with ``.``."""
    tag = ".".join(f"{Path(e.attr).stem.replace(':', '')}{e.strength:+g}" for e in edits) or "inversion"
    return input_path.with_name(f"{input_path.stem}.{tag}{suffix or input_path.suffix}")


def _face_parser(cfg: ModelConfig, mask: str, device: torch.device):
    """A ``parser(face) -> labels`` callable when face parsing is asked for and its weights exist."""
    if mask == "hull" or not cfg.face_parser:
        return None
    from fsvideo import weights
    p = Path(cfg.face_parser) if Path(cfg.face_parser).is_file() else weights.path_of(cfg.face_parser)
    if p is None:
        if mask == "parsing":
            weights.require(cfg.face_parser)          # raises with the download command
        log.info("face parser %s not present: blend masks from the landmark hull", cfg.face_parser)
        return None
    from fsvideo.models.bisenet import load_bisenet, parse
    net = load_bisenet(p, device=device)
    return lambda face: parse(net, face)


@dataclass
class _Job:
    """Everything built for one run (the components handed to the stages)."""

    info: object
    cfg: ModelConfig
    device: torch.device
    components: dict


def _prepare(src: Path, opts: RunOptions, *, need_detector: bool = True, detector=None) -> _Job:
    """Probe the (already checked) input and build the components; bad input fails before models load."""
    from fsvideo.faces.detect import make_detector
    from fsvideo.pipeline.model_stages import ModelRunner, crop_size
    from fsvideo.video.io import VideoReader, probe
    info = probe(src)                                    # bad input fails here, before models load
    cfg = load_config(resolve_config_path(opts.config), ModelConfig, section="model")
    device = pick_device(opts.device)
    dtype = pick_dtype(device, opts.precision)
    if opts.batch_size < 1:
        raise InputError(f"--batch-size {opts.batch_size} must be at least 1", hint="use e.g. --batch-size 4")
    model = load_model(cfg, generator=opts.generator, encoder=opts.encoder, device=device)
    comps = dict(runner=ModelRunner(model, device, dtype, opts.batch_size, noise_seed=opts.seed),
                 reader=VideoReader(src, opts.start, opts.end, info=info), fps=float(info.fps or 25),
                 resolution=crop_size(model), source=src.name,
                 parser=_face_parser(cfg, opts.mask, device))
    if need_detector:
        comps["detector"] = detector if detector is not None else make_detector(opts.detector, device, max_side=640)
    log.info("device %s (%s), generator %d px, batch %d", device, dtype, model.resolution, opts.batch_size)
    return _Job(info, cfg, device, comps)


def _run(job: _Job, pipeline: str, out_tmp: Path, opts: RunOptions, progress: ProgressFn | None):
    from fsvideo.pipeline.chain import build_chain
    from fsvideo.pipeline.runner import run_chain
    from fsvideo.video.io import ImageWriter, VideoWriter
    info = job.info
    if info.is_image:
        writer = ImageWriter(out_tmp)
    else:
        width = info.width * (3 if opts.compare else 1)
        writer = VideoWriter(out_tmp, info, codec=opts.codec, crf=opts.crf,
                             audio_from=info.path if info.has_audio else None, start=opts.start, end=opts.end,
                             width=width, height=info.height, keep_rotation=not opts.compare)
    with writer:
        stages = build_chain(pipeline, dict(job.components, writer=writer), opts)
        blend = next(s for s in stages if s.name == "blend")
        stats = run_chain(stages, queue_size=opts.queue_size, threads=opts.threads, progress=progress,
                          total=len(job.components["reader"]))
    return stats, blend


def _summarise(summary: RunSummary, stats, blend, t0: float) -> RunSummary:
    summary.frames = stats.packets
    summary.faces_edited, summary.frames_without_face = blend.faces, blend.frames_without_face
    summary.seconds = round(time.perf_counter() - t0, 3)
    summary.fps = round(summary.frames / summary.seconds, 3) if summary.seconds else 0.0
    return summary


def edit_video(input_path, output=None, *, edits: list[EditRequest], options: RunOptions | None = None,
               latents=None, progress: ProgressFn | None = None, detector=None) -> RunSummary:
    """Edit the faces of a video (or image) with Eq. 1 and write the result.

    Args:
        input_path: video or image file.
        output: output file (default: ``<input>.<attr><strength>.<ext>``).
        edits: attributes (``smile``, ``sefa:3``, a fitted name or a ``.npy`` path) and strengths.
        options: :class:`RunOptions`.
        latents: a latents file from :func:`invert_video` of the same input: re-edits without
            detecting or encoding again.
        progress: ``progress(frames_done, frames_total_or_None)``.
        detector: a ready face detector (default: built from ``options.detector``).
    """
    opts = options or RunOptions()
    if not edits:
        raise InputError("no edit given", hint="pass --attr NAME --strength S (or --direction FILE.npy)")
    t0 = time.perf_counter()
    src = check_input_file(input_path, "video or image")
    out = Path(output) if output else default_output(src, edits, ".png" if _is_image_name(src) else None)
    check_output_path(out, overwrite=opts.overwrite, inputs=(src,))
    job = _prepare(src, opts, need_detector=latents is None, detector=detector)
    model = job.components["runner"].model
    job.components["edits"] = resolve_edits(edits, job.cfg, model)
    pipeline = "edit"
    if latents is not None:
        from fsvideo.latents import LatentsReader
        reader = LatentsReader(check_input_file(latents, "latents"))
        _check_latents(reader, src, model)
        job.components["latents"] = reader
        pipeline = "edit_latents"
    summary = RunSummary(str(src), str(out), device=str(job.device),
                         detector=getattr(job.components.get("detector"), "name", "latents"),
                         edits=[f"{e.attr}{e.strength:+g}" for e in edits])
    with atomic_output(out, overwrite=opts.overwrite, inputs=(src,)) as tmp:
        stats, blend = _run(job, pipeline, tmp, opts, progress)
    return _summarise(summary, stats, blend, t0)


def _is_image_name(p: Path) -> bool:
    from fsvideo.video.io import IMAGE_EXTENSIONS
    return p.suffix.lower() in IMAGE_EXTENSIONS


def _check_latents(reader, src: Path, model) -> None:
    meta = reader.meta
    if meta.get("source_sha256") and meta["source_sha256"] != sha256_file(src):
        raise InputError(f"{reader.path} was made from another file than {src}",
                         hint=f"run `fsvideo invert {src}` to make its latents")
    if meta.get("resolution") not in (None, model.resolution):
        raise InputError(f"{reader.path} holds latents of a {meta.get('resolution')} px model",
                         hint="use the same model as `fsvideo invert` did")


def invert_video(input_path, output=None, *, latents_out=None, options: RunOptions | None = None,
                 progress: ProgressFn | None = None, detector=None, on_latents=None) -> RunSummary:
    """Reconstruct the faces of a video with G(w, F) and store the per-frame latents.

    Writes the reconstruction video (default ``<input>.inversion.<ext>``) and the latents file
    (default ``<input>.latents``; see :mod:`fsvideo.latents`) that ``edit_video(latents=...)``
    re-edits without encoding again.  ``on_latents(FrameLatents)`` (optional) sees each frame's
    latents as soon as they are computed, before the file is complete (``fsvideo studio``).
    """
    from fsvideo.latents import LatentsWriter
    opts = options or RunOptions()
    t0 = time.perf_counter()
    src = check_input_file(input_path, "video or image")
    out = Path(output) if output else default_output(src, [], ".png" if _is_image_name(src) else None)
    lat = Path(latents_out) if latents_out else src.with_suffix(".latents")
    check_output_path(out, overwrite=opts.overwrite, inputs=(src,))
    check_output_path(lat, overwrite=opts.overwrite, inputs=(src,))
    opts = replace(opts, compare=False)          # the caller's options stay as given
    job = _prepare(src, opts, detector=detector)
    model = job.components["runner"].model
    meta = dict(source=str(src), source_sha256=sha256_file(src), resolution=model.resolution, k=model.k,
                noise_seed=opts.seed, start=opts.start, end=opts.end, config=opts.config,
                generator=str(opts.generator or job.cfg.generator), encoder=str(opts.encoder or job.cfg.encoder))
    summary = RunSummary(str(src), str(out), latents=str(lat), device=str(job.device),
                         detector=job.components["detector"].name)
    with atomic_output(lat, overwrite=opts.overwrite, inputs=(src,)) as lat_tmp, \
            atomic_output(out, overwrite=opts.overwrite, inputs=(src,)) as tmp:
        writer = LatentsWriter(lat_tmp, meta=meta, on_add=on_latents)
        job.components["latents_writer"] = writer
        try:
            stats, blend = _run(job, "invert", tmp, opts, progress)
        except BaseException:
            writer.abort()
            raise
        writer.close()
    return _summarise(summary, stats, blend, t0)
