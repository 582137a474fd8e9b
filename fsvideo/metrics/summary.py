"""Aggregating per-clip results the way the paper reports them.

Table 3 reports each metric as an average over the evaluation videos; here every metric is first
averaged over the used frames of a clip (the per-clip value), then the mean and the (population)
standard deviation over clips are reported, overall and broken down by RAVDESS actor and emotion.
Fig. 9 is a box plot of the per-clip ICs.  Results from different identity networks are refused
(:class:`~fsvideo.metrics.results.MixedNetworksError`).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from fsvideo.metrics.results import METRICS, ClipResult, check_single_network


def stats(values: Sequence[float | None]) -> dict:
    """``{mean, std, n, median, min, max}`` of the finite values (NaN mean and n = 0 when none)."""
    v = np.array([float(x) for x in values if x is not None and math.isfinite(float(x))], dtype=np.float64)
    if len(v) == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0, "median": math.nan, "min": math.nan, "max": math.nan}
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(len(v)), "median": float(np.median(v)),
            "min": float(v.min()), "max": float(v.max())}


def _table(results: Sequence[ClipResult], metrics=METRICS) -> dict:
    return {m: stats([r.metrics.get(m) for r in results]) for m in metrics}


def _group(results: Sequence[ClipResult], field: str, metrics=METRICS) -> dict:
    groups: dict = {}
    for r in results:
        if r.ravdess and field in r.ravdess:
            groups.setdefault(r.ravdess[field], []).append(r)
    out = {}
    for k in sorted(groups):
        rs = groups[k]
        out[str(k)] = {"clips": len(rs), "metrics": _table(rs, metrics)}
    return out


def summarize(results: Sequence[ClipResult], metrics=METRICS) -> dict:
    """The summary of a run (JSON-friendly, NaN where undefined) over ``metrics`` (names).

    Returns ``{identity_network, clips, measured, skipped: [{clip, reason}], frames_used, faces_found,
    metrics: {name: stats}, by_actor: {actor: {clips, metrics}}, by_emotion: {...}}``.
    """
    net = check_single_network(results)
    ok = [r for r in results if r.ok]
    return {
        "identity_network": net,
        "clips": len(results),
        "measured": len(ok),
        "skipped": [{"clip": r.clip, "path": r.path, "reason": r.reason} for r in results if not r.ok],
        "frames_sampled": int(sum(r.frames_sampled for r in results)),
        "frames_used": int(sum(r.frames_used for r in ok)),
        "faces_found": int(sum(r.faces_found for r in results)),
        "metrics": _table(ok, metrics),
        "by_actor": _group(ok, "actor", metrics),
        "by_emotion": _group(ok, "emotion_name", metrics),
    }


def json_safe(obj):
    """NaN/inf -> None, recursively (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def format_mean_std(s: dict, digits: int = 3) -> str:
    """``0.818 ± 0.042`` (or ``-`` when there is no value)."""
    if not s or not s.get("n"):
        return "-"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


__all__ = ["format_mean_std", "json_safe", "stats", "summarize"]
