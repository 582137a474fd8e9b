"""Measuring clips: frames -> largest face -> FFHQ-aligned crop -> (inversion) -> metrics.

For each clip (streamed: memory does not grow with its length):

1. decode, keep every ``every``-th frame (at most ``max_frames``);
2. find, track and align the largest face with the shared front end
   (:class:`fsvideo.faces.frontend.VideoFaces`): stabilised exactly as ``fsvideo invert`` aligns
   (optical flow + smoothing, short gaps bridged), so the metrics measure the crops users get;
   crops at the inverter's resolution (or ``size`` with no inverter);
3. unless source only, invert the crops in batches;
4. per frame, on the aligned crops as in the paper: SSIM, PSNR, MSE (:mod:`~fsvideo.metrics.ssim`,
   :mod:`~fsvideo.metrics.psnr`), LPIPS (:mod:`~fsvideo.metrics.perceptual`), ID similarity of the
   source and the inversion; per clip: the IC (Eq. 9) of the source frames and of the inversions
   (:mod:`~fsvideo.metrics.consistency`).  Frames with no face are counted and left out.

A clip that cannot be measured (unreadable, no face in any sampled frame) gives a *skipped*
:class:`~fsvideo.metrics.results.ClipResult` whose ``reason`` names the file and the fix; the run
goes on.  :func:`evaluate_clips` adds the results cache and sharding over ranks.

:func:`pair_metrics` is the batch-level entry point for other code (e.g. the trainer's validation).

Example::

    ev = ClipEvaluator(make_detector("dlib"), load_identity("auto"), every=10, max_frames=12)
    res = ev.evaluate("01-01-03-01-01-01-12.mp4")
    res.metrics["ic_source"], res.frames_used
"""
from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from fsvideo.distributed import shard_indices as shard  # re-exported: the metrics' sharding
from fsvideo.errors import FsvideoError, InputError
from fsvideo.faces.frontend import check_sampling
from fsvideo.faces.stabilize import DEFAULT_SMOOTHING_S, parse_stabilize
from fsvideo.metrics.consistency import ConsistencyAccumulator, id_similarity
from fsvideo.metrics.identity import IdentityNetwork
from fsvideo.metrics.inversion import Inverter
from fsvideo.metrics.perceptual import LPIPS
from fsvideo.metrics.psnr import mse, psnr
from fsvideo.metrics.ravdess import parse_ravdess_name
from fsvideo.metrics.results import ClipResult, EvalSettings, ResultsCache, sha256_file, skipped
from fsvideo.metrics.ssim import ssim
from fsvideo.video.probe import VIDEO_INPUT_EXTENSIONS as VIDEO_EXTENSIONS  # picked up in folders; re-exported

log = logging.getLogger(__name__)

#: ``progress(clip_name, frames_done)`` while a clip is measured.
FrameProgress = Callable[[str, int], None]


# ------------------------------------------------------------------------------------------- batch API

def pair_metrics(source, reconstruction, *, lpips: LPIPS | None = None, identity: IdentityNetwork | None = None,
                 landmarks=None) -> dict[str, np.ndarray]:
    """Per-pair reconstruction metrics of two batches of aligned faces.

    Args:
        source, reconstruction: the same shape; uint8 ``[N, S, S, 3]`` RGB (numpy or torch) or
            float tensors ``[N, 3, S, S]`` in [-1, 1].
        lpips: an :class:`~fsvideo.metrics.perceptual.LPIPS` to add ``lpips``.
        identity: an identity network to add ``id`` (needs uint8 crops or converts floats).
        landmarks: float ``[N, 68, 2]`` in crop pixels, for identity networks that use them.

    Returns:
        ``{"ssim", "psnr", "mse"[, "lpips"][, "id"]}`` -> float64 numpy ``[N]``.
    """
    out = {"ssim": ssim(source, reconstruction).cpu().numpy(),
           "psnr": psnr(source, reconstruction).cpu().numpy(),
           "mse": mse(source, reconstruction).cpu().numpy()}
    if lpips is not None:
        out["lpips"] = lpips(source, reconstruction).numpy().astype(np.float64)
    if identity is not None:
        a, b = _as_uint8(source), _as_uint8(reconstruction)
        out["id"] = id_similarity(identity.embed(a, landmarks), identity.embed(b, landmarks))
    return out


