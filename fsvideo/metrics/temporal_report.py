"""Aggregating and writing temporal results: summary, per-clip CSV, per-frame CSV, JSON, curves.

Files written into the results folder by :func:`write_temporal` (beside ``metrics.*`` of the
inversion metrics, each replaced atomically):

* ``temporal.csv`` -- one row per (edited, source) pair, skipped pairs with their reason;
* ``temporal_frames.csv`` -- the per-frame curves of every pair (identity to frame 0, flicker,
  background, jitter), one row per frame;
* ``temporal.json`` -- settings, summary and every pair with its frames;
* ``temporal_curves/<clip>.png`` -- :func:`fsvideo.metrics.plots.temporal_curves` of each pair.

Each metric is first computed per clip, then the mean and (population) standard deviation over
clips are reported, as :mod:`fsvideo.metrics.summary` does for the inversion metrics.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

from fsvideo.metrics.results import finite_or_none
from fsvideo.metrics.summary import json_safe, summarize
from fsvideo.metrics.temporal import TEMPORAL_METRICS, TEMPORAL_VERSION, PairResult, TemporalSettings

#: Columns of ``temporal_frames.csv`` after ``clip``.
FRAME_COLUMNS = ("index", "face", "sim_source", "sim_edited", "warp_face", "warp_face_source", "warp_bg",
                 "warp_bg_source", "bg_psnr", "bg_max_abs", "jitter", "jitter_source", "face_size")
CLIP_COLUMNS = ("clip", "source", "status", "reason", "identity_network", "frames_sampled", "frames_used",
                *TEMPORAL_METRICS, "path", "sha256", "settings_key")


def summarize_temporal(results: Sequence[PairResult]) -> dict:
    """:func:`fsvideo.metrics.summary.summarize` over :data:`TEMPORAL_METRICS` (NaN where undefined).

    A background PSNR of inf (nothing changed) is left out of the mean and counted in
    ``metrics.bg_psnr.n_inf``; when every clip is untouched the mean is inf.
    """
    summary = summarize(results, TEMPORAL_METRICS)
    values = [r.metrics.get("bg_psnr") for r in results if r.ok]
    n_inf = sum(1 for v in values if v == math.inf)
    s = summary["metrics"]["bg_psnr"]
    if values and n_inf == len(values):
        s.update(mean=math.inf, std=0.0, median=math.inf, min=math.inf, max=math.inf, n=n_inf)
    s["n_inf"] = n_inf
    return summary


def _cell(v) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, float):
        f = finite_or_none(v)
        return "inf" if v == float("inf") else "" if f is None else f"{f:.6g}"
    return "" if v is None else str(v)


def _safe_name(name: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._+-]+", "_", name) or "clip"
    out, k = base, 1
    while out in used:
        k += 1
        out = f"{base}-{k}"
    used.add(out)
    return out


def write_temporal(results: Sequence[PairResult], out_dir: str | os.PathLike, *, settings: TemporalSettings,
                   plot: bool = True, extra: dict | None = None) -> tuple[dict, list[Path]]:
    """Write every file of the module docstring; returns ``(summary, written paths)``."""
    from fsvideo.metrics.plots import temporal_curves
    from fsvideo.utils import atomic_output

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize_temporal(results)
    files = []
    with atomic_output(out / "temporal.csv", overwrite=True) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CLIP_COLUMNS)
        for r in results:
            row = {"clip": r.clip, "source": r.source, "status": r.status, "reason": r.reason,
                   "identity_network": r.identity_network, "frames_sampled": r.frames_sampled,
                   "frames_used": r.frames_used, "path": r.path, "sha256": r.sha256,
                   "settings_key": r.settings_key, **{m: r.metrics.get(m) for m in TEMPORAL_METRICS}}
            w.writerow([_cell(row[c]) for c in CLIP_COLUMNS])
    files.append(out / "temporal.csv")
    with atomic_output(out / "temporal_frames.csv", overwrite=True) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("clip", *FRAME_COLUMNS))
        for r in results:
            for fr in r.frames:
                w.writerow([r.clip, *(_cell(fr.get(c)) for c in FRAME_COLUMNS)])
    files.append(out / "temporal_frames.csv")
    doc = {"tool": "fsvideo metrics --edited", "version": TEMPORAL_VERSION,
           "identity_network": summary["identity_network"], "settings": settings.to_dict(), "summary": json_safe(summary),
           "clips": [r.to_dict() for r in results], **(extra or {})}
    with atomic_output(out / "temporal.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    files.append(out / "temporal.json")
    if plot:
        used: set[str] = set()
        (out / "temporal_curves").mkdir(exist_ok=True)
        for r in results:
            if r.ok and r.frames:
                name = _safe_name(Path(r.clip).stem, used)
                files += temporal_curves(r.frames, out / "temporal_curves" / f"{name}.png",
                                         title=f"{r.clip} vs {Path(r.source).name}", identity=r.identity_network)
    return summary, files


def read_temporal(path: str | os.PathLike) -> tuple[dict, list[PairResult]]:
    """(the ``temporal.json`` document, its pairs as PairResults)."""
    doc = json.loads(Path(path).read_text())
    return doc, [PairResult.from_dict(c) for c in doc.get("clips", [])]


__all__ = ["CLIP_COLUMNS", "FRAME_COLUMNS", "read_temporal", "summarize_temporal", "write_temporal"]
