"""The inversion job: :func:`invert_video` streams ``pipelines/invert.yaml``.

It writes the reconstruction G(w, F) of every face and the latents file (:mod:`fsvideo.latents`)
that ``edit_video(latents=...)`` re-edits without detecting or encoding again.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from fsvideo.errors import OutputError
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
from fsvideo.utils import atomic_output, check_input_file, check_output_path


def invert_video(input_path, output=None, *, latents_out=None, options: RunOptions | None = None,
                 progress: ProgressFn | None = None, detector=None, model=None, reader=None,
                 on_latents=None, context_s: tuple[float, float] | None = None) -> RunSummary:
    """Reconstruct the faces of a video with G(w, F) and store the per-frame latents.

    Writes the reconstruction video (default ``<input>.inversion.<ext>``) and the latents file
    (default ``<input>.latents``), which records the source's checksum, the model (names and
    checksums), K and the noise seed, so a re-edit uses the same ones.  ``on_latents(FrameLatents)``
    (optional) sees each frame's latents as soon as they are computed, before the file is complete
    (``fsvideo studio``).  ``context_s``: ``(before, after)`` seconds decoded around
    ``[options.start, options.end)`` and not written, as in
    :func:`~fsvideo.pipeline.edit.edit_video` (a video split in time across ranks; the latents of
    the context frames before the span are kept only for the join: :func:`fsvideo.latents.join_latents`).
    """
    from fsvideo.latents import LatentsWriter
    from fsvideo.weights import sha256_file
    opts = options or RunOptions()
    t0 = time.perf_counter()
    src = check_input_file(input_path, "video or image")
    out = Path(output) if output else default_output(src, [], ".png" if is_image_name(src) else None)
    lat = Path(latents_out) if latents_out else src.with_suffix(".latents")
    check_output(src, out, opts)
    check_output_path(lat, overwrite=opts.overwrite, inputs=(src,), option="--latents-out")
    if lat.resolve() == out.resolve():      # one file for both: the run failed at its end, or --overwrite lost the video
        raise OutputError(f"--latents-out {lat} is also the reconstruction video (-o)",
                          hint="give the latents file its own name (default: INPUT.latents)")
    opts = replace(opts, compare=False)          # the caller's options stay as given
    seed = 0 if opts.seed is None else opts.seed
    job = prepare(src, opts, seed=seed, detector=detector, model=model, reader=reader, context_s=context_s)
    model = job.components.executor.model
    meta = {"source": str(src), "source_sha256": sha256_file(src), "resolution": model.resolution, "k": model.k,
            "noise_seed": seed, "start": opts.start, "end": opts.end, "config": opts.config,
            **model_identity(job.cfg, opts)}
    summary = RunSummary(str(src), str(out), latents=str(lat), device=str(job.device),
                         detector=job.components.detector.name)
    with atomic_output(lat, overwrite=opts.overwrite, inputs=(src,)) as lat_tmp, \
            atomic_output(out, overwrite=opts.overwrite, inputs=(src,)) as tmp:
        writer = LatentsWriter(lat_tmp, meta=meta, on_add=on_latents)
        job.components = job.components.with_(latents_writer=writer)
        try:
            stats = run_job(job, "invert", tmp, opts, progress, summary, context_s)
        except BaseException:
            writer.abort()
            raise
        writer.close()
    return summarise(summary, stats, t0)
