"""One long video on many processes: cut in time, edited (or inverted) span by span, joined without re-encoding.

``torchrun --nproc-per-node N -m fsvideo edit long.mp4 --out-dir edited/ --split-time --attr smile``
(or ``fsvideo invert long.mp4 --out-dir inverted/ --split-time``): every rank lists the frames
(:func:`~fsvideo.video.join.frame_times`, packets only), cuts them into the same N contiguous spans
(:func:`~fsvideo.video.join.split_spans`) and edits its own span ``[a, b)``, decoding
``context_s`` seconds before and after it so that the stabiliser, which looks up to
:attr:`~fsvideo.faces.stabilize.FaceStabilizer.delay` frames ahead and smooths over the frames
behind, and the blend masks' temporal smoothing see what a single run sees; only ``[a, b)`` is
written, by a fresh encoder, so each span file starts with a key frame.  Rank 0 then joins the
span files packet by packet (:func:`~fsvideo.video.join.join_segments`), audio included.  An
inversion's span latents files are joined too (:func:`~fsvideo.latents.join_latents`): frames
renumbered as one run numbers them, each person keeping its track id across the seams.

A re-edit from latents (``... edit long.mp4 --out-dir edited/ --split-time --latents long.latents``,
or ``--latents FOLDER``) neither detects nor stabilises: the latents carry each frame's faces,
tracks and alignment, so no context is decoded after a span.  The blend masks' smoothing still
looks back (:class:`~fsvideo.faces.blend.TrackMasks`, causal), so a span decodes the frames before
it back to where the faces of its first frame appeared
(:func:`~fsvideo.faces.blend.mask_history_start`), at most ``context_s`` seconds and never before
the run's first frame, and reads the latents of exactly the frames it decodes
(:meth:`~fsvideo.latents.LatentsReader.seek`).  The generator noise is the file's seed, one noise
for every frame, as in a single run.  Where that history fits in the context the spans are the
single run's frames bit for bit; where it is cut, an earlier mask weighed ``exp(-context_s / tau)``
(``e**-25`` at the default 2 s, ``tau`` = 0.08 s): the masks differ by float32 rounding (1e-7), an
output pixel by at most one grey level, and only where its value sits on a rounding boundary.
Rank 0 checks the latents file once, before any rank works (made from this video, from the run's
first frame, with a frame for every frame of the run): a mismatch is the input's one-line
``failed`` row, which every rank receives, so none waits for another.

Span files are recorded like outputs (with their span in the settings), so a restarted job skips
finished spans.  ``faces edited`` counts the faces of the spans' own frames (the mask stage counts
only what the span writer keeps), so a joined video reports what a single run reports.
"""
from __future__ import annotations

import bisect
import contextlib
import glob
import logging
import time
from dataclasses import replace

from fsvideo.distributed import ProcessGroup
from fsvideo.errors import FsvideoError, InputError
from fsvideo.pipeline.batch import BatchRow, BatchWorker, Unit
from fsvideo.pipeline.manifest import file_record
from fsvideo.utils import atomic_output

log = logging.getLogger(__name__)


def _plan(worker: BatchWorker, u: Unit, world: int, context_s: float):
    """Identity of the input, its finished row (or None), its spans and, for a re-edit, where each
    span starts decoding in the latents (:func:`_latents_leads`): decided on rank 0."""
    from fsvideo.video import probe
    from fsvideo.video.join import frame_times, span_times, split_spans
    try:
        ident = worker.identity(u)
        row = worker.status(u, ident)
        if row is not None:
            return ident, row, None, None
        info = probe(u.src)
        if info.is_image:
            return ident, None, [(None, None)], None
        o = worker.job.options
        times = frame_times(u.src, info)
        spans = split_spans(times, world, o.start, o.end)
        leads = None
        if u.source_latents is not None:
            leads = _latents_leads(u, ident, span_times(times, o.start, o.end), spans, context_s)
        return ident, None, spans, leads
    except FsvideoError as e:
        return None, BatchRow(str(u.src), status="failed", error=str(e), rank=worker.rank), None, None
    except OSError as e:
        return None, BatchRow(str(u.src), status="failed", error=f"{u.src}: {e}", rank=worker.rank), None, None


def _latents_leads(u: Unit, ident: dict, times: list[float], spans, context_s: float) -> list[tuple[int, float]]:
    """``(frame, time)`` in the latents file where each span starts decoding (module docstring).

    ``times``: the run's frames (seconds), latents frame ``k`` being ``times[k]``.  Raises
    InputError (one line, naming the file and the fix) for latents of another video, of another
    ``--start``, or with fewer frames than the run.
    """
    from fsvideo.faces.blend import mask_history_start
    from fsvideo.latents import LatentsReader
    from fsvideo.video.reader import TIME_EPS
    r = LatentsReader(u.source_latents)
    try:
        r.check_source(u.src, ident["input_sha256"])
        r.check_start(times[0])
        if len(r) < len(times):
            raise InputError(f"{r.path} holds latents of {len(r)} frames, {u.src} has {len(times)} between --start "
                             "and --end", hint=f"use the latents `fsvideo invert {u.src}` made with the same "
                                               "--start/--end")
        tracks = [t for _, _, t in r.index()]
    finally:
        r.close()
    leads = []
    for a, _ in spans:
        s = 0 if a is None else bisect.bisect_left(times, a - TIME_EPS)
        lo = 0 if a is None else bisect.bisect_left(times, a - context_s - TIME_EPS)
        k = mask_history_start(tracks.__getitem__, s, min(lo, s))
        leads.append((k, times[k]))
    return leads


