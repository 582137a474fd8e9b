"""Keeping the studio's work folder bounded: the latents cache and the uploads, least recently used first.

Each video's inversion (``cache/<key>/``) and each upload (``uploads/<token>/``) is one entry.  Its
last use is the folder's modification time, which :func:`touch` moves to now whenever the studio
opens, reads or exports it.  :func:`prune` removes entries older than the age limit, then the
least recently used ones until the total is within the size limit, never an entry in use (a video
being inverted, exported or clipped, or open in a tab).  Exports are the user's results and stay;
preview clips have their own bound (:data:`fsvideo.studio.session.MAX_CLIPS`).
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from fsvideo.errors import InputError

log = logging.getLogger(__name__)

#: Folders of the work folder whose entries are pruned.
PRUNED = ("cache", "uploads")


@dataclass(frozen=True)
class Entry:
    path: Path
    used: float          # seconds since the epoch
    size: int            # bytes


def check_limits(max_gb: float, max_days: float) -> None:
    """Raise InputError unless both limits are finite numbers >= 0 (0 turns a limit off)."""
    for flag, v in (("--cache-gb", max_gb), ("--cache-days", max_days)):
        if not v >= 0 or v == float("inf"):
            raise InputError(f"{flag} {v:g} must be a number >= 0", hint=f"pass e.g. {flag} 20 (0: no limit)")


def touch(path: Path) -> None:
    """Mark the entry holding ``path`` (a folder of ``cache/`` or ``uploads/``) as used now."""
    try:
        os.utime(path)
    except OSError as e:
        log.debug("cannot mark %s as used: %s", path, e)


def _size(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def entries(workdir: Path) -> list[Entry]:
    """Every prunable entry of ``workdir``, least recently used first."""
    out = []
    for sub in PRUNED:
        d = Path(workdir) / sub
        if not d.is_dir():
            continue
        for e in d.iterdir():
            try:
                st = e.stat()
            except OSError:
                continue
            if e.is_dir() and not e.is_symlink():
                out.append(Entry(e, st.st_mtime, _size(e)))
    return sorted(out, key=lambda e: e.used)


def prune(workdir: Path, max_bytes: int, max_age_s: float, in_use: set[Path], now: float | None = None) -> list[Path]:
    """Remove entries not in ``in_use`` (entry folders) that are older than ``max_age_s``, then the
    least recently used until the rest holds at most ``max_bytes``; a limit of 0 is no limit.

    Returns the removed folders.  Entries in use count towards the size but are never removed, so
    the folder can stay above the limit while they are.
    """
    now = time.time() if now is None else now
    keep = {Path(p).resolve() for p in in_use}
    listed = entries(workdir)
    total = sum(e.size for e in listed)
    removed = []
    for e in listed:                                    # oldest first
        if e.path.resolve() in keep:
            continue
        old = max_age_s > 0 and now - e.used > max_age_s
        big = max_bytes > 0 and total > max_bytes
        if not (old or big):
            continue
        shutil.rmtree(e.path, ignore_errors=True)
        if e.path.exists():
            log.warning("could not remove %s from the studio's work folder", e.path)
            continue
        total -= e.size
        removed.append(e.path)
        log.info("removed %s (%.1f MB, last used %.1f days ago)", e.path, e.size / 1e6, (now - e.used) / 86400)
    return removed
