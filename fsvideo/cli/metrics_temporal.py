"""``fsvideo metrics --edited OUT --source IN``: temporal quality of edited videos (the table, progress, files).

The options live on the ``metrics`` command (:mod:`fsvideo.cli.metrics`); this module runs them:
pairs (:func:`fsvideo.metrics.pairs.find_pairs`), sharding over torchrun ranks, the results cache,
the files of :func:`fsvideo.metrics.temporal_report.write_temporal`, and the rich tables.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

from fsvideo.cli._console import console
from fsvideo.errors import InputError

#: (metric, table label, digits); pairs of an edited figure and its source figure share a row.
_ROWS = (("tl_id", None, "TL-ID ↑ (STIT)", 3), ("tg_id", None, "TG-ID ↑ (STIT)", 3),
         ("ic_edited", "ic_source", "identity to frame 0 ↑", 3),
         ("warp_face", "warp_face_source", "flicker, face ↓ (levels)", 2),
         ("warp_bg", "warp_bg_source", "flicker, background ↓ (levels)", 2),
         ("jitter", "jitter_source", "landmark jitter ↓ (px at crop size)", 3),
         ("bg_psnr", None, "background PSNR ↑ (dB)", 2), ("bg_max_abs", None, "background max |diff| ↓", 0))


def run_temporal(*, edited, sources, edited_dir, source_dir, out, sample, seed, max_frames, identity, detector,
                 size, batch_size, device, flow, flow_max_side, dilate, no_plot) -> None:
    """The ``--edited`` mode of ``fsvideo metrics`` (arguments as the command's options)."""

    from fsvideo.cli.metrics import _check_out_dir
    from fsvideo.distributed import device_for
    from fsvideo.faces.detect import make_detector
    from fsvideo.metrics.distributed import Distributed
    from fsvideo.metrics.evaluate import sample_clips
    from fsvideo.metrics.identity import load_identity
    from fsvideo.metrics.pairs import find_pairs
    from fsvideo.metrics.temporal import TemporalEvaluator
    from fsvideo.utils import pick_device

    pairs, problems = find_pairs(edited, sources, edited_dir=edited_dir, source_dir=source_dir)
    chosen = sample_clips(pairs, sample, seed)
    out_dir = Path(out)
    with Distributed() as dist:
        dev = device_for(pick_device(device), dist.info)
        ev = TemporalEvaluator(make_detector(detector, device=dev), load_identity(identity, device=dev),
                               max_frames=max_frames, size=size or 256, flow=flow, flow_max_side=flow_max_side,
                               dilate=dilate, batch_size=batch_size)
        _check_out_dir(out_dir, ev.identity.name, "temporal.json")
        if dist.is_main:
            console.print(f"measuring {len(chosen)} edited video{'s' if len(chosen) != 1 else ''} against their "
                          f"sources" + (f" on {dist.world} processes" if dist.enabled else "")
                          + f"; identity network: {ev.identity.name}; detector: {ev.settings.detector}; "
                          f"flow: {flow}", highlight=False)
        out_dir.mkdir(parents=True, exist_ok=True)
        mine = _measure(dist, chosen, ev, out_dir)
        merged = dist.gather(mine)
    if not dist.is_main:
        return
    results = problems + [r for _, r in merged]
    _write_and_report(results, ev, out_dir, no_plot=no_plot)


def _measure(dist, pairs, ev, out_dir: Path):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fsvideo.metrics.evaluate import shard
    from fsvideo.metrics.pairs import evaluate_pairs
    from fsvideo.metrics.results import ResultsCache
    from fsvideo.metrics.temporal import PairResult

    cache = ResultsCache(out_dir / "clips", PairResult)
    if not dist.is_main:
        return evaluate_pairs(pairs, ev, cache=cache, rank=dist.rank, world=dist.world)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("pairs", total=len(shard(len(pairs), dist.rank, dist.world)))

        def on_clip(i, res, cached):
            bar.advance(task)
            tag = " (cached)" if cached else ""
            if res.ok:
                m = res.metrics
                console.print(f"[green]ok[/] {res.clip}: {res.frames_used}/{res.frames_sampled} frames with a face, "
                              f"TL-ID {_num(m.get('tl_id'), 3)}, TG-ID {_num(m.get('tg_id'), 3)}, flicker face "
                              f"{_num(m.get('warp_face'), 2)} (source {_num(m.get('warp_face_source'), 2)})" + tag,
                              highlight=False)
            else:
                console.print(f"[yellow]skipped[/] {res.clip}: {res.reason}" + tag, highlight=False)

        def progress(name, frames):
            bar.update(task, description=f"{name} ({frames} frames)")

        return evaluate_pairs(pairs, ev, cache=cache, rank=dist.rank, world=dist.world, on_clip=on_clip,
                              progress=progress)


def _num(v, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return "inf" if v == math.inf else f"{v:.{digits}f}"


def _mean_std(s: dict, digits: int) -> str:
    from fsvideo.metrics.summary import format_mean_std
    if s and s.get("n") and s["mean"] == math.inf:
        return "inf"
    return format_mean_std(s, digits) + (f" ({s['n_inf']} inf)" if s.get("n_inf") else "")


def _write_and_report(results, ev, out_dir: Path, *, no_plot: bool) -> None:
    from rich.table import Table

    from fsvideo.cli.metrics import print_skipped_and_files
    from fsvideo.metrics.results import ResultsCache
    from fsvideo.metrics.temporal import PairResult
    from fsvideo.metrics.temporal_report import write_temporal

    cache = ResultsCache(out_dir / "clips", PairResult)
    for r in results:  # several machines without a shared folder: rank 0 keeps everything
        if r.sha256 and r.settings_key and not cache.path_for(r.sha256, r.settings_key).is_file():
            cache.save(r)
    summary, files = write_temporal(results, out_dir, settings=ev.settings, plot=not no_plot,
                                    extra={"argv": sys.argv[1:]})
    m = summary["metrics"]
    console.print(f"[bold]Edited video metrics[/]: {summary['measured']} of {summary['clips']} pairs measured, "
                  f"identity network {summary['identity_network'] or '-'}", highlight=False)
    t = Table(caption="mean ± std over clips of the per-clip values; source: the same figure of the source "
                      "video (the floor)", caption_justify="left")
    t.add_column("metric", style="bold")
    t.add_column("edited", justify="right", no_wrap=True)
    t.add_column("source", justify="right", no_wrap=True)
    for k, k_src, label, digits in _ROWS:
        t.add_row(label, _mean_std(m[k], digits), _mean_std(m[k_src], digits) if k_src else "")
    console.print(t)
    ok = [r for r in results if r.ok]
    if len(ok) > 1:
        per = Table(title="Per clip", title_justify="left")
        for head in ("clip", "TL-ID", "TG-ID", "flicker face", "floor", "bg PSNR", "jitter", "floor"):
            per.add_column(head, justify="left" if head == "clip" else "right", no_wrap=head != "clip",
                           overflow="fold")
        for r in ok:
            x = r.metrics
            per.add_row(r.clip, _num(x.get("tl_id"), 3), _num(x.get("tg_id"), 3), _num(x.get("warp_face"), 2),
                        _num(x.get("warp_face_source"), 2), _num(x.get("bg_psnr"), 2), _num(x.get("jitter"), 3),
                        _num(x.get("jitter_source"), 3))
        console.print(per)
    print_skipped_and_files(summary["skipped"], files)
    if not ok:
        raise InputError(f"none of the {len(results)} edited videos could be measured (see the skipped list above)",
                         hint="check the paths, and that the sources show a face")
