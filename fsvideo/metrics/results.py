"""Results of the video metrics: one :class:`ClipResult` per clip, the settings that made it, the cache.

* :class:`EvalSettings` -- everything that changes the numbers (frame sampling, crop size, detector,
  identity network, inverter and its weights, LPIPS variant).  Its :meth:`~EvalSettings.key` is part
  of the cache key, so changing any of them measures again instead of reusing stale numbers.
* :class:`ClipResult` -- per-clip counts (frames sampled / used, faces found), per-clip means of
  every metric, the per-frame values, the RAVDESS fields when the name has them, and the identity
  network that produced the ID and IC numbers.
* :class:`ResultsCache` -- a folder of per-clip JSON files named by the clip's content hash and the
  settings key.  A result is written (atomically) as soon as its clip is done, so an interrupted
  evaluation resumes where it stopped; a renamed or moved clip is found by its content.
* :func:`write_csv` / :func:`write_json` -- the per-clip table (one row per clip) and the full
  record (settings, summary, every clip with its frames).
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from fsvideo.errors import InputError
from fsvideo.weights import sha256_file  # noqa: F401  (re-exported: the clip part of the cache key)

#: Bump when a change to the metrics code changes numbers: old cache entries are then not reused
#: (2: the face stabiliser follows the optical-flow motion and resets at shot cuts).
METRICS_VERSION = 2

#: Per-clip metrics, in table order, with the direction that is better.
METRICS: dict[str, str] = {
    "ssim": "higher", "psnr": "higher", "mse": "lower", "lpips": "lower", "id": "higher",
    "ic_source": "higher", "ic_inversion": "higher",
}
#: Metrics that need an inversion (absent with ``--source-only``).
INVERSION_METRICS = ("ssim", "psnr", "mse", "lpips", "id", "ic_inversion")


class MixedNetworksError(InputError):
    """Results measured with different identity networks were about to be combined."""


def finite_or_none(v) -> float | None:
    """A float for JSON/CSV: NaN and +-inf become None (JSON has no NaN)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


