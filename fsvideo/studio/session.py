"""Studio state: its configuration, the sessions (one per browser tab) and the shared projects.

A session id is random (``secrets``), kept by the page in memory (never a cookie), and names
everything a tab owns: its open video, its uploaded directions and its jobs.  Projects (an opened
video and its inversion) are shared between sessions by content key, so two tabs on the same
video invert it once and never write to each other's state.
"""
from __future__ import annotations

import contextlib
import math
import re
import secrets
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException
from pydantic import BaseModel, Field

from fsvideo.errors import FsvideoError, InputError
from fsvideo.studio.jobs import Job
from fsvideo.studio.project import Project
from fsvideo.studio.prune import check_limits, prune, touch
from fsvideo.studio.render import Renderer
from fsvideo.video.reader import check_span

MAX_SESSIONS, MAX_EDITS, MAX_STRENGTH, SEFA_COUNT = 32, 16, 50.0, 10
MAX_CLIPS = 8          # preview clips kept on disk; older ones are deleted as new ones are made
MAX_JOBS = 4           # exports and clips running at once (each holds its own models); below MAX_CLIPS
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class StudioConfig:
    """What ``fsvideo studio`` was started with (``options``: :class:`fsvideo.RunOptions`)."""

    options: object
    workdir: Path
    video: Path | None = None
    draft_res: int | None = None
    host: str = "127.0.0.1"
    allow_paths: bool | None = None        # None: only when listening on loopback
    max_upload_mb: float = 2048.0
    cache_gb: float = 20.0                 # latents cache + uploads, least recently used removed first (0: no limit)
    cache_days: float = 30.0               # and none unused for longer (0: no limit)

    @property
    def paths_allowed(self) -> bool:
        return self.host in LOOPBACK if self.allow_paths is None else self.allow_paths


@dataclass
class Session:
    id: str
    project: Project | None = None
    uploads: dict[str, Path] = field(default_factory=dict)       # direction id -> file
    jobs: dict[str, Job] = field(default_factory=dict)
    seq: int = 0                                                  # latest render request of this tab


class EditItem(BaseModel):
    attr: str = Field(max_length=120)
    strength: float


class SessionBody(BaseModel):
    resume: str | None = Field(None, max_length=64)     # the tab's session before a reload


class OpenBody(BaseModel):
    path: str = Field(max_length=4096)
    start: float | None = None
    end: float | None = None


class EditsBody(BaseModel):
    edits: list[EditItem] = []
    face: str = "all"


class RenderBody(EditsBody):
    frame: int = 0
    view: str = "composite"
    quality: str = "full"
    mask: bool = False
    seq: int = 0


class ClipBody(EditsBody):
    frame: int = 0
    seconds: float = 2.0


def _offered_sefa(attr: str) -> bool:
    """``sefa:0`` ... ``sefa:{SEFA_COUNT - 1}``, the SeFa directions the page lists (a larger index
    reached the generator's eigen-decomposition and failed there, past its style size, as a 500)."""
    m = re.fullmatch(r"sefa:([0-9]{1,2})", attr)
    return m is not None and int(m.group(1)) < SEFA_COUNT