def run_split(worker: BatchWorker, u: Unit, pg: ProcessGroup, context_s: float, on_row=None) -> BatchRow | None:
    """Edit ``u`` split in time across every rank (all ranks call this); rank 0 returns the row."""
    t0 = time.perf_counter()
    env = pg.info
    ident, row, spans, leads = pg.broadcast(_plan(worker, u, env.world, context_s) if env.is_main else None)
    part = None
    if spans is not None and env.rank < len(spans):
        part = _edit_span(worker, u, ident, spans, env.rank, context_s, leads)
    parts = pg.gather(part)
    if not env.is_main:
        return None
    if row is None:
        row = _join(worker, u, ident, spans, [p for p in parts if p is not None])
        row.seconds = round(time.perf_counter() - t0, 3)
    if on_row:
        on_row(row)
    return row


def _part_name(name: str, i: int, n: int) -> str:
    stem, dot, ext = name.rpartition(".")
    return f"{stem}.part{i + 1}of{n}.{ext}" if dot else f"{name}.part{i + 1}of{n}"


def _part(u: Unit, i: int, n: int) -> Unit:
    """The unit of span ``i`` of ``n``: its video (and, for an inversion, latents) file names."""
    return Unit(u.index, u.src, _part_name(u.name, i, n), u.latents and _part_name(u.latents, i, n))


def _edit_span(worker: BatchWorker, u: Unit, ident: dict, spans, i: int, context_s: float,
               leads: list[tuple[int, float]] | None = None) -> BatchRow:
    """This rank's span file, made (or found finished) in the records folder.

    ``leads``: a re-edit's ``(frame, time)`` in the latents where each span starts decoding."""
    a, b = spans[i]
    part = _part(u, i, len(spans))
    folder = worker.manifest.dir / "parts"
    folder.mkdir(exist_ok=True)
    extra = {"span": [a, b], "context_s": context_s, "key": f"-{a}-{b}-{context_s}"}
    rec = worker.manifest.finished(part.name, ident["input_sha256"], worker.unit_key(ident) + extra["key"],
                                   part.files(folder))
    if rec is not None:
        return BatchRow(str(u.src), str(folder / part.name), rec["frames"], rec["faces_edited"], rec["seconds"],
                        "skipped", rank=worker.rank)
    single = a is None and b is None
    worker.components()                                 # the options now name the loaded device
    opts = replace(worker.options, start=a, end=b) if not single else worker.options
    context = None if single else (context_s, context_s)
    with contextlib.ExitStack() as stack:
        latents = None
        if leads is not None and not single:           # the mask smoothing's history only (module docstring)
            from fsvideo.latents import LatentsReader
            k, t = leads[i]
            context = (0.0 if a is None else max(0.0, a - t), 0.0)
            try:                                        # a row, not a raise: the other ranks wait for it
                latents = LatentsReader(u.source_latents)
                stack.callback(latents.close)
                latents.seek(k, t)
            except FsvideoError as e:
                return BatchRow(str(u.src), status="failed", error=str(e), rank=worker.rank)
        return worker.run_one(part, ident, options=opts, context_s=context, dest=folder, extra=extra, latents=latents)


def _join(worker: BatchWorker, u: Unit, ident: dict, spans, parts: list[BatchRow]) -> BatchRow:
    from fsvideo.latents import join_latents
    from fsvideo.video import probe
    from fsvideo.video.join import join_segments
    finals = u.files(worker.out_dir)
    row = BatchRow(str(u.src), str(finals["output"]), frames=sum(p.frames for p in parts),
                   faces_edited=sum(p.faces_edited or 0 for p in parts), rank=0,
                   latents=str(finals["latents"]) if u.latents else None)
    failed = [p for p in parts if p.status == "failed"]
    if failed or len(parts) != len(spans):
        row.status, row.error = "failed", (failed[0].error if failed else "a rank did not report its span")
        return row
    folder = worker.manifest.dir / "parts"
    files = [_part(u, i, len(spans)).files(folder) for i in range(len(spans))]
    try:
        info = probe(u.src)
        with contextlib.ExitStack() as stack:
            tmps = {role: stack.enter_context(atomic_output(f, overwrite=True)) for role, f in finals.items()}
            videos = [f["output"] for f in files]
            if len(videos) == 1:
                tmps["output"].write_bytes(videos[0].read_bytes())
            else:
                join_segments(videos, tmps["output"], info, [a for a, _ in spans],
                              rotation=0 if worker.options.compare else info.rotation, end=spans[-1][1])
            if u.latents:                          # the whole run's span, as a single run records it
                o = worker.options
                join_latents([f["latents"] for f in files], tmps["latents"], {"start": o.start, "end": o.end})
            rec = {**ident, "settings": worker.settings, "settings_key": worker.unit_key(ident),
                   "outputs": file_record(tmps), "frames": row.frames,
                   "faces_edited": row.faces_edited, "seconds": sum(p.seconds for p in parts), "spans": spans}
            worker.manifest.record(u.name, rec)
    except FsvideoError as e:
        row.status, row.error = "failed", str(e)
        return row
    # the spans are in the joined files now; spans of an earlier job with another process count go too
    for name in filter(None, (u.name, u.latents)):
        stem, _, ext = name.rpartition(".")
        earlier = folder.glob(f"{glob.escape(stem)}.part*of*.{glob.escape(ext)}")
        for p in {f[role] for f in files for role in f} | set(earlier):
            p.unlink(missing_ok=True)
            worker.manifest.path(p.name).unlink(missing_ok=True)
    row.status = "done"
    return row


__all__ = ["run_split"]