def _as_uint8(x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if x.dtype == torch.uint8:
        return x.detach().cpu().numpy()
    from fsvideo.models.fse import to_uint8
    return to_uint8(x).cpu().numpy()


# --------------------------------------------------------------------------------------- one clip

def _resize(crops: np.ndarray, size: int) -> np.ndarray:
    import cv2
    if crops.shape[1] == size:
        return crops
    interp = cv2.INTER_AREA if size < crops.shape[1] else cv2.INTER_CUBIC
    return np.stack([cv2.resize(c, (size, size), interpolation=interp) for c in crops])


class ClipEvaluator:
    """Measures clips with ready-built components.

    Args:
        detector: a :class:`fsvideo.faces.detect.FaceDetector`.
        identity: an :class:`~fsvideo.metrics.identity.IdentityNetwork` (R of Eq. 9).
        inverter: an :class:`~fsvideo.metrics.inversion.Inverter`; None measures the source only.
        lpips: the LPIPS metric (built on first use when an inverter is given and this is None).
        every: use every k-th frame (1: all, as the paper).
        max_frames: at most this many sampled frames per clip (None: all).
        size: crop side the metrics are computed on; default the inverter's resolution (256 without
            one).  Crops are aligned at the inverter's resolution and resized (area filter) when
            ``size`` differs.
        batch_size: faces per inversion/metric batch (bounds memory).
        stabilize: the front end's ``--stabilize`` (seconds or ``"official"``; ``invert``'s
            default; 0: each frame aligned alone, as metrics did before).
    """

    def __init__(self, detector, identity: IdentityNetwork, inverter: Inverter | None = None, *,
                 lpips: LPIPS | None = None, every: int = 1, max_frames: int | None = None,
                 size: int | None = None, batch_size: int = 8, stabilize: float | str = DEFAULT_SMOOTHING_S):
        self.every, self.max_frames = check_sampling(every, max_frames)
        self.detector = detector
        self.identity = identity
        self.inverter = inverter
        parse_stabilize(stabilize)                      # a bad value fails here, not per clip
        self.stabilize = stabilize
        self.align_size = int(inverter.resolution) if inverter is not None else int(size or 256)
        self.size = int(size or self.align_size)
        if self.size < 16:
            raise InputError(f"--size {self.size} is too small", hint="use at least 64 (256 or the model's resolution)")
        self.batch_size = max(1, int(batch_size))
        self._lpips = lpips

    @property
    def lpips(self) -> LPIPS:
        if self._lpips is None:
            self._lpips = LPIPS("alex")
        return self._lpips

    @property
    def settings(self) -> EvalSettings:
        return EvalSettings(
            every=self.every, max_frames=self.max_frames, size=self.size, align_size=self.align_size,
            source_only=self.inverter is None, detector=getattr(self.detector, "name", type(self.detector).__name__),
            identity=self.identity.name, inverter=None if self.inverter is None else self.inverter.describe(),
            lpips=None if self.inverter is None else "lpips-alex-v0.1" if self._lpips is None else self._lpips.name,
            stabilize=self.stabilize)

    def evaluate(self, path: str | os.PathLike, *, sha256: str | None = None,
                 progress: FrameProgress | None = None) -> ClipResult:
        """Measure one clip; never raises for a bad clip (returns a skipped result instead)."""
        p = Path(path)
        settings = self.settings
        key = settings.key()
        rav = parse_ravdess_name(p)
        base = dict(settings_key=key, identity_network=self.identity.name,
                    ravdess=rav.describe() if rav else None, settings=settings.to_dict())
        try:
            from fsvideo.video import probe
            info = probe(p)
            sha = sha256 or sha256_file(p)
        except FsvideoError as e:
            return skipped(p, str(e), **base)
        except OSError as e:
            return skipped(p, f"{p}: cannot read ({e.strerror or e})", **base)
        res = ClipResult(clip=p.name, path=str(p), sha256=sha, **base)
        t0 = time.perf_counter()
        try:
            self._measure(p, info, res, progress)
        except FsvideoError as e:
            return skipped(p, str(e), sha256=sha, **base)
        if res.frames_used == 0:
            where = f"{res.frames_sampled} sampled frame" + ("s" if res.frames_sampled != 1 else "")
            how = f" (every {self.every}th frame)" if self.every > 1 else ""
            return skipped(p, f"no face found in the {where} of {p}{how}",
                           sha256=sha, frames_sampled=res.frames_sampled, **base)
        log.info("%s: %d/%d frames with a face in %.1f s", p.name, res.frames_used, res.frames_sampled,
                 time.perf_counter() - t0)
        return res

    # -- internals

    def _measure(self, path: Path, info, res: ClipResult, progress: FrameProgress | None) -> None:
        from fsvideo.faces.frontend import VideoFaces
        acc_src, acc_inv = ConsistencyAccumulator(), ConsistencyAccumulator()
        batch: list[tuple[int, float, np.ndarray, np.ndarray]] = []
        sums: dict[str, list[float]] = {}
        stab, sigma_s = parse_stabilize(self.stabilize)
        frames = VideoFaces(path, self.detector, output_size=self.align_size, every=self.every,
                            max_frames=self.max_frames, info=info, policy="largest", stabilize=stab,
                            sigma_s=sigma_s, on_missing="passthrough", method="fast")
        for ff in frames:
            res.frames_sampled += 1
            if ff.faces:
                a = ff.faces[0].aligned
                batch.append((ff.index, float(ff.time), a.image, a.landmarks))
            if len(batch) >= self.batch_size:
                self._flush(batch, res, acc_src, acc_inv, sums)
                batch = []
            if progress is not None:
                progress(res.clip, res.frames_sampled)
        if batch:
            self._flush(batch, res, acc_src, acc_inv, sums)
        res.faces_found = frames.stats.detections
        res.frames_used = len(res.frames)
        m = {k: float(np.mean(v)) if v else None for k, v in sums.items()}
        m["ic_source"] = acc_src.value
        if self.inverter is not None:
            m["ic_inversion"] = acc_inv.value
        res.metrics = m

    def _flush(self, batch, res: ClipResult, acc_src, acc_inv, sums) -> None:
        crops = np.stack([b[2] for b in batch])
        lms = np.stack([b[3] for b in batch]).astype(np.float64)
        rec = self.inverter(crops) if self.inverter is not None else None
        if self.size != self.align_size:
            scale = self.size / self.align_size
            lms = (lms + 0.5) * scale - 0.5
            crops = _resize(crops, self.size)
            rec = None if rec is None else _resize(rec, self.size)
        e_src = self.identity.embed(crops, lms)
        s_src = acc_src.add(e_src)
        rows = [{"index": int(b[0]), "time": round(b[1], 6), "sim_source": float(s)} for b, s in zip(batch, s_src)]
        if rec is not None:
            if rec.shape != crops.shape or rec.dtype != np.uint8:
                raise InputError(f"the inverter returned {rec.dtype} {rec.shape} for crops {crops.shape}",
                                 hint="an Inverter must return uint8 crops of the input's shape")
            e_inv = self.identity.embed(rec, lms)
            s_inv = acc_inv.add(e_inv)
            vals = pair_metrics(crops, rec, lpips=self.lpips)
            vals["id"] = id_similarity(e_src, e_inv)
            for i, row in enumerate(rows):
                row["sim_inversion"] = float(s_inv[i])
                for k in ("ssim", "psnr", "mse", "lpips", "id"):
                    row[k] = float(vals[k][i])
            for k in ("ssim", "psnr", "mse", "lpips", "id"):
                # PSNR is inf for a pixel-identical pair; the mean is over finite values
                sums.setdefault(k, []).extend(float(v) for v in vals[k] if np.isfinite(v))
        res.frames.extend(rows)


# ------------------------------------------------------------------------------------------- many clips

def find_clips(inputs: Iterable[str | os.PathLike]) -> tuple[list[Path], list[ClipResult]]:
    """Files as given and the videos under folders (recursively, sorted), without duplicates.

    Returns ``(clips, problems)``: a missing path or a folder with no video gives a skipped result
    in ``problems`` (the run goes on with the rest).
    """
    clips: list[Path] = []
    problems: list[ClipResult] = []
    seen: set[str] = set()

    def add(p: Path) -> None:
        k = str(p.resolve())
        if k not in seen:
            seen.add(k)
            clips.append(p)

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in VIDEO_EXTENSIONS
                           and not q.name.startswith("."))
            if not found:
                problems.append(skipped(p, f"folder {p} holds no video files (looked for "
                                           f"{', '.join(sorted(VIDEO_EXTENSIONS))})"))
            for q in found:
                add(q)
        elif p.exists():
            add(p)
        else:
            problems.append(skipped(p, f"{p}: no such file or folder"))
    return clips, problems


