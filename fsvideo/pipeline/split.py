"""One long video on many processes: cut in time, edited span by span, joined without re-encoding.

``torchrun --nproc-per-node N -m fsvideo edit long.mp4 --out-dir edited/ --split-time --attr smile``:
every rank lists the frames (:func:`~fsvideo.video.join.frame_times`, packets only), cuts them into
the same N contiguous spans (:func:`~fsvideo.video.join.split_spans`) and edits its own span
``[a, b)``, decoding ``context_s`` seconds before and after it so that the stabiliser, which looks
up to :attr:`~fsvideo.faces.stabilize.FaceStabilizer.delay` frames ahead and smooths over the
frames behind, and the blend masks' temporal smoothing see what a single run sees; only ``[a, b)``
is written, by a fresh encoder, so each span file starts with a key frame.  Rank 0 then joins the
span files packet by packet (:func:`~fsvideo.video.join.join_segments`), audio included.

Span files are recorded like outputs (with their span in the settings), so a restarted job skips
finished spans.  ``faces edited`` is not reported for a split video (None): a span's count would
include its context frames.
"""
from __future__ import annotations

import glob
import logging
import time
from dataclasses import replace

from fsvideo.distributed import ProcessGroup
from fsvideo.errors import FsvideoError
from fsvideo.pipeline.batch import BatchRow, BatchWorker, Unit
from fsvideo.pipeline.manifest import file_record, input_identity
from fsvideo.utils import atomic_output

log = logging.getLogger(__name__)


def _plan(worker: BatchWorker, u: Unit, world: int):
    """Identity of the input, its finished row (or None), and its spans: decided on rank 0."""
    from fsvideo.video import probe
    from fsvideo.video.join import frame_times, split_spans
    try:
        ident = input_identity(u.src)
        row = worker.status(u, ident)
        if row is not None:
            return ident, row, None
        info = probe(u.src)
        if info.is_image:
            return ident, None, [(None, None)]
        o = worker.job.options
        return ident, None, split_spans(frame_times(u.src, info), world, o.start, o.end)
    except (FsvideoError, OSError) as e:
        return None, BatchRow(str(u.src), status="failed", error=str(e), rank=worker.rank), None


def run_split(worker: BatchWorker, u: Unit, pg: ProcessGroup, context_s: float, on_row=None) -> BatchRow | None:
    """Edit ``u`` split in time across every rank (all ranks call this); rank 0 returns the row."""
    t0 = time.perf_counter()
    env = pg.info
    ident, row, spans = pg.broadcast(_plan(worker, u, env.world) if env.is_main else None)
    part = None
    if spans is not None and env.rank < len(spans):
        part = _edit_span(worker, u, ident, spans, env.rank, context_s)
    parts = pg.gather(part)
    if not env.is_main:
        return None
    if row is None:
        row = _join(worker, u, ident, spans, [p for p in parts if p is not None])
        row.seconds = round(time.perf_counter() - t0, 3)
    if on_row:
        on_row(row)
    return row


def _part_name(u: Unit, i: int, n: int) -> str:
    stem, dot, ext = u.name.rpartition(".")
    return f"{stem}.part{i + 1}of{n}.{ext}" if dot else f"{u.name}.part{i + 1}of{n}"


def _edit_span(worker: BatchWorker, u: Unit, ident: dict, spans, i: int, context_s: float) -> BatchRow:
    """This rank's span file, made (or found finished) in the records folder."""
    a, b = spans[i]
    name = _part_name(u, i, len(spans))
    folder = worker.manifest.dir / "parts"
    folder.mkdir(exist_ok=True)
    extra = {"span": [a, b], "context_s": context_s, "key": f"-{a}-{b}-{context_s}"}
    part = Unit(u.index, u.src, name)
    rec = worker.manifest.finished(name, ident["input_sha256"], worker.key + extra["key"], part.files(folder))
    if rec is not None:
        return BatchRow(str(u.src), str(folder / name), rec["frames"], rec["faces_edited"], rec["seconds"],
                        "skipped", rank=worker.rank)
    single = a is None and b is None
    worker.components()                                 # the options now name the loaded device
    opts = replace(worker.options, start=a, end=b) if not single else worker.options
    return worker.run_one(u, ident, options=opts, context_s=None if single else (context_s, context_s),
                          name=name, dest=folder, extra=extra)


def _join(worker: BatchWorker, u: Unit, ident: dict, spans, parts: list[BatchRow]) -> BatchRow:
    from fsvideo.video import probe
    from fsvideo.video.join import join_segments
    final = worker.out_dir / u.name
    row = BatchRow(str(u.src), str(final), frames=sum(p.frames for p in parts),
                   faces_edited=sum(p.faces_edited or 0 for p in parts), rank=0)
    failed = [p for p in parts if p.status == "failed"]
    if failed or len(parts) != len(spans):
        row.status, row.error = "failed", (failed[0].error if failed else "a rank did not report its span")
        return row
    files = [worker.manifest.dir / "parts" / _part_name(u, i, len(spans)) for i in range(len(spans))]
    try:
        info = probe(u.src)
        with atomic_output(final, overwrite=True) as tmp:
            if len(files) == 1:
                tmp.write_bytes(files[0].read_bytes())
            else:
                join_segments(files, tmp, info, [a for a, _ in spans],
                              rotation=0 if worker.options.compare else info.rotation)
            rec = {**ident, "settings": worker.settings, "settings_key": worker.key,
                   "outputs": file_record({"output": tmp}), "frames": row.frames,
                   "faces_edited": row.faces_edited, "seconds": sum(p.seconds for p in parts), "spans": spans}
            worker.manifest.record(u.name, rec)
    except FsvideoError as e:
        row.status, row.error = "failed", str(e)
        return row
    # the spans are in the joined file now; spans of an earlier job with another process count go too
    stem, _, ext = u.name.rpartition(".")
    for f in set(files) | set(files[0].parent.glob(f"{glob.escape(stem)}.part*of*.{glob.escape(ext)}")):
        f.unlink(missing_ok=True)
        worker.manifest.path(f.name).unlink(missing_ok=True)
    row.status = "done"
    return row


__all__ = ["run_split"]
