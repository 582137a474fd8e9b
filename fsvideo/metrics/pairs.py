"""Which source each edited video was made from, and measuring many pairs (cache, torchrun shards).

Pairing rule (:func:`find_pairs`):

* ``--source`` files given: paired with the edited videos in order (as many sources as edited
  videos), or one source for every edited video.
* otherwise each edited video is matched **by name** in ``--source-dir`` (default: the edited
  video's own folder, where ``fsvideo edit`` writes by default): ``fsvideo edit`` names its output
  ``<source stem>.<edit tags>.<ext>`` (``talk.mp4`` -> ``talk.smile+2.mp4``, several edits joined
  with dots: ``talk.smile+2.makeup-1.mp4``), so the source is the video whose stem is the
  *shortest* dot-separated prefix of the edited stem (``talk``, then ``talk.smile+2``, ...; in
  another folder the whole stem counts too: ``out/talk.mp4`` <- ``src/talk.mp4``).  The shortest
  prefix wins so that ``talk.smile+2.makeup-1.mp4`` is matched with ``talk.mp4`` even beside
  ``talk.smile+2.mp4``.  Two sources with that stem (``talk.mp4`` and ``talk.mov``) are an error;
  an edited video with no source is reported and skipped; in its own folder, a video that has no
  source is taken for a source and left out.

:func:`evaluate_pairs` measures this rank's share of the pairs (round robin, as
:func:`fsvideo.metrics.evaluate.shard`), reusing results cached by the two files' content and the
settings (:class:`fsvideo.metrics.results.ResultsCache`), so an interrupted run resumes.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from fsvideo.errors import InputError
from fsvideo.metrics.evaluate import VIDEO_EXTENSIONS, find_clips, run_shard
from fsvideo.metrics.results import ResultsCache, sha256_file
from fsvideo.metrics.temporal import PairResult, TemporalEvaluator, pair_sha256, skipped_pair

log = logging.getLogger(__name__)

Pair = tuple[Path, Path]


def _videos_in(folder: Path) -> dict[str, list[Path]]:
    by_stem: dict[str, list[Path]] = {}
    for q in sorted(folder.iterdir()):
        if q.is_file() and q.suffix.lower() in VIDEO_EXTENSIONS and not q.name.startswith("."):
            by_stem.setdefault(q.stem, []).append(q)
    return by_stem


def source_for(edited: Path, folder: Path, index: dict[str, list[Path]] | None = None) -> Path | None:
    """The source of ``edited`` in ``folder`` by the naming rule of the module docstring (None: none).

    Raises InputError when two videos in ``folder`` have the matching stem.
    """
    index = _videos_in(folder) if index is None else index
    parts = edited.stem.split(".")
    same_folder = edited.parent.resolve() == folder.resolve()
    for k in range(1, len(parts) + 1):
        stem = ".".join(parts[:k])
        found = [q for q in index.get(stem, []) if q.resolve() != edited.resolve()]
        if k == len(parts) and same_folder:
            found = []  # in its own folder a video with the same stem is not its source
        if len(found) > 1:
            raise InputError(f"{edited} could come from {found[0]} or {found[1]} (same name)",
                             hint="pass the source with --source FILE")
        if found:
            return found[0]
    return None


def find_pairs(edited: Sequence[str | os.PathLike] = (), sources: Sequence[str | os.PathLike] = (), *,
               edited_dir: str | os.PathLike | None = None,
               source_dir: str | os.PathLike | None = None) -> tuple[list[Pair], list[PairResult]]:
    """(edited, source) pairs from the CLI's ``--edited/--source/--edited-dir/--source-dir``.

    Returns ``(pairs, problems)``: an edited video without a source gives a skipped result naming the
    fix (the run goes on).  Raises InputError for contradictory arguments.
    """
    files = [Path(e) for e in edited]
    problems: list[PairResult] = []
    for f in files:
        if not f.is_file():
            raise InputError(f"--edited {f}: no such file", hint="check the path of the edited video")
    if edited_dir is not None:
        d = Path(edited_dir)
        if not d.is_dir():
            raise InputError(f"--edited-dir {d} is not a folder", hint="pass the folder holding the edited videos")
        found, _ = find_clips([d])
        if not found and not files:
            raise InputError(f"--edited-dir {d} holds no video files",
                             hint="pass the folder holding the edited videos (fsvideo edit names them "
                                  "<source>.<edit>.<ext>)")
        files += found
    if not files:
        raise InputError("no edited video given", hint="pass --edited FILE (repeatable) or --edited-dir FOLDER")
    if sources:
        srcs = [Path(s) for s in sources]
        for s in srcs:
            if not s.is_file():
                raise InputError(f"--source {s}: no such file", hint="check the path of the source video")
        if source_dir is not None:
            raise InputError("--source and --source-dir were both given", hint="pass one of them")
        if len(srcs) == 1:
            srcs = srcs * len(files)
        if len(srcs) != len(files):
            raise InputError(f"{len(files)} edited videos but {len(srcs)} --source files",
                             hint="give one --source per --edited (in order), or a single --source for all")
        return list(zip(files, srcs)), problems
    if source_dir is not None and not Path(source_dir).is_dir():
        raise InputError(f"--source-dir {source_dir} is not a folder", hint="pass the folder holding the sources")
    pairs: list[Pair] = []
    indexes: dict[Path, dict] = {}
    for f in files:
        folder = Path(source_dir) if source_dir is not None else f.parent
        index = indexes.setdefault(folder, _videos_in(folder))
        src = source_for(f, folder, index)
        if src is not None:
            pairs.append((f, src))
        elif source_dir is not None or f in [Path(e) for e in edited]:
            problems.append(skipped_pair(f, "", f"no source video for {f} in {folder} (looked for "
                                                f"{f.stem.split('.')[0]}.<ext>: fsvideo edit names its output "
                                                "<source>.<edit>.<ext>); pass it with --source FILE"))
        else:
            log.debug("%s has no source beside it: taken for a source", f)
    if not pairs and not problems:
        raise InputError(f"no edited video with its source found in {edited_dir}",
                         hint="fsvideo edit names its outputs <source>.<edit>.<ext>; pass --source-dir if the "
                              "sources are elsewhere")
    return pairs, problems


def evaluate_pairs(pairs: Sequence[Pair], evaluator: TemporalEvaluator, *, cache: ResultsCache | None = None,
                   rank: int = 0, world: int = 1,
                   on_clip: Callable[[int, PairResult, bool], None] | None = None,
                   progress: Callable[[str, int], None] | None = None) -> list[tuple[int, PairResult]]:
    """Measure this rank's share of ``pairs`` (every rank passes the same list), reusing cached results.

    Returns ``[(index in pairs, result)]``.  ``on_clip(index, result, from_cache)`` after each pair.
    """
    def relabel(i: int, hit) -> None:  # the same content may have been measured under other names
        hit.clip, hit.path, hit.source = Path(pairs[i][0]).name, str(pairs[i][0]), str(pairs[i][1])

    return run_shard(len(pairs), evaluator.settings.key(), cache=cache, rank=rank, world=world,
                     content_sha=lambda i: pair_sha256(sha256_file(pairs[i][0]), sha256_file(pairs[i][1])),
                     measure=lambda i, sha: evaluator.evaluate(*pairs[i], sha256=sha, progress=progress),
                     relabel=relabel, on_clip=on_clip)

__all__ = ["Pair", "evaluate_pairs", "find_pairs", "source_for"]