def sample_clips(clips: Sequence[Path], n: int | None, seed: int = 0) -> list[Path]:
    """``n`` clips drawn without replacement with ``seed`` (in their listed order); all when n is None."""
    if n is None or n >= len(clips):
        return list(clips)
    if n < 1:
        raise InputError(f"--sample {n} must be >= 1", hint="leave it out to measure every clip")
    picked = sorted(random.Random(seed).sample(range(len(clips)), n))
    return [clips[i] for i in picked]


def evaluate_clips(clips: Sequence[str | os.PathLike], evaluator: ClipEvaluator, *,
                   cache: ResultsCache | None = None, rank: int = 0, world: int = 1,
                   on_clip: Callable[[int, ClipResult, bool], None] | None = None,
                   progress: FrameProgress | None = None) -> list[tuple[int, ClipResult]]:
    """Measure this rank's share of ``clips``, reusing cached results.

    Args:
        clips: the whole list (every rank passes the same list).
        cache: where finished results are looked up and saved (None: no cache).
        rank, world: this process's share is :func:`shard` ``(len(clips), rank, world)``.
        on_clip: ``on_clip(index, result, from_cache)`` after each clip.
        progress: per-frame progress of the clip being measured.

    Returns ``[(index in clips, result)]`` for this rank's clips.  Unreadable files are skipped
    (never cached: a fixed file has another hash anyway); clips without a face are cached too.
    """
    paths = [Path(c) for c in clips]

    def relabel(i: int, hit: ClipResult) -> None:  # the same content may have been measured under another name
        rav = parse_ravdess_name(paths[i])
        hit.clip, hit.path, hit.ravdess = paths[i].name, str(paths[i]), rav.describe() if rav else None

    return run_shard(len(paths), evaluator.settings.key(), cache=cache, rank=rank, world=world,
                     content_sha=lambda i: sha256_file(paths[i]), relabel=relabel, on_clip=on_clip,
                     measure=lambda i, sha: evaluator.evaluate(paths[i], sha256=sha, progress=progress))


