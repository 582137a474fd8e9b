"""Job assembly shared by :func:`~fsvideo.pipeline.edit.edit_video` and
:func:`~fsvideo.pipeline.invert.invert_video`: probe the input, load the model once, build the
:class:`~fsvideo.pipeline.components.Components`, open the writer and run a chain of ``pipelines/``.
"""
from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from fsvideo.config import ModelConfig, load_config, resolve_config_path
from fsvideo.edits.requests import EditRequest
from fsvideo.errors import InputError, OutputError
from fsvideo.models.fse import FeatureStyleModel
from fsvideo.pipeline.budget import core_budget
from fsvideo.pipeline.components import Components
from fsvideo.pipeline.options import RunOptions, stage_options
from fsvideo.pipeline.stage import RunStats
from fsvideo.weights import resolve as resolve_weights

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, "int | None"], None]


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
    encoder: str = ""
    edits: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def default_output(input_path: Path, edits: list[EditRequest], suffix: str | None = None) -> Path:
    """``talk.mp4`` + smile 2 -> ``talk.smile+2.mp4``; several edits are joined with ``.``.

    The output keeps the input's extension when the writer can write it; otherwise (a camera's
    ``.MTS``, raw ``.h264``, ``.mpg``, ``.wmv``, no extension) it is ``.mp4``.
    """
    tag = ".".join(e.label for e in edits) or "inversion"
    return input_path.with_name(f"{input_path.stem}.{tag}{suffix or video_suffix(input_path)}")


def video_suffix(input_path: Path) -> str:
    """The extension of a video made from ``input_path``: its own when the writer can write it, else ``.mp4``."""
    from fsvideo.video.encoders import VIDEO_EXTENSIONS
    return input_path.suffix if input_path.suffix.lower() in VIDEO_EXTENSIONS else ".mp4"


def check_output(src: Path, out: Path, opts: RunOptions) -> None:
    """Before any model loads: the output may be written (``--overwrite``) and its extension names a
    format the writer can write: a video format for a video, an image format for an image (the
    error names the user's path)."""
    from fsvideo.utils import check_output_path
    check_output_path(out, overwrite=opts.overwrite, inputs=(src,))
    if not is_image_name(src):
        from fsvideo.video.encoders import check_video_extension
        check_video_extension(out)
    elif not is_image_name(out):            # an image comes out as an image (ImageWriter)
        what = f"a {out.suffix} file" if out.suffix else "a file without an extension"
        raise OutputError(f"{out}: an image input ({src.name}) is written as an image, not {what}",
                          hint="use .png, .jpg, .webp, .bmp or .tiff for -o")


def is_image_name(p: Path) -> bool:
    from fsvideo.video import IMAGE_EXTENSIONS
    return p.suffix.lower() in IMAGE_EXTENSIONS


def face_parser(cfg: ModelConfig, mask: str, device: torch.device):
    """A ``parser(face) -> labels`` callable when face parsing is asked for and its weights exist."""
    if mask == "hull" or not cfg.face_parser:
        return None
    p = resolve_weights(cfg.face_parser, required=mask == "parsing", what="face parser")  # "parsing" needs it
    if p is None:
        log.info("face parser %s not present: blend masks from the landmark hull", cfg.face_parser)
        return None
    from fsvideo.models.bisenet import parse
    st = Path(p).stat()
    net = _bisenet(str(Path(p).resolve()), st.st_size, st.st_mtime_ns, str(device))
    return lambda face: parse(net, face)


@functools.lru_cache(maxsize=2)
def _bisenet(path: str, size: int, mtime_ns: int, device: str):
    """The face parser loaded once per file version and device: the videos of a batch share it
    (inference only); a file rewritten in place has a new modification time and is loaded again."""
    from fsvideo.models.bisenet import load_bisenet
    return load_bisenet(path, device=torch.device(device))


def model_identity(cfg: ModelConfig, opts: RunOptions) -> dict:
    """Names and sha256 of the generator and encoder a run uses (recorded in / checked against latents;
    known digests are not recomputed: :mod:`fsvideo.weights.digests`)."""
    from fsvideo.weights import known_sha256
    out = {}
    for role, ref in (("generator", opts.generator or cfg.generator), ("encoder", opts.encoder or cfg.encoder)):
        out[role] = str(ref)
        out[f"{role}_sha256"] = known_sha256(resolve_weights(ref))
    return out


@dataclass
class Job:
    """Everything built for one run: the probed input, the config, and the components of its chain."""

    info: object
    cfg: ModelConfig
    device: torch.device
    components: Components


def load_model(cfg: ModelConfig, *, generator=None, encoder=None,
               device: torch.device | str = "cpu") -> FeatureStyleModel:
    """The FeatureStyleModel a :class:`~fsvideo.config.ModelConfig` names (or the overrides), eval mode.

    ``generator`` / ``encoder`` (file paths or weights-registry names, fetched on first use) replace
    the config's; the config's ``resolution`` is checked only against the config's own generator.
    """
    from fsvideo.models.loading import load_feature_style_model
    return load_feature_style_model(resolve_weights(generator or cfg.generator),
                                    resolve_weights(encoder or cfg.encoder), feature_index=cfg.feature_index,
                                    resolution=cfg.resolution if generator is None else None, device=device)


