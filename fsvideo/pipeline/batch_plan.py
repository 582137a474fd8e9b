"""The inputs of a batch (:mod:`fsvideo.pipeline.batch`): what to do, files / folders / globs expanded,
and each input's output names (and, for a re-edit, its latents file) decided before anything runs."""
from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fsvideo.edits.requests import EditRequest
from fsvideo.errors import InputError
from fsvideo.latents import latents_for
from fsvideo.pipeline.jobs import default_output
from fsvideo.pipeline.options import RunOptions

JOBS = ("edit", "invert")


@dataclass(frozen=True)
class BatchJob:
    """What to do to every input: ``edit`` (with ``edits``) or ``invert``, with these options.

    ``latents`` (edit only): re-edit from saved inversions instead of detecting and encoding again:
    a folder holding ``<input stem>.latents`` for each input (what ``fsvideo invert INPUTS --out-dir
    FOLDER`` writes), or one latents file when there is one input.
    """

    kind: str = "edit"
    edits: tuple[EditRequest, ...] = ()
    options: RunOptions = field(default_factory=RunOptions)
    latents: str | os.PathLike | None = None

    def __post_init__(self):
        if self.kind not in JOBS:
            raise InputError(f"unknown batch job {self.kind!r}", hint=f"use one of {', '.join(JOBS)}")
        if self.kind == "edit" and not self.edits:
            raise InputError("no edit given", hint="pass --attr NAME --strength S (or --direction FILE.npy)")
        if self.latents is not None and self.kind != "edit":
            raise InputError("latents are re-edited by `fsvideo edit --latents`",
                             hint="`fsvideo invert` makes them; drop --latents")


@dataclass
class BatchRow:
    """One input's line of the closing table."""

    input: str
    output: str | None = None
    frames: int = 0
    faces_edited: int | None = 0     # faces in the output's frames (a split video: its spans, context left out)
    seconds: float = 0.0
    status: str = "pending"          # done (made now), skipped (finished before), failed
    error: str | None = None
    rank: int = 0
    latents: str | None = None


def _media_extensions() -> frozenset[str]:
    from fsvideo.video import IMAGE_EXTENSIONS, VIDEO_INPUT_EXTENSIONS
    return VIDEO_INPUT_EXTENSIONS | frozenset(IMAGE_EXTENSIONS)


def expand_inputs(specs: Sequence[str | os.PathLike]) -> tuple[list[Path], list[BatchRow]]:
    """Files as given, folders as their video and image files (sorted), globs as their matches.

    Returns the inputs (first occurrence kept) and a failed row for each spec that names nothing.
    """
    exts = _media_extensions()
    found: list[Path] = []
    bad: list[BatchRow] = []
    for spec in specs:
        s = str(spec)
        p = Path(s)
        if p.is_dir():
            hits = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in exts)
            what = "no video or image files in this folder"
        elif glob.has_magic(s):
            hits = sorted(Path(q) for q in glob.glob(s, recursive=True) if Path(q).is_file())
            what = "the pattern matches no file"
        else:
            hits, what = [p], ""
            if not p.exists():
                hits, what = [], "no such file"
        if not hits:
            bad.append(BatchRow(s, status="failed", error=f"{s}: {what}"))
        found += hits
    seen, inputs = set(), []
    for p in found:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            inputs.append(p)
    return inputs, bad


@dataclass(frozen=True)
class Unit:
    """One input, the names of its outputs in the output folder and (a re-edit) the latents file it reads."""

    index: int
    src: Path
    name: str
    latents: str | None = None              # the latents file an inversion writes (its name)
    source_latents: Path | None = None      # the latents file a re-edit reads (``BatchJob.latents``)

    def files(self, folder: Path) -> dict[str, Path]:
        f = {"output": folder / self.name}
        if self.latents:
            f["latents"] = folder / self.latents
        return f


def plan(inputs: Sequence[Path], job: BatchJob) -> list[Unit]:
    """Output names as a single run would choose them; two inputs writing one name is an error.

    With ``job.latents`` each input gets its latents file (whether it exists is each input's own
    check: :meth:`~fsvideo.pipeline.batch.BatchWorker.identity`); a latents path that does not
    exist, or one file for several inputs, is an error for the whole batch.
    """
    from fsvideo.video import IMAGE_EXTENSIONS
    lat = None if job.latents is None else Path(job.latents)
    if lat is not None and not lat.exists():
        raise InputError(f"--latents {lat}: no such file or folder",
                         hint="pass the folder `fsvideo invert INPUTS --out-dir FOLDER` wrote")
    if lat is not None and not lat.is_dir() and len(inputs) != 1:
        raise InputError(f"--latents {lat} is one file, but {len(inputs)} inputs were given",
                         hint="pass a folder holding INPUT.latents for each input "
                              "(what `fsvideo invert INPUTS --out-dir FOLDER` writes)")
    units, owner = [], {}
    for i, src in enumerate(inputs):
        suffix = ".png" if src.suffix.lower() in IMAGE_EXTENSIONS else None
        name = default_output(src, list(job.edits) if job.kind == "edit" else [], suffix).name
        u = Unit(i, src, name, f"{src.stem}.latents" if job.kind == "invert" else None,
                 None if lat is None else latents_for(src, lat))
        for n in filter(None, (u.name, u.latents)):
            if n in owner:
                raise InputError(f"{owner[n]} and {src} would both write {n}",
                                 hint="rename one of them, or run them into different --out-dir folders")
            owner[n] = src
        units.append(u)
    return units


__all__ = ["JOBS", "BatchJob", "BatchRow", "Unit", "expand_inputs", "plan"]
