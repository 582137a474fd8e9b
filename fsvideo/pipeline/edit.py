"""The edit job: :func:`edit_video` streams ``pipelines/edit.yaml`` (or ``edit_latents.yaml``).

::

    decode -> detect -> track_align -> encode -> edit (Eq. 1) -> generate -> blend -> encode_video

Example::

    from fsvideo import edit_video, EditRequest
    summary = edit_video("talk.mp4", edits=[EditRequest("smile", 2.0)])
    print(summary.output, summary.frames, summary.frames_without_face)
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from fsvideo.edits.requests import EditRequest, resolve_edits
from fsvideo.errors import InputError
from fsvideo.pipeline.jobs import (
    ProgressFn,
    RunSummary,
    check_output,
    default_output,
    is_image_name,
    model_identity,
    prepare,
    run_job,
    summarise,
)
from fsvideo.pipeline.options import RunOptions
from fsvideo.utils import atomic_output, check_input_file

log = logging.getLogger(__name__)


def edit_video(input_path, output=None, *, edits: list[EditRequest], options: RunOptions | None = None,
               latents=None, progress: ProgressFn | None = None, detector=None, model=None, reader=None,
               context_s: tuple[float, float] | None = None) -> RunSummary:
    """Edit the faces of a video (or image) with Eq. 1 and write the result.

    Args:
        input_path: video or image file.
        output: output file (default: ``<input>.<attr><strength>.<ext>``).
        edits: attributes (``smile``, ``sefa:3``, a fitted name or a ``.npy`` path) and strengths.
        options: :class:`~fsvideo.pipeline.options.RunOptions`.
        latents: a latents file from :func:`~fsvideo.pipeline.invert.invert_video` of the same
            input, or a folder holding ``<input stem>.latents``: re-edits without detecting or
            encoding again, with the noise seed the file records (unless ``options.seed`` is given)
            and only with the model and K it records.  Or a ready
            :class:`~fsvideo.latents.LatentsReader`, e.g. positioned on the first frame decoded
            (:meth:`~fsvideo.latents.LatentsReader.seek`: a span of a video split in time).
        progress: ``progress(frames_done, frames_total_or_None)``.
        detector: a ready face detector (default: built from ``options.detector``).
        model: a ready FeatureStyleModel on the run's device (default: loaded from ``options``).
        reader: a ready frame source of the input's span (default: a VideoReader).
        context_s: ``(before, after)`` seconds decoded around ``[options.start, options.end)`` so
            that the stabiliser's look-behind and look-ahead see the same frames as in a run over
            the whole video; only the span is written (how a video is split across ranks).
    """
    opts = options or RunOptions()
    if not edits:
        raise InputError("no edit given", hint="pass --attr NAME --strength S (or --direction FILE.npy)")
    t0 = time.perf_counter()
    src = check_input_file(input_path, "video or image")
    out = Path(output) if output else default_output(src, edits, ".png" if is_image_name(src) else None)
    check_output(src, out, opts)
    latents_reader = None
    seed = 0 if opts.seed is None else opts.seed
    if latents is not None:
        from fsvideo.latents import LatentsReader, check_latents_file, latents_for
        if isinstance(latents, LatentsReader):
            latents_reader = latents
        else:
            path = latents_for(src, latents)
            if path != Path(latents):                    # a folder: this input's file in it
                check_latents_file(path, src)
            latents_reader = LatentsReader(check_input_file(path, "latents"))
        if opts.seed is None and latents_reader.noise_seed is not None:
            seed = latents_reader.noise_seed
        elif opts.seed is not None and latents_reader.noise_seed not in (None, opts.seed):
            log.info("re-editing with noise seed %d (the latents were made with %d)", opts.seed,
                     latents_reader.noise_seed)
    job = prepare(src, opts, seed=seed, need_detector=latents_reader is None, detector=detector, model=model,
                  reader=reader, context_s=context_s)
    model = job.components.executor.model
    comps = job.components.with_(edits=tuple(resolve_edits(edits, job.cfg, model)))
    pipeline = "edit"
    if latents_reader is not None:
        from fsvideo.weights import sha256_file
        latents_reader.check(source=src, source_sha256=sha256_file(src), resolution=model.resolution,
                             k=model.k, models=model_identity(job.cfg, opts))
        comps = comps.with_(latents=latents_reader)
        pipeline = "edit_latents"
    job.components = comps
    summary = RunSummary(str(src), str(out), device=str(job.device),
                         detector=comps.detector.name if comps.detector is not None else "latents",
                         edits=[f"{e.attr}{e.strength:+g}" for e in edits])
    with atomic_output(out, overwrite=opts.overwrite, inputs=(src,)) as tmp:
        stats = run_job(job, pipeline, tmp, opts, progress, summary, context_s)
    return summarise(summary, stats, t0)
