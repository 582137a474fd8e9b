"""Many videos in one run, on one process or many (torchrun), restartable: :func:`run_batch`.

``fsvideo edit a.mp4 clips/ 'more/*.mov' --out-dir edited/ --attr smile`` edits every input into
``edited/`` (one output per input, named as a single run names it) with the networks and the face
detector loaded once.  While one video's last frames go through the networks, the next video is
already being decoded (:class:`~fsvideo.video.prefetch.PrefetchReader`, started when the current
decoder runs dry).  A bad input becomes a ``failed`` row and the batch goes on; every finished
output is recorded in ``edited/.fsvideo-batch/`` (:mod:`fsvideo.pipeline.manifest`), so a batch
started again skips what is done and re-does what a changed setting or a changed input affects.
A re-edit (``BatchJob(latents=FOLDER)``) reads each video's ``FOLDER/<stem>.latents`` instead of
detecting and encoding; that file is part of the input's identity (:meth:`BatchWorker.identity`).

Under ``torchrun --nproc-per-node N`` (and ``--nnodes`` for several machines sharing the output
folder) each rank takes every N-th input of the same sorted list (:func:`fsvideo.distributed.shard`),
uses GPU ``LOCAL_RANK``, writes and records its own outputs, and rank 0 gathers the rows into the
closing table (``edited/fsvideo-batch.json``).  With ``split_time`` every video is instead cut in
time across the ranks (:mod:`fsvideo.pipeline.split`), a re-edit from latents too.

Example::

    job = BatchJob("edit", edits=(EditRequest("smile", 2.0),), options=RunOptions(detector="dlib"))
    result = run_batch(["clips/"], "edited/", job)
    print(result.counts)          # {'done': 12, 'skipped': 0, 'failed': 1}
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from fsvideo.distributed import ProcessGroup, device_for, env_info, shard
from fsvideo.errors import FsvideoError, InputError, OutputError
from fsvideo.pipeline.batch_plan import BatchJob, BatchRow, Unit, expand_inputs, plan
from fsvideo.pipeline.edit import edit_video
from fsvideo.pipeline.invert import invert_video
from fsvideo.pipeline.jobs import read_span
from fsvideo.pipeline.manifest import (
    TABLE_NAME,
    Manifest,
    file_record,
    input_identity,
    settings_key,
    settings_of,
    write_json,
)
from fsvideo.pipeline.options import RunOptions
from fsvideo.weights import sha256_file

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    """The merged table (rank 0; the other ranks get their own rows)."""

    rows: list[BatchRow]
    seconds: float
    world: int
    out_dir: str

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.rows) for s in ("done", "skipped", "failed")}

    def to_dict(self) -> dict:
        return {"out_dir": self.out_dir, "processes": self.world, "seconds": self.seconds, "counts": self.counts,
                "frames": sum(r.frames for r in self.rows), "inputs": [asdict(r) for r in self.rows]}


def _rank_device(device: str) -> str:
    """``auto`` / ``cuda`` become ``cuda:LOCAL_RANK`` under torchrun when CUDA is there (one GPU per rank)."""
    import torch
    if device not in ("auto", "cuda") or not torch.cuda.is_available():
        return device
    return str(device_for(torch.device("cuda")))


class BatchWorker:
    """Runs units on this process: networks and detector loaded once, the next video prefetched."""

    def __init__(self, job: BatchJob, out_dir: Path, manifest: Manifest, rank: int = 0, prefetch: int = 16):
        self.job, self.out_dir, self.manifest, self.rank, self.prefetch = job, out_dir, manifest, rank, prefetch
        self.options = replace(job.options, device=_rank_device(job.options.device), overwrite=False)
        self.settings = settings_of(job.kind, job.options, job.edits)
        self.key = settings_key(self.settings)
        self._model = self._detector = None
        self.loads = 0                                 # how many times the networks were loaded

    def components(self):
        """The model and the detector, loaded on first need and kept for every later video.

        Errors here (missing weights, an unknown attribute) concern every input, so they are
        raised, not turned into a failed row.
        """
        if self._model is None:
            from fsvideo.config import ModelConfig, load_config, resolve_config_path
            from fsvideo.faces.detect import make_detector
            from fsvideo.pipeline.jobs import load_model
            from fsvideo.utils import pick_device
            o = self.options
            device = pick_device(o.device)
            cfg = load_config(resolve_config_path(o.config), ModelConfig, section="model")
            self._model = load_model(cfg, generator=o.generator, encoder=o.encoder, device=device)
            if self.job.kind == "edit":                # a bad --attr / --direction stops the batch at once
                from fsvideo.edits.requests import resolve_edits
                resolve_edits(list(self.job.edits), cfg, self._model)
            if self.job.latents is None:               # a re-edit reads the faces from the latents
                self._detector = make_detector(o.detector, device, max_side=640)
            self.options = replace(o, device=str(device))
            self.loads += 1
        return self._model, self._detector

    def identity(self, u: Unit) -> dict:
        """What a record of ``u`` holds of its input: path, size and sha256 of the video and, for a
        re-edit, of its latents file (a missing one is this input's one-line error)."""
        ident = input_identity(u.src)
        if u.source_latents is not None:
            from fsvideo.latents import check_latents_file
            lat = check_latents_file(u.source_latents, u.src)
            ident.update(latents=str(lat.resolve()), latents_sha256=sha256_file(lat))
        return ident

    def unit_key(self, ident: dict) -> str:
        """The settings key of one output: the batch's, and the latents it re-edits (a changed latents
        file is done again)."""
        return self.key + (f"-{ident['latents_sha256'][:16]}" if "latents_sha256" in ident else "")

    def status(self, u: Unit, ident: dict) -> BatchRow | None:
        """The row of a finished input (``skipped``) or of one that cannot be done (``failed``); None: to do.

        Final files that an earlier batch made (and recorded) are replaced when the settings or the
        input changed; files the user made are replaced only with ``--overwrite``.
        """
        finals = u.files(self.out_dir)
        rec = self.manifest.finished(u.name, ident["input_sha256"], self.unit_key(ident), finals)
        row = BatchRow(str(u.src), str(finals["output"]), rank=self.rank,
                       latents=str(finals["latents"]) if u.latents else None)
        if rec is not None:
            row.frames, row.faces_edited, row.seconds = rec["frames"], rec["faces_edited"], rec["seconds"]
            row.status = "skipped"
            return row
        ours = self.manifest.made_by_us(u.name)
        clash = [f for f in finals.values() if f.exists()]
        if clash and not (ours or self.job.options.overwrite):
            row.status = "failed"
            row.error = f"{clash[0]} already exists (not made by an earlier batch); pass --overwrite to replace it"
            return row
        if any(os.path.realpath(f) == os.path.realpath(u.src) for f in finals.values()):
            row.status, row.error = "failed", f"{u.src}: the output would replace the input; choose another --out-dir"
            return row
        return None

    def run_one(self, u: Unit, ident: dict, *, reader=None, options: RunOptions | None = None,
                context_s=None, name: str | None = None, dest: Path | None = None, extra: dict | None = None,
                latents=None) -> BatchRow:
        """Make one output in a work folder, record it, then move it into ``dest`` (default: the output folder).

        ``latents``: what a re-edit reads instead of ``u.source_latents`` (a positioned LatentsReader:
        a span of a video split in time)."""
        name = name or u.name
        dest = dest or self.out_dir
        row = BatchRow(str(u.src), str(dest / name), rank=self.rank)
        t0 = time.perf_counter()
        from fsvideo.video import probe
        try:
            probe(u.src)                               # a bad input fails before any network loads
        except FsvideoError as e:
            row.status, row.error = "failed", str(e)
            return row
        model, detector = self.components()           # errors here concern every input: they stop the batch
        try:
            work = self.manifest.work_dir(name)
            files = Unit(u.index, u.src, name, u.latents).files(work)
            opts = options or self.options
            if self.job.kind == "edit":
                s = edit_video(u.src, files["output"], edits=list(self.job.edits), options=opts, detector=detector,
                               model=model, reader=reader, context_s=context_s,
                               latents=u.source_latents if latents is None else latents)
            else:
                s = invert_video(u.src, files["output"], latents_out=files["latents"], options=opts,
                                 detector=detector, model=model, reader=reader, context_s=context_s)
            row.frames, row.faces_edited = s.frames, s.faces_edited
            row.seconds = round(time.perf_counter() - t0, 3)
            rec = {**ident, "settings": {**self.settings, **(extra or {})},
                   "settings_key": self.unit_key(ident) + (extra or {}).get("key", ""), "outputs": file_record(files),
                   "frames": row.frames, "faces_edited": row.faces_edited, "seconds": row.seconds}
            self.manifest.record(name, rec)            # record first: a stop after it leaves no unrecorded file
            for f in files.values():
                os.replace(f, dest / f.name)
            shutil.rmtree(work, ignore_errors=True)
            row.status = "done"
            row.latents = str(dest / u.latents) if u.latents else None
        except FsvideoError as e:
            row.status, row.error = "failed", str(e)
            log.info("%s failed: %s", u.src, e)
        except Exception as e:  # noqa: BLE001 - one broken video must not stop the other 199
            row.status, row.error = "failed", f"internal error: {type(e).__name__}: {e}"
            log.exception("%s failed", u.src)
        if row.status == "failed":
            shutil.rmtree(self.manifest.work / name, ignore_errors=True)
        row.seconds = round(time.perf_counter() - t0, 3)
        return row

    def run_units(self, units: Sequence[Unit], on_row: Callable[[BatchRow], None] | None = None) -> list[BatchRow]:
        """Process ``units`` in order, skipping finished ones, decoding each next video ahead."""
        rows, todo = [], []
        for u in units:
            try:
                ident = self.identity(u)
                row = self.status(u, ident)
            except FsvideoError as e:
                ident, row = None, BatchRow(str(u.src), status="failed", error=str(e), rank=self.rank)
            except OSError as e:
                ident, row = None, BatchRow(str(u.src), status="failed", error=f"{u.src}: {e}", rank=self.rank)
            if row is None:
                todo.append((u, ident))
            else:
                rows.append((u.index, row))
                if on_row:
                    on_row(row)
        readers = [_LazyPrefetch(u.src, self.options, self.prefetch) for u, _ in todo]
        for i, ((u, ident), slot) in enumerate(zip(todo, readers)):
            nxt = readers[i + 1].start if i + 1 < len(readers) else None
            row = self.run_one(u, ident, reader=slot.take(on_exhausted=nxt))
            slot.close()
            rows.append((u.index, row))
            if on_row:
                on_row(row)
        return [r for _, r in sorted(rows, key=lambda t: t[0])]


class _LazyPrefetch:
    """The PrefetchReader of one pending input, made (probe + open) only when it is started."""

    def __init__(self, src: Path, options: RunOptions, depth: int):
        self.src, self.options, self.depth = src, options, depth
        self.reader = None
        self.failed = False

    def _make(self):
        if self.reader is None and not self.failed and self.depth > 0:
            try:
                from fsvideo.video import VideoReader
                from fsvideo.video.prefetch import PrefetchReader
                self.reader = PrefetchReader(VideoReader(self.src, *read_span(self.options.start, self.options.end,
                                                                              None)), self.depth)
            except FsvideoError:
                self.failed = True             # the run reports it, with its own reader
        return self.reader

    def start(self) -> None:
        r = self._make()
        if r is not None:
            r.start()

    def take(self, on_exhausted=None):
        r = self._make()
        if r is not None:
            r.on_exhausted = on_exhausted
        return r

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


def run_batch(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, job: BatchJob, *,
              split_time: bool = False, context_s: float = 2.0, prefetch: int = 16,
              on_row: Callable[[BatchRow], None] | None = None) -> BatchResult:
    """Run ``job`` on every input into ``out_dir`` (see the module docstring).

    Args:
        inputs: files, folders (their video and image files) and glob patterns.
        out_dir: output folder (created); holds the outputs, the records and the table.
        job: what to do.
        split_time: cut each video in time across the torchrun ranks instead of sharding the inputs.
        context_s: with ``split_time``, seconds each rank reads beyond its span (stabiliser context;
            a re-edit from latents reads at most this much before its span, for the blend masks).
        prefetch: frames of the next video decoded ahead (0: none).
        on_row: called with each input's row as soon as this rank has it.

    Returns the merged :class:`BatchResult` on rank 0; other ranks get their own rows.
    """
    t0 = time.perf_counter()
    env = env_info()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out-dir {out} is a file", hint="give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create --out-dir {out} ({e.strerror or e})", hint="choose another --out-dir") from e
    manifest = Manifest(out)
    paths, bad = expand_inputs(inputs)
    # outputs of an earlier batch into the input folder itself are not inputs
    paths = [p for p in paths if not (p.parent.resolve() == out.resolve() and manifest.made_by_us(p.name))]
    if not paths and not bad:
        raise InputError("no input given", hint="pass video or image files, folders or glob patterns")
    units = plan(paths, job)
    try:
        manifest.ensure()
    except OSError as e:    # a file in the way, a read-only folder
        raise OutputError(f"cannot write the batch's records in {manifest.dir} ({e.strerror or e})",
                          hint="make it a writable folder, or choose another --out-dir") from e
    worker = BatchWorker(job, out, manifest, rank=env.rank, prefetch=prefetch)
    with ProcessGroup(backend="gloo") as pg:        # results are small Python objects: gloo suffices
        if split_time:
            from fsvideo.pipeline.split import run_split
            rows = [r for u in units if (r := run_split(worker, u, pg, context_s, on_row)) is not None]
        else:
            rows = worker.run_units(shard(units, env), on_row)
        parts = pg.gather(rows)
    if parts is None:
        return BatchResult(rows, round(time.perf_counter() - t0, 3), env.world, str(out))
    by_input = {r.input: r for part in parts for r in part}
    merged = [by_input[str(u.src)] for u in units if str(u.src) in by_input] + bad
    result = BatchResult(merged, round(time.perf_counter() - t0, 3), env.world, str(out))
    write_json(out / TABLE_NAME, result.to_dict())
    return result


__all__ = ["BatchJob", "BatchResult", "BatchRow", "BatchWorker", "Unit", "expand_inputs", "plan", "run_batch"]