@dataclass(frozen=True)
class EvalSettings:
    """What a measurement depends on besides the clip.

    Attributes:
        every: use every k-th decoded frame.
        max_frames: stop after this many sampled frames (None: the whole clip).
        size: side of the aligned crops the metrics are computed on.
        align_size: side the faces are aligned at (the inverter's resolution; = size when source only).
        source_only: no inversion (only the source IC).
        detector: face detector name.
        identity: identity network name (``arcface-r50``, ``dlib-resnet-v1``...).
        inverter: :meth:`Inverter.describe` of the inverter (None when source only).
        lpips: LPIPS variant.
        stabilize: the face front end's ``--stabilize`` (seconds, 0: each frame alone; or a name).
        version: :data:`METRICS_VERSION`.
    """

    every: int = 1
    max_frames: int | None = None
    size: int = 256
    align_size: int = 256
    source_only: bool = True
    detector: str = "dlib"
    identity: str = "dlib-resnet-v1"
    inverter: dict | None = None
    lpips: str | None = None
    stabilize: float | str = 0.0
    version: int = METRICS_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    def key(self) -> str:
        """16 hex digits identifying these settings (canonical JSON, sha256)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict) -> "EvalSettings":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class ClipResult:
    """The measurement of one clip.

    Attributes:
        clip: display name (file name).
        path: the file as given.
        status: ``ok`` or ``skipped``.
        reason: why it was skipped (one line naming the file and the fix), else None.
        sha256: content hash ('' when the file could not be read).
        settings_key: :meth:`EvalSettings.key` of the settings used.
        identity_network: the network behind ``id``, ``ic_source`` and ``ic_inversion``.
        frames_sampled: frames looked at (after ``every`` / ``max_frames``).
        frames_used: sampled frames with a face (the frames every metric is averaged over).
        faces_found: faces detected over the sampled frames (several per frame count each).
        metrics: per-clip values (mean over the used frames for the per-frame metrics, Eq. 9 for
            the ICs); None where undefined (e.g. IC of a one-frame clip).
        frames: per-frame records ``{index, time, ssim, psnr, mse, lpips, id, sim_source, sim_inversion}``.
        ravdess: the parsed RAVDESS fields (:meth:`RavdessName.describe`) or None.
    """

    clip: str
    path: str
    status: str = "ok"
    reason: str | None = None
    sha256: str = ""
    settings_key: str = ""
    identity_network: str = ""
    frames_sampled: int = 0
    frames_used: int = 0
    faces_found: int = 0
    metrics: dict[str, float | None] = field(default_factory=dict)
    frames: list[dict[str, Any]] = field(default_factory=list)
    ravdess: dict | None = None
    settings: dict | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["metrics"] = {k: finite_or_none(v) for k, v in self.metrics.items()}
        d["frames"] = [{k: (finite_or_none(v) if isinstance(v, float) else v) for k, v in fr.items()}
                       for fr in self.frames]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ClipResult":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def skipped(path: str | os.PathLike, reason: str, **kw) -> ClipResult:
    """A :class:`ClipResult` for a clip that could not be measured."""
    p = Path(path)
    return ClipResult(clip=p.name or str(p), path=str(path), status="skipped", reason=reason, **kw)


def check_single_network(results: Iterable[ClipResult]) -> str | None:
    """The one identity network of the measured results; MixedNetworksError when there are several."""
    nets = sorted({r.identity_network for r in results if r.ok and r.identity_network})
    if len(nets) > 1:
        raise MixedNetworksError(f"results measured with different identity networks ({', '.join(nets)}) "
                                 "cannot be combined: their ID/IC numbers are on different scales",
                                 hint="measure every clip with the same --identity (or keep separate --out folders)")
    return nets[0] if nets else None


class ResultsCache:
    """Per-clip results on disk, keyed by clip content and settings.

    Args:
        folder: where the JSON files live (created on first save).
        result_type: the :class:`ClipResult` (sub)class entries are read back as.

    Files are ``<sha256[:20]>-<settings key>.json``; :meth:`save` writes atomically, so a crash
    leaves either the old state or the complete file.
    """

    def __init__(self, folder: str | os.PathLike, result_type: type[ClipResult] | None = None):
        self.folder = Path(folder)
        self.result_type = result_type or ClipResult

    def path_for(self, sha256: str, key: str) -> Path:
        return self.folder / f"{sha256[:20]}-{key}.json"

    def load(self, sha256: str, key: str) -> ClipResult | None:
        """The cached result, or None (missing or unreadable files count as missing)."""
        p = self.path_for(sha256, key)
        try:
            d = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(d, dict) or d.get("sha256") != sha256 or d.get("settings_key") != key:
            return None
        return self.result_type.from_dict(d)

    def save(self, result: ClipResult) -> Path:
        if not result.sha256 or not result.settings_key:
            raise ValueError("only results with a content hash and a settings key can be cached")
        from fsvideo.utils import atomic_output
        self.folder.mkdir(parents=True, exist_ok=True)
        p = self.path_for(result.sha256, result.settings_key)
        with atomic_output(p, overwrite=True) as tmp:
            tmp.write_text(json.dumps(result.to_dict(), indent=1))
        return p


_RAVDESS_COLUMNS = ("modality", "vocal_channel", "emotion", "emotion_name", "intensity", "statement",
                    "repetition", "actor", "actor_sex")
CSV_COLUMNS = ("clip", "status", "reason", "identity_network", "frames_sampled", "frames_used", "faces_found",
               *METRICS, *_RAVDESS_COLUMNS, "path", "sha256", "settings_key")


def csv_row(r: ClipResult) -> dict:
    row = {"clip": r.clip, "status": r.status, "reason": r.reason or "", "identity_network": r.identity_network,
           "frames_sampled": r.frames_sampled, "frames_used": r.frames_used, "faces_found": r.faces_found,
           "path": r.path, "sha256": r.sha256, "settings_key": r.settings_key}
    for m in METRICS:
        v = finite_or_none(r.metrics.get(m))
        row[m] = "" if v is None else f"{v:.6f}"
    for c in _RAVDESS_COLUMNS:
        row[c] = "" if not r.ravdess else r.ravdess.get(c, "")
    return row


def write_csv(results: Sequence[ClipResult], path: str | os.PathLike) -> Path:
    """One row per clip (skipped clips included, with their reason), written atomically."""
    check_single_network(results)
    from fsvideo.utils import atomic_output
    with atomic_output(path, overwrite=True) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
            w.writeheader()
            for r in results:
                w.writerow(csv_row(r))
    return Path(path)


def read_csv(path: str | os.PathLike) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_json(results: Sequence[ClipResult], path: str | os.PathLike, *, settings: EvalSettings | None = None,
               summary: dict | None = None, extra: dict | None = None) -> Path:
    """Everything: settings, summary, every clip with its per-frame values; written atomically."""
    net = check_single_network(results)
    from fsvideo.utils import atomic_output
    doc = {"tool": "fsvideo metrics", "version": METRICS_VERSION, "identity_network": net,
           "settings": settings.to_dict() if settings else None, "summary": summary,
           "clips": [r.to_dict() for r in results], **(extra or {})}
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    return Path(path)


def read_json(path: str | os.PathLike) -> tuple[dict, list[ClipResult]]:
    """(the document, its clips as ClipResults)."""
    doc = json.loads(Path(path).read_text())
    return doc, [ClipResult.from_dict(c) for c in doc.get("clips", [])]


__all__ = ["CSV_COLUMNS", "ClipResult", "EvalSettings", "INVERSION_METRICS", "METRICS", "METRICS_VERSION",
           "MixedNetworksError", "ResultsCache", "check_single_network", "finite_or_none", "read_csv", "read_json",
           "sha256_file", "skipped", "write_csv", "write_json"]
