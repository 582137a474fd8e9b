"""The studio's HTTP API (FastAPI) and its static page.

Endpoints (``{sid}``: a session id from ``POST /api/session``, one per browser tab, kept in the
page's memory and never in a cookie, so two tabs never share or corrupt each other's state and a
foreign site cannot act for the user)::

    GET  /                              the page (static/index.html, studio.js, controls.js, resume.js, studio.css)
    POST /api/session                   new session: attributes, draft size, limits ({resume: sid}: the
                                        tab's own session again after a reload, when the server still has it)
    POST /api/s/{sid}/open              {path, start, end}: open a video by path (loopback only)
    POST /api/s/{sid}/upload            raw body + X-Filename (percent-encoded): upload a video (size, type, decodable)
    POST /api/s/{sid}/direction         raw body + X-Filename (percent-encoded): upload a direction .npy
    GET  /api/s/{sid}/state             inversion progress, timeline, jobs (state, frames done, output name)
    POST /api/s/{sid}/render            {frame, edits, face, view, quality, mask, seq} -> JPEG
                                        (headers: X-Quality, X-Time of the frame, X-Mask smoothed|frame)
    POST /api/s/{sid}/command           {edits, face} -> the equivalent `fsvideo edit` command
    POST /api/s/{sid}/export            {edits, face} -> job (whole video from the cached latents)
    POST /api/s/{sid}/clip              {frame, edits, face, seconds} -> job (short clip with audio)
    POST /api/s/{sid}/cancel/{job}      cancel a job
    GET  /api/s/{sid}/file/{job}        the finished output of a job of this session

No request names a file on the server except ``open`` (disabled unless the server listens on the
loopback interface, or ``allow_paths``): files are served only as jobs of the asking session, by id.
A bad request is a JSON ``{"error": ...}`` with a 4xx status; the server keeps running.
"""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from fsvideo.errors import FsvideoError, InputError
from fsvideo.faces.aspect import to_square_pixels, upright_pixel_aspect
from fsvideo.studio.guard import BodyLimit, LocalHost, SameOrigin, validation_message
from fsvideo.studio.jobs import Job, edit_command, start_clip, start_export
from fsvideo.studio.project import NotReady, Project
from fsvideo.studio.render import VIEWS, Renderer, jpeg_bytes
from fsvideo.studio.session import (LOOPBACK, MAX_CLIPS, ClipBody, EditsBody, OpenBody, RenderBody, Session, SessionBody,
                                    Studio, StudioConfig)

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
VIDEO_TYPES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
_SAFE = re.compile(r"[^\w.-]+")            # letters and digits of any script stay ('视频.mp4' became 'mp4')


def _tracks(face: str) -> set[int] | None:
    if face == "all":
        return None
    if not re.fullmatch(r"[0-9]{1,9}", face):      # not str.isdigit: '²' and 5000 digits are digits to it
        raise InputError(f"face must be 'all' or a track id, got {face[:20]!r}", hint="pick a face in the list")
    return {int(face)}


def _project(s: Session) -> Project:
    if s.project is None:
        raise InputError("no video is open", hint="open a video by path or upload one")
    return s.project


def _safe_name(name: str, default: str) -> str:
    import unicodedata                         # NFC: a macOS name's 'e' + combining accent is one 'é'
    base = _SAFE.sub("_", Path(unicodedata.normalize("NFC", name or default)).name).strip("._") or default
    return base[-100:]


def _upload_name(request: Request, default: str) -> str:
    """The uploaded file's name: ``X-Filename``, percent-encoded by the page (a header holds only
    Latin-1, so the browser refused to send '视频.mp4' and the page said the server did not answer)."""
    from urllib.parse import unquote
    return _safe_name(unquote(request.headers.get("x-filename", "")), default)


