"""What a batch has finished: one record per output in ``OUT_DIR/.fsvideo-batch/``.

A record names the input (path, size, sha256), the settings that shape the output (edits, model,
face and blending options; not the device or the batch size), and the sha256 of every file the
output consists of.  An output counts as finished when its record matches the input and the
settings of this run *and* the files on disk still have the recorded checksums; anything else is
done again.  One file per output (rather than one shared file) lets ranks of a torchrun job, on
one machine or several sharing the folder, record their outputs without locking, and lets an
interrupted batch be restarted with any number of processes.

Record files are written atomically; the output files are moved into place only after their
record is written, so a run stopped at any instant leaves either no output or a recorded one.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from fsvideo import __version__
from fsvideo.utils import atomic_output
from fsvideo.weights import sha256_file

log = logging.getLogger(__name__)

STATE_DIR = ".fsvideo-batch"
TABLE_NAME = "fsvideo-batch.json"

# RunOptions fields that change how fast a run is, not what it writes.
_NOT_SETTINGS = frozenset({"device", "batch_size", "compile", "overwrite", "queue_size", "queue_mib", "threads"})


def settings_of(kind: str, options, edits=(), extra: dict | None = None) -> dict:
    """The settings that decide an output's content (JSON-able)."""
    opts = {k: v for k, v in asdict(options).items() if k not in _NOT_SETTINGS}
    return {"fsvideo": __version__, "job": kind, "edits": [[e.attr, float(e.strength)] for e in edits],
            "options": opts, **(extra or {})}


def settings_key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (replacing it)."""
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, default=str))


class Manifest:
    """The records of one output folder."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.dir = self.out_dir / STATE_DIR
        self.work = self.dir / "work"

    def ensure(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def read(self, name: str) -> dict | None:
        p = self.path(name)
        if not p.is_file():
            return None
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            rec = None
        if not isinstance(rec, dict):       # damaged, or not a record at all (a list, a string)
            log.warning("%s is unreadable; its output will be made again", p)
            return None
        return rec

    def finished(self, name: str, input_sha: str, key: str, files: dict[str, Path]) -> dict | None:
        """The record of ``name`` when it matches this input and settings and the files are intact."""
        rec = self.read(name)
        if rec is None or rec.get("input_sha256") != input_sha or rec.get("settings_key") != key:
            return None
        sums = rec.get("outputs")
        if not isinstance(sums, dict):
            return None
        for role, f in files.items():
            if not f.is_file() or sums.get(role) != sha256_file(f):
                return None
        return rec

    def made_by_us(self, name: str) -> bool:
        """Whether an earlier batch made this output (so replacing it is not overwriting the user's file)."""
        return self.path(name).is_file()

    def record(self, name: str, rec: dict) -> None:
        write_json(self.path(name), rec)

    def work_dir(self, name: str) -> Path:
        """A fresh folder for one output's files in the making; what a killed run left there is removed.

        Each output has exactly one owner rank, so no other process uses this folder.
        """
        d = self.work / name
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d


def file_record(files: dict[str, Path]) -> dict[str, str]:
    return {role: sha256_file(p) for role, p in files.items()}


def input_identity(path: Path) -> dict:
    st = os.stat(path)
    return {"input": str(path.resolve()), "input_size": st.st_size, "input_sha256": sha256_file(path)}


__all__ = ["STATE_DIR", "TABLE_NAME", "Manifest", "file_record", "input_identity", "settings_key", "settings_of",
           "write_json"]