def prepare(src: Path, opts: RunOptions, *, seed: int, need_detector: bool = True, detector=None, model=None,
            reader=None, context_s: tuple[float, float] | None = None) -> Job:
    """Probe the (already checked) input and build the components; bad input fails before models load.

    ``model`` / ``detector``: ready ones (a batch loads them once); ``reader``: a ready frame source
    (a batch prefetches the next video); ``context_s``: seconds read before / after the span.
    """
    from fsvideo.faces.aspect import upright_pixel_aspect
    from fsvideo.faces.detect import make_detector
    from fsvideo.models.execution import ModelExecutor
    from fsvideo.utils import pick_device, pick_dtype
    from fsvideo.video import VideoReader, probe
    from fsvideo.video.reader import check_span
    info = probe(src)                                    # bad input fails here, before models load
    check_span(opts.start, opts.end)                     # (a ready reader, or read_span's context, skip the reader's)
    cfg = load_config(resolve_config_path(opts.config), ModelConfig, section="model")
    device = pick_device(opts.device)
    dtype = pick_dtype(device, opts.precision)
    for name in ("batch_size", "detect_batch"):
        if getattr(opts, name) < (0 if name == "batch_size" else 1):
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag} {getattr(opts, name)} must be at least 1", hint=f"use e.g. {flag} 4")
    if model is None:
        model = load_model(cfg, generator=opts.generator, encoder=opts.encoder, device=device)
    if reader is None:
        reader = VideoReader(src, *read_span(opts.start, opts.end, context_s), info=info)
    batch = opts.batch_size or (4 if device.type == "cuda" else 1)   # auto: see RunOptions.batch_size
    executor = ModelExecutor(model, device, dtype, batch, noise_seed=seed, compile=opts.compile)
    det = None
    if need_detector:
        det = detector if detector is not None else make_detector(opts.detector, device, max_side=640)
    comps = Components(executor=executor, reader=reader,
                       fps=float(info.fps or 25), resolution=executor.crop_size, source=src.name,
                       parser=face_parser(cfg, opts.mask, device), detector=det, edit_step=cfg.edit_step,
                       pixel_aspect=upright_pixel_aspect(info))
    log.info("device %s (%s), generator %d px, batch %d%s", device, dtype, model.resolution, batch,
             ", torch.compile" if opts.compile else "")
    return Job(info, cfg, device, comps)


def read_span(start: float | None, end: float | None,
              context_s: tuple[float, float] | None) -> tuple[float | None, float | None]:
    """The span to decode: the output span ``[start, end)`` grown by ``context_s = (before, after)`` seconds."""
    if not context_s:
        return start, end
    before, after = context_s
    s = max(0.0, (start or 0.0) - before) or None
    return s, (end + after if end is not None else None)


def run_job(job: Job, pipeline: str, out_tmp: Path, opts: RunOptions, progress: ProgressFn | None,
            summary: RunSummary, context_s: tuple[float, float] | None = None) -> RunStats:
    """Open the writer on ``out_tmp`` and stream ``pipelines/<pipeline>.yaml`` through it (the summary
    records which encoder ran; errors name ``summary.output``, not the temporary file)."""
    from fsvideo.pipeline.chain import build_chain
    from fsvideo.pipeline.runner import run_chain
    from fsvideo.video import ImageWriter, VideoWriter
    from fsvideo.video.join import SpanWriter
    info = job.info
    comment = provenance(summary)
    if info.is_image:
        writer = ImageWriter(out_tmp, source=info.path, shown=summary.output, comment=comment)
    else:
        width = info.width * (3 if opts.compare else 1)
        writer = VideoWriter(out_tmp, info, codec=opts.codec, crf=opts.crf, preset=opts.preset,
                             shown=summary.output, comment=comment,
                             audio_from=info.path, start=opts.start, end=opts.end,
                             width=width, height=info.height, keep_rotation=not opts.compare)
    ex = job.components.executor
    budget = core_budget(device_type=job.device.type, threads=opts.threads, workers=opts.workers,
                         network_calls=1 if ex.compiled else opts.network_calls or (1 if ex.large_on_cpu else None))
    summary.encoder = getattr(writer, "encoder", "image")
    if context_s and not info.is_image:       # frames read only as stabiliser context are not written
        writer = SpanWriter(writer, info, opts.start, opts.end)
    with writer, budget.applied():
        stages = build_chain(pipeline, job.components.with_(writer=writer), stage_options(opts))
        queue_bytes = None if opts.queue_mib is None else max(1, int(opts.queue_mib * 2**20))
        stats = run_chain(stages, queue_size=opts.queue_size, queue_bytes=queue_bytes, threads=opts.threads,
                          workers=budget.workers, network_workers=budget.network_workers,
                          progress=progress, total=len(job.components.reader))
    if isinstance(writer, SpanWriter):
        stats.packets = writer.kept           # frames of the span (the mask stage counts faces there only)
    return stats


def provenance(summary: RunSummary) -> str:
    """The comment an output carries: its faces were generated, by what, with which edits.

    Edited faces are synthetic; the tag says so wherever the file goes (``ffprobe``, players' file
    info, an image's EXIF ImageDescription), with the edits that made them.
    """
    from fsvideo import __version__
    edits = [os.path.basename(e) for e in summary.edits]         # a direction file's name, not where it is
    what = "edited: " + ", ".join(edits) if edits else "inverted (reconstructed)"
    return (f"faces {what}; generated by fsvideo {__version__} "
            "(StyleGAN2 with the Feature-Style encoder, Yao et al. 2022)")


def summarise(summary: RunSummary, stats: RunStats, t0: float) -> RunSummary:
    """Fill the summary from the counts the stages reported."""
    counts = stats.counts
    summary.frames = stats.packets
    summary.faces_edited, summary.frames_without_face = counts["faces_edited"], counts["frames_without_face"]
    summary.seconds = round(time.perf_counter() - t0, 3)
    summary.fps = round(summary.frames / summary.seconds, 3) if summary.seconds else 0.0
    return summary
