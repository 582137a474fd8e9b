"""Background jobs of the studio: export the whole video, render a short clip around the cursor.

Both call :func:`fsvideo.edit_video` with ``latents=`` (the path of ``fsvideo edit --latents``): no
detection and no encoding again, the source's fps, timestamps and audio kept, written atomically.
A clip, or an export of only some faces, first writes a latents file holding just those frames
and faces (numbered from 0 like the frames of its ``--start``/``--end`` span); the whole video with
every face uses the cached file itself.  Cancel makes the progress callback raise; the runner
stops its threads and the partial output is removed.
"""
from __future__ import annotations

import logging
import secrets
import shlex
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from fsvideo.errors import FsvideoError
from fsvideo.latents import FrameLatents, LatentsWriter
from fsvideo.studio.project import Project

log = logging.getLogger(__name__)


class Cancelled(FsvideoError):
    """The user cancelled the job."""


class Job:
    """A thread running ``work(progress) -> Path`` with progress, cancel and a result file."""

    def __init__(self, kind: str, work: Callable[[Callable[[int, int | None], None]], Path], total: int,
                 command: str = "", uses: tuple[Path, ...] = (), name: str = ""):
        self.id = secrets.token_urlsafe(8)
        self.kind, self.total, self.command, self.name = kind, total, command, name   # name: of the output file
        self.uses = uses                          # work-folder entries it reads: kept while it runs
        self.done, self.state, self.error, self.output = 0, "running", None, None
        self.started = time.time()
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(work,), name=f"fsvideo-studio-{kind}", daemon=True)
        self._thread.start()

    def _progress(self, done: int, total: int | None) -> None:
        if self._cancel.is_set():
            raise Cancelled("cancelled")
        self.done = done

    def _run(self, work) -> None:
        try:
            self.output = work(self._progress)
            self.state = "done"
        except Cancelled:
            self.state = "cancelled"
        except BaseException as e:  # noqa: BLE001 - shown in the page, the server keeps running
            log.warning("%s failed: %s", self.kind, e)
            self.state, self.error = "failed", str(e) if isinstance(e, FsvideoError) else f"{type(e).__name__}: {e}"

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def running(self) -> bool:
        """Running and not asked to stop (a cancelled job ends at its next frame)."""
        return self.state == "running" and not self._cancel.is_set()

    def wait(self, timeout: float | None = None) -> str:
        self._thread.join(timeout)
        return self.state

    def status(self) -> dict:
        return dict(id=self.id, kind=self.kind, state=self.state, done=self.done, total=self.total,
                    error=self.error, command=self.command, name=self.name,
                    seconds=round(time.time() - self.started, 1))


def write_subset(project: Project, out: Path, first: int, stop: int, tracks: set[int] | None,
                 resolution: int) -> None:
    """Latents of frames ``first..stop-1`` (renumbered from 0), only the faces of ``tracks`` (None: all)."""
    from fsvideo.utils import atomic_output
    with atomic_output(out, overwrite=True) as tmp:
        _write_subset(project, tmp, first, stop, tracks, resolution)


def _write_subset(project: Project, out: Path, first: int, stop: int, tracks: set[int] | None,
                  resolution: int) -> None:
    import numpy as np
    meta = project.file_meta() or {"source": str(project.source), "source_sha256": project.sha256,
                                   "resolution": resolution, "noise_seed": project.options.seed or 0}
    meta.update(studio_frames=[first, stop], studio_tracks=None if tracks is None else sorted(tracks))
    if first:                                   # the clip's own frames: its edit starts there, not at the file's
        meta.pop("first_time", None)
    writer = LatentsWriter(out, meta=meta)     # the whole file's header (models, K, seed) when it is complete
    try:
        for i in range(first, stop):
            fl = project.latents(i)
            sel = np.array([tracks is None or int(t) in tracks for t in fl.track], bool)
            writer.add(FrameLatents(i - first, fl.track[sel], fl.w[sel], fl.F[sel], fl.matrix[sel],
                                    fl.landmarks[sel]))
    except BaseException:
        writer.abort()
        raise
    writer.close()