class Studio:
    """Sessions, opened projects (shared between sessions by content key) and the renderer."""

    def __init__(self, config: StudioConfig, renderer: Renderer | None = None):
        check_limits(config.cache_gb, config.cache_days)
        self.config = config
        self.workdir = Path(config.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.clips_dir, ignore_errors=True)   # previews of an earlier run: nothing refers to them
        self.projects: dict[str, Project] = {}
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self._sha: dict[tuple, str] = {}                   # (path, size, mtime) -> sha256: hash a file once
        self._prune_lock = threading.Lock()
        self._open_lock = threading.Lock()                 # which project each tab has open
        self.jobs_lock = threading.Lock()                 # counting jobs, picking a name, starting one
        self._receiving: set[Path] = set()                 # upload folders being written
        self.prune()                                       # what earlier runs left beyond the limits
        self.renderer = renderer or Renderer(config.options, config.draft_res)

    @property
    def clips_dir(self) -> Path:
        return self.workdir / "clips"

    def new_clip_folder(self) -> Path:
        """A fresh folder for a preview clip; only the :data:`MAX_CLIPS` newest clips stay on disk
        (uploads, exports and the latents cache are kept: they are the user's)."""
        self.clips_dir.mkdir(parents=True, exist_ok=True)
        old = sorted(self.clips_dir.iterdir())               # names start with their creation time
        for f in old[:max(0, len(old) - (MAX_CLIPS - 1))]:
            shutil.rmtree(f, ignore_errors=True)
        folder = self.clips_dir / f"{time.time_ns():020d}-{secrets.token_hex(4)}"
        folder.mkdir()
        return folder

    @contextlib.contextmanager
    def upload_folder(self):
        """A fresh ``uploads/<token>/`` folder, kept from pruning while the upload is written and
        removed when it fails."""
        folder = self.workdir / "uploads" / secrets.token_hex(8)
        folder.mkdir(parents=True)
        self._receiving.add(folder)
        try:
            yield folder
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            self._receiving.discard(folder)

    def entry_folders(self, project: Project) -> set[Path]:
        """The work-folder entries a project reads: its cache folder and, when uploaded, its upload
        (never a folder of the user's: those are not touched)."""
        uploads = (self.workdir / "uploads").resolve()
        upload = project.source.parent
        return {project.dir} | ({upload} if upload.resolve().parent == uploads else set())

    def used(self, project: Project) -> None:
        """Mark the project's entries as used now (the prune removes the least recently used first)."""
        for f in self.entry_folders(project):
            touch(f)

    def in_use(self) -> set[Path]:
        """Entries that must stay: videos inverting, open in a tab, or read by a running job, and the
        directions uploaded by a tab."""
        use: set[Path] = set(self._receiving)
        for p in list(self.projects.values()):
            if p.state in ("new", "inverting"):
                use |= self.entry_folders(p)
        for s in list(self.sessions.values()):
            if s.project is not None:
                use |= self.entry_folders(s.project)
            use |= {f.parent for f in s.uploads.values()}
            for j in list(s.jobs.values()):
                if j.state == "running":
                    use |= set(j.uses)
        return use

    def prune(self) -> list[Path]:
        """Bound the latents cache and the uploads (``cache_gb``, ``cache_days``; :mod:`.prune`)."""
        c = self.config
        with self._prune_lock:
            removed = prune(self.workdir, int(c.cache_gb * 1e9), c.cache_days * 86400, self.in_use())
            gone = {r.resolve() for r in removed}
            for key, p in list(self.projects.items()):     # an evicted inversion is made again when reopened
                if p.dir.resolve() in gone or p.source.parent.resolve() in gone:
                    del self.projects[key]
        return removed

    def job_room(self, s: Session, kind: str) -> None:
        """Make room for a new job of ``kind``: a new clip cancels the tab's running clips (a preview of
        an older cursor), then at most :data:`MAX_JOBS` may run.  Jobs were unbounded: each loads the
        models and renders on its own threads, so a burst of requests could exhaust memory, and a
        ninth clip at once deleted the folder of a running one (:meth:`new_clip_folder`)."""
        if kind == "clip":
            for j in list(s.jobs.values()):
                if j.kind == "clip":
                    j.cancel()
        running = [j for t in list(self.sessions.values()) for j in list(t.jobs.values()) if j.running]
        if len(running) >= MAX_JOBS:
            raise HTTPException(429, f"{len(running)} exports or clips are running; wait for one to finish "
                                     "or cancel one, then try again")

    def new_session(self) -> Session:
        """A new tab's session; beyond :data:`MAX_SESSIONS` the least recently used one is evicted: its
        jobs are cancelled and its video's inversion is stopped unless another tab needs it (it ran on
        with no tab to show it, until some tab opened another video)."""
        s = Session(secrets.token_urlsafe(16))
        with self._open_lock:
            self.sessions[s.id] = s
            while len(self.sessions) > MAX_SESSIONS:
                old = self.sessions.popitem(last=False)[1]
                for j in old.jobs.values():
                    j.cancel()
                self._release(old.project)
        return s

    def session(self, sid: str) -> Session:
        s = self.sessions.get(sid)
        if s is None:
            raise HTTPException(404, "unknown session (the studio was restarted?): reload the page")
        self.sessions.move_to_end(sid)
        return s

    def open(self, s: Session, path: Path, start: float | None = None, end: float | None = None) -> Project:
        from dataclasses import replace

        from fsvideo.utils import check_input_file
        check_span(start, end)
        src = check_input_file(path, "video")
        st = src.stat()
        ident = (str(src.resolve()), st.st_size, st.st_mtime_ns)
        opts = replace(self.config.options, start=start, end=end)
        p = Project(src, opts, self.workdir, sha256=self._sha.get(ident))
        self._sha[ident] = p.sha256
        with self._open_lock:
            known = self.projects.get(p.key)         # two tabs on one video share its inversion, unless its
            if known is not None and known.source_unchanged() and known.state != "failed" and (   # file changed
                    known.state != "ready" or known.source.resolve() == src.resolve()):   # since (a failed one is
                p = known                            # tried again); an inverted copy of another name gets its own
            #                                          project on the cached latents: its name, its path in exports
            self.projects[p.key] = p
            before, s.project = s.project, p
            self._release(before)
        self.used(p)
        p.start_inversion()
        self.prune()
        return p

    def _release(self, p: Project | None) -> None:
        """Stop ``p``'s inversion when no tab has it open any more and no job reads it: opening another
        video left it running in the background, one more inversion sharing the CPU with each open."""
        if p is None or p.state != "inverting":
            return
        for s in list(self.sessions.values()):
            if s.project is p or any(j.state == "running" and p.dir in j.uses for j in list(s.jobs.values())):
                return
        p.abandon()
        if self.projects.get(p.key) is p:                   # opened again later: a fresh inversion
            del self.projects[p.key]

    def edits(self, s: Session, items: list[EditItem]) -> list[tuple[str, str, float]]:
        """Check the page's edits: only names this studio offers; strengths finite and bounded."""
        if len(items) > MAX_EDITS:
            raise InputError(f"{len(items)} edits at once; at most {MAX_EDITS}")
        offered = self.attributes()
        out = []
        for it in items:
            if not math.isfinite(it.strength) or abs(it.strength) > MAX_STRENGTH:
                raise InputError(f"strength {it.strength} of {it.attr} must be a number within ±{MAX_STRENGTH:g}")
            a = it.attr
            if a in s.uploads:
                out.append((a, str(s.uploads[a]), it.strength))
            elif a in offered["released"] or a in offered["fitted"] or _offered_sefa(a):
                out.append((a, a, it.strength))
            else:
                raise InputError(f"unknown attribute {a!r}", hint="pick one from the list or upload a .npy direction")
        return out

    def attributes(self) -> dict:
        from fsvideo.edits.directions import directions_home
        from fsvideo.weights import resolve as resolve_weights
        released, missing = [], []
        for name, ref in sorted(self.renderer.cfg.directions.items()):
            try:
                resolve_weights(ref)
                released.append(name)
            except FsvideoError:
                missing.append(name)
        home = directions_home()
        fitted = sorted(p.stem for p in home.glob("*.npy")) if home.is_dir() else []
        return dict(released=released, missing=missing, fitted=fitted, sefa=SEFA_COUNT)