def run_shard(n: int, key: str, *, cache: ResultsCache | None, rank: int, world: int,
              content_sha: Callable[[int], str], measure: Callable[[int, str | None], ClipResult],
              relabel: Callable[[int, ClipResult], None],
              on_clip: Callable[[int, ClipResult, bool], None] | None = None) -> list[tuple[int, ClipResult]]:
    """The loop behind :func:`evaluate_clips` (and the temporal metrics' pairs): this rank's items, cached.

    Args:
        n: number of items; this rank takes :func:`shard` ``(n, rank, world)``.
        key: the settings key of the results.
        content_sha: ``content_sha(i)`` the content hash of item ``i`` (OSError: not cached).
        measure: ``measure(i, sha_or_None)`` -> a result (a skipped one for a bad item).
        relabel: names a cached hit after item ``i`` (its content may have had another name).
        on_clip: ``on_clip(i, result, from_cache)`` after each item.
    """
    out = []
    for i in shard(n, rank, world):
        sha, hit = None, None
        if cache is not None:
            try:
                sha = content_sha(i)
                hit = cache.load(sha, key)
            except OSError:
                sha = None
        if hit is not None:
            relabel(i, hit)
            res = hit
        else:
            res = measure(i, sha)
            if cache is not None and res.sha256 and res.settings_key:
                cache.save(res)
        out.append((i, res))
        if on_clip:
            on_clip(i, res, hit is not None)
    return out


__all__ = ["ClipEvaluator", "VIDEO_EXTENSIONS", "evaluate_clips", "find_clips", "pair_metrics", "run_shard",
           "sample_clips", "shard"]