async def _receive(request: Request, dest: Path, limit_bytes: int) -> None:
    """Stream the request body into ``dest``, stopping at ``limit_bytes``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit_bytes:
        raise InputError(f"upload is {int(declared) / 2**20:.0f} MB; the limit is {limit_bytes / 2**20:.0f} MB",
                         hint="open the file by path, or start the studio with a larger --max-upload-mb")
    import shutil
    free = shutil.disk_usage(dest.parent).free
    if declared and declared.isdigit() and int(declared) > free:       # it would fill the disk, then fail
        raise HTTPException(507, f"upload is {int(declared) / 2**20:.0f} MB and the studio's work folder "
                                 f"{dest.parent.parent.parent} has {free / 2**20:.1f} MB free; free some space, "
                                 "open the file by path, or start the studio with another --workdir")
    n = 0
    try:
        with open(dest, "wb") as fh:                       # noqa: ASYNC230 - local disk, small chunks
            async for chunk in request.stream():
                n += len(chunk)
                if n > limit_bytes:
                    raise InputError(f"upload is larger than the limit of {limit_bytes / 2**20:.0f} MB",
                                     hint="open the file by path, or start the studio with a larger --max-upload-mb")
                fh.write(chunk)
    except OSError as e:                                     # the disk filled up (ENOSPC), or a quota
        dest.unlink(missing_ok=True)
        raise HTTPException(507, f"the upload cannot be written to {dest.parent.parent.parent} ({e.strerror}); "
                                 "free some space, open the file by path, or use another --workdir") from e
    except BaseException:                                    # too large, or the browser went away
        dest.unlink(missing_ok=True)
        raise
    if n == 0:
        dest.unlink(missing_ok=True)
        raise InputError("the upload is empty", hint="choose a file")


def create_app(config: StudioConfig, renderer: Renderer | None = None) -> FastAPI:
    """The studio app; ``renderer`` can be handed in (tests share one)."""
    studio = Studio(config, renderer)
    app = FastAPI(title="fsvideo studio", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.studio = studio
    app.add_middleware(BodyLimit)       # JSON bodies over 1 MiB: 413 unread (the uploads have their own limits)
    app.add_middleware(SameOrigin)      # a page of another site cannot act through the user's browser
    if config.host in LOOPBACK:         # DNS rebinding: only answer requests addressed to this machine
        app.add_middleware(LocalHost)

    @app.exception_handler(FsvideoError)
    async def _fsvideo_error(request, e: FsvideoError):
        return JSONResponse({"error": str(e)}, status_code=409 if isinstance(e, NotReady) else 400)

    @app.exception_handler(StarletteHTTPException)      # also the router's 404 and 405, not only ours
    async def _http_error(request, e: StarletteHTTPException):
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code)

    @app.exception_handler(RequestValidationError)
    async def _bad_body(request, e: RequestValidationError):
        return JSONResponse({"error": validation_message(e.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def _internal(request, e: Exception):
        log.exception("studio request %s failed", request.url.path)
        return JSONResponse({"error": f"internal error: {type(e).__name__}: {e}"}, status_code=500)

    @app.get("/")
    def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.post("/api/session")
    def new_session(body: SessionBody | None = None):
        s = studio.sessions.get(body.resume) if body is not None and body.resume else None
        if s is not None:                           # the same tab reloaded: its video, uploads and jobs
            studio.session(s.id)
            project = s.project
        else:
            s, project = studio.new_session(), None
            if config.video is not None:
                project = studio.open(s, config.video, config.options.start, config.options.end)
        r = studio.renderer
        return dict(sid=s.id, attributes=studio.attributes(), draft_res=r.draft_res, size=r.size,
                    views=list(VIEWS), allow_paths=config.paths_allowed, max_upload_mb=config.max_upload_mb,
                    video=None if project is None else project.source.name,
                    resumed=body is not None and body.resume == s.id)

    @app.post("/api/s/{sid}/open")
    def open_path(sid: str, body: OpenBody):
        s = studio.session(sid)
        if not config.paths_allowed:
            raise InputError("opening files by path is off on this server (it listens beyond this machine)",
                             hint="upload the video instead, or restart with --allow-paths")
        o = config.options
        try:
            path = Path(body.path).expanduser()
        except RuntimeError as e:                  # ~user of no such user, or no home folder
            raise InputError(f"{body.path[:200]}: {e}", hint="give the video's full path") from e
        p = studio.open(s, path, o.start if body.start is None else body.start, o.end if body.end is None else body.end)
        return dict(video=p.source.name)

    @app.post("/api/s/{sid}/upload")
    async def upload_video(sid: str, request: Request):
        s = studio.session(sid)
        name = _upload_name(request, "upload.mp4")
        from fsvideo.video import IMAGE_EXTENSIONS
        if Path(name).suffix.lower() not in VIDEO_TYPES + tuple(IMAGE_EXTENSIONS):
            raise InputError(f"{name} is not a video or image file",
                             hint=f"upload one of {', '.join(VIDEO_TYPES + tuple(sorted(IMAGE_EXTENSIONS)))}")
        with studio.upload_folder() as folder:    # removed again when the upload fails
            dest = folder / name
            await _receive(request, dest, int(config.max_upload_mb * 2**20))
            try:
                p = await run_in_threadpool(studio.open, s, dest, config.options.start, config.options.end)
            except FsvideoError as e:             # undecodable: say so with the uploaded name, drop it (the
                why = e.message.replace(str(dest), name)    # server's own folder is no business of the page's)
                raise InputError(f"{name} cannot be opened: {why}", hint=e.hint) from e
        return dict(video=p.source.name)

    @app.post("/api/s/{sid}/direction")
    async def upload_direction(sid: str, request: Request):
        s = studio.session(sid)
        name = _upload_name(request, "direction.npy")
        if not name.endswith(".npy"):
            raise InputError(f"{name} is not a .npy file", hint="upload a direction saved with numpy.save")
        with studio.upload_folder() as folder:
            dest = folder / name
            await _receive(request, dest, 64 * 2**20)
            await run_in_threadpool(studio.renderer.check_direction, dest)
            key = f"upload:{len(s.uploads) + 1}:{name}"
            s.uploads[key] = dest
        await run_in_threadpool(studio.prune)
        return dict(attr=key, name=name)

    @app.get("/api/s/{sid}/state")
    def state(sid: str):
        s = studio.session(sid)
        p = s.project
        proj = None if p is None else dict(
            video=p.source.name, width=p.info.width, height=p.info.height, fps=p.fps, start=p.start,
            status=p.status(), timeline=p.timeline(), is_image=p.info.is_image)
        return dict(project=proj, jobs=[j.status() for j in s.jobs.values()])

    @app.post("/api/s/{sid}/render")
    def render(sid: str, body: RenderBody):
        s = studio.session(sid)
        p = _project(s)
        if body.view not in VIEWS or body.quality not in ("draft", "full"):
            raise InputError(f"view must be one of {', '.join(VIEWS)} and quality draft or full")
        edits, tracks = studio.edits(s, body.edits), _tracks(body.face)
        s.seq = max(s.seq, body.seq)
        r = studio.renderer
        with r.lock:
            if body.seq < s.seq:                   # a newer change of this tab is waiting: skip this one
                return Response(status_code=204)
            t0 = time.perf_counter()
            out = r.render(p, body.frame, edits, tracks=tracks, view=body.view, draft=body.quality == "draft",
                           mask=body.mask)
            ms = (time.perf_counter() - t0) * 1000
        image = out.image
        if body.view in ("original", "composite"):     # a whole frame: shown on square pixels, as players do
            image = to_square_pixels(image, upright_pixel_aspect(p.info))
        return Response(jpeg_bytes(image), media_type="image/jpeg", headers={
            "X-Quality": out.quality, "X-Size": str(out.size), "X-Faces": str(out.faces),
            "X-Render-Ms": f"{ms:.0f}", "X-Note": out.note, "X-Mask": out.mask,
            "X-Frame": str(body.frame),
            "X-Time": f"{p.time(body.frame):.6f}", "Cache-Control": "no-store"})

    @app.post("/api/s/{sid}/command")
    def command(sid: str, body: EditsBody):
        s = studio.session(sid)
        p = _project(s)
        return dict(command=edit_command(p, studio.edits(s, body.edits), _tracks(body.face),
                                         _export_path(studio, p, body)))

    @app.post("/api/s/{sid}/export")
    def export(sid: str, body: EditsBody):
        s = studio.session(sid)
        p = _project(s)
        edits = studio.edits(s, body.edits)
        if not edits:
            raise InputError("no edit to export", hint="add an edit and set its strength")
        p.check_inverted()
        if p.state != "ready":
            raise InputError("the video is still being inverted", hint="export when the progress bar is full")
        p.check_source()
        tracks = _tracks(body.face)
        with studio.jobs_lock:         # two exports at once (two tabs) must not pick the same free name
            studio.job_room(s, "export")
            out = _export_path(studio, p, body, fresh=True)
            studio.used(p)
            job = start_export(p, edits, tracks, out, studio.renderer.size)
            s.jobs[job.id] = job
        return job.status()

    @app.post("/api/s/{sid}/clip")
    def clip(sid: str, body: ClipBody):
        s = studio.session(sid)
        p = _project(s)
        if p.info.is_image:
            raise InputError("an image has no clip to play", hint="use the frame view")
        if not 0.2 <= body.seconds <= 10:
            raise InputError("a clip lasts between 0.2 and 10 seconds")
        p.check_source()
        if not 0 <= body.frame < p.n_frames:
            raise InputError(f"frame {body.frame} is outside the video (0..{p.n_frames - 1})",
                             hint="center the clip on a frame of the timeline")
        edits, tracks = studio.edits(s, body.edits), _tracks(body.face)
        with studio.jobs_lock:
            studio.job_room(s, "clip")
            folder = studio.new_clip_folder()
            studio.used(p)
            job = start_clip(p, edits, tracks, body.frame, body.seconds,
                             folder / f"clip{p.source.suffix if p.source.suffix.lower() in VIDEO_TYPES else '.mp4'}",
                             studio.renderer.size)
            s.jobs[job.id] = job
        return job.status()

    @app.post("/api/s/{sid}/cancel/{job_id}")
    def cancel(sid: str, job_id: str):
        job = _job(studio.session(sid), job_id)
        job.cancel()
        return job.status()

    @app.get("/api/s/{sid}/file/{job_id}")
    def file(sid: str, job_id: str):
        job = _job(studio.session(sid), job_id)
        if job.state != "done" or job.output is None:
            raise InputError(f"the {job.kind} is not finished ({job.state})")
        if not job.output.is_file():          # FileResponse would fail while sending: a 500
            raise HTTPException(404, f"{job.output.name} is no longer on disk (" + (
                f"only the {MAX_CLIPS} newest clips are kept); render the clip again" if job.kind == "clip" else
                "moved or deleted); export again"))
        return FileResponse(job.output, filename=job.output.name, headers={"Cache-Control": "no-store"})

    return app


def _job(s: Session, job_id: str) -> Job:
    job = s.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, "no such job in this session")
    return job


def _export_path(studio: Studio, p: Project, body: EditsBody, fresh: bool = False) -> Path:
    """``<workdir>/exports/<video>.<edits>.<ext>``; a fresh export gets a free name (``-2``, ``-3``...)."""
    from fsvideo import EditRequest
    from fsvideo.pipeline.jobs import default_output, video_suffix
    folder = studio.workdir / "exports"
    folder.mkdir(exist_ok=True)
    reqs = [EditRequest(e.attr.split(":")[-1] if e.attr.startswith("upload:") else e.attr, e.strength)
            for e in body.edits]
    ext = ".png" if p.info.is_image else video_suffix(p.source)
    face = "" if body.face == "all" else f".face{body.face}"
    out = folder / default_output(Path(_safe_name(p.source.stem, "video") + face + ext), reqs, ext).name
    n = 2
    running = {j.name for s in list(studio.sessions.values()) for j in list(s.jobs.values())
               if j.kind == "export" and j.state == "running"} if fresh else set()   # written at their end only
    while fresh and (out.exists() or out.with_suffix(".latents").exists() or out.name in running):
        out = out.with_name(f"{out.stem.rsplit('~', 1)[0]}~{n}{ext}")
        n += 1
    return out
