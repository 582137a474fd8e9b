"""sha256 of weight files without re-reading what is already known.

A latents file records the sha256 of the generator and encoder that made it, and a re-edit checks
them (:func:`fsvideo.pipeline.jobs.model_identity`).  Hashing the released 1024 px pair reads about
560 MiB (about a second, more from a cold disk) on every ``invert`` and ``edit --latents`` run, and
once per video in a batch.  :func:`known_sha256` answers from, in order:

1. the weights manifest, for a registry file of the recorded size (the store hashed it when it
   downloaded, imported or verified it);
2. a digest remembered for this file's real path, size, modification time and inode (in this process,
   and in ``digests.json`` beside the manifest, like git's index: a file rewritten in place gets a new
   modification time and is hashed again);
3. hashing the file, then remembering it.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from fsvideo.errors import WeightsError
from fsvideo.utils import atomic_output
from fsvideo.weights.store import home, read_manifest, sha256_file, weights_home

log = logging.getLogger(__name__)

DIGESTS = "digests.json"

_memo: dict[tuple, str] = {}


def _stamp(path: Path) -> tuple:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino


def _from_manifest(path: Path) -> str | None:
    try:
        inside = path.resolve().parent == weights_home().resolve()
    except OSError:
        return None
    if not inside:
        return None
    size = path.stat().st_size
    for rec in read_manifest().values():
        if rec.get("file") == path.name and rec.get("size") == size and isinstance(rec.get("sha256"), str):
            return rec["sha256"]
    return None


def _read_cache() -> dict:
    p = weights_home() / DIGESTS
    try:
        data = json.loads(p.read_text())
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("digest cache %s is unreadable (%s); hashing again", p, e)
        return {}


def _remember(stamp: tuple, sha: str) -> None:
    _memo[stamp] = sha
    try:
        cache = _read_cache()
        cache[stamp[0]] = {"size": stamp[1], "mtime_ns": stamp[2], "inode": stamp[3], "sha256": sha}
        with atomic_output(home(create=True) / DIGESTS, overwrite=True) as tmp:
            tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
    except (OSError, WeightsError) as e:          # a read-only cache folder only costs the next run a re-hash
        log.info("digest of %s not cached (%s)", stamp[0], e)


def known_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of ``path``: from the manifest or the digest cache when they know this very file,
    else hashed (and remembered)."""
    path = Path(path)
    stamp = _stamp(path)
    if stamp in _memo:
        return _memo[stamp]
    sha = _from_manifest(path)
    if sha is None:
        rec = _read_cache().get(stamp[0])
        if isinstance(rec, dict) and (rec.get("size"), rec.get("mtime_ns"), rec.get("inode")) == stamp[1:]:
            sha = rec.get("sha256")
    if isinstance(sha, str):
        _memo[stamp] = sha
        return sha
    sha = sha256_file(path)
    _remember(stamp, sha)
    return sha


__all__ = ["DIGESTS", "known_sha256"]