def _uses(project: Project, edits) -> tuple[Path, ...]:
    """The folders a job reads: the project's cache and source folder, and uploaded directions'."""
    return (project.dir, project.source.parent, *(Path(a).parent for _, a, _ in edits if a.endswith(".npy")))


def _requests(edits):
    from fsvideo import EditRequest
    return [EditRequest(attr, float(s)) for _, attr, s in edits]


def export_latents(project: Project, tracks: set[int] | None, out: Path) -> Path:
    """The latents an export of ``out`` reads: the cache (every face) or ``<out>.latents`` (some faces)."""
    return project.latents_path if tracks is None else out.with_suffix(".latents")


def edit_command(project: Project, edits, tracks: set[int] | None, output: Path) -> str:
    """The ``fsvideo edit`` command line that makes the same video as the studio's export of ``output``."""
    o = project.options
    args = ["fsvideo", "edit", str(project.source), "--latents", str(export_latents(project, tracks, output))]
    for _, attr, s in edits:
        args += ["--direction", attr] if attr.endswith(".npy") else ["--attr", attr]
        args += ["--strength", f"{float(s):g}"]
    defaults = type(o)()
    for flag, key in (("--config", "config"), ("--generator", "generator"), ("--encoder", "encoder"),
                      ("--seed", "seed"),
                      ("--start", "start"), ("--end", "end"), ("--mask", "mask"), ("--blend", "blend"),
                      ("--device", "device"), ("--precision", "precision")):
        v = getattr(o, key)
        if v is not None and v != getattr(defaults, key):
            args += [flag, str(v)]
    return shlex.join(args + ["-o", str(output)])


def start_export(project: Project, edits, tracks: set[int] | None, out: Path, resolution: int) -> Job:
    """Edit the whole span from the cached latents into ``out`` (``<out>.latents`` kept when some faces only)."""
    from fsvideo import edit_video
    latents = export_latents(project, tracks, out)

    def work(progress):
        if latents != project.latents_path:
            write_subset(project, latents, 0, project.n_frames, tracks, resolution)
        edit_video(project.source, out, edits=_requests(edits), options=project.options, latents=latents,
                   progress=progress)
        return out
    return Job("export", work, project.n_frames, edit_command(project, edits, tracks, out), _uses(project, edits),
               name=out.name)


def start_clip(project: Project, edits, tracks: set[int] | None, center: int, seconds: float, out: Path,
               resolution: int) -> Job:
    """A clip of about ``seconds`` around frame ``center``, at the source fps with its audio, whose
    frames are the export's frames.

    The span is cut half-way between frames (:meth:`Project.boundary`, by their timestamps: also
    right for a variable frame rate).  The render smooths each face's blend mask over the frames
    before it (:class:`~fsvideo.faces.blend.TrackMasks`), so the clip decodes those frames too, as
    context that is rendered but not written (``edit_video(context_s=...)``): back to where the
    faces of its first frame appeared, or :func:`~fsvideo.faces.blend.mask_history_frames` frames,
    after which an earlier mask weighs less than 2**-10 (under a quarter of a grey level).
    """
    from fsvideo import edit_video
    from fsvideo.faces.blend import mask_history_frames
    half = max(1, int(round(seconds * project.fps / 2)))
    first, stop = max(0, center - half), min(project.n_frames, center + half)
    lead = project.history_start(first, tracks, mask_history_frames(project.fps))
    for i in (lead, stop - 1):                  # NotReady (409) now rather than a failed job
        project.latents(i)
    a, b = project.boundary(first), project.boundary(stop)
    opts = replace(project.options, start=a, end=b)
    context = None if lead == first else ((a or 0.0) - (project.boundary(lead) or 0.0), 0.0)

    def work(progress):
        latents = out.with_suffix(".latents")
        write_subset(project, latents, lead, stop, tracks, resolution)
        try:
            edit_video(project.source, out, edits=_requests(edits), options=opts, latents=latents, progress=progress,
                       context_s=context)
        finally:
            latents.unlink(missing_ok=True)
        return out
    return Job("clip", work, stop - lead, uses=_uses(project, edits), name=out.name)
