"""What ``fsvideo weights import / verify / list`` do: adopt a file, re-check cached files, list entries."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from fsvideo.errors import InputError, WeightsError
from fsvideo.weights import registry, store
from fsvideo.weights.registry import REGISTRY

log = logging.getLogger(__name__)


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
    e = registry.entry(name)
    src = Path(file)
    if not src.is_file():
        raise InputError(f"{src}: no such file", hint=f"give the path of the downloaded {e.filename}")
    sha = store.sha256_file(src)
    verdict = store.known_checksum(e, sha)
    warnings: list[str] = []
    if verdict is None:
        warnings.append(f"`{name}` has no published checksum; recorded sha256 {sha} (unverified)")
    elif verdict is False:
        pub = ", ".join(s.sha256 or f"{s.sha256_prefix}..." for s in e.sources if s.sha256 or s.sha256_prefix)
        warnings.append(f"{src.name} is not the released `{name}` file (sha256 {sha}, published {pub}); "
                        "using it because it loads")
    home = store.home(create=True)
    # keep a known alternative name (e.g. rosinality's stylegan2-ffhq-config-f.pt), else the entry's
    final = home / (src.name if src.name in e.filenames() else e.filename)
    part = final.with_name(final.name + ".part")
    converted = False
    with store.download_lock(name), store.cache_writes(f"`{name}`"), store.removing(part):
        converted = store.test_load_or_convert(e, src, part)
        if converted:
            warnings.append(f"{src.name} was converted to the layout fsvideo loads")
        else:
            shutil.copyfile(src, part)
        old = store.path_of(name)
        os.replace(part, final)
    if old is not None and old != final:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
    stored_sha = store.sha256_file(final) if converted else sha
    store.record(name, final, stored_sha, source=f"import:{src.resolve()}", verified=bool(verdict) and not converted,
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
        names = [n for n in REGISTRY if store.path_of(n) is not None]
    out: list[VerifyResult] = []
    manifest = store.read_manifest()
    for name in names:
        e = registry.entry(name)
        p = store.path_of(name)
        if p is None:
            out.append(VerifyResult(name, "missing", f"run `fsvideo weights download {name}`"))
            continue
        sha = store.sha256_file(p, (lambda d, t, n=name: progress(n, d, t)) if progress else None)
        rec = manifest.get(name)
        verdict = store.known_checksum(e, sha)
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
                store.test_load(name, p)
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
            store.record(name, p, sha, source=(rec or {}).get("source", "found in cache"), verified=verdict is True,
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
    manifest = store.read_manifest()
    rows = []
    for name, e in REGISTRY.items():
        p = store.path_of(name)
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


__all__ = ["EntryStatus", "ImportResult", "VerifyResult", "entries_status", "import_file", "verify"]
