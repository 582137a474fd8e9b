"""``fsvideo metrics``: inversion quality (Table 3) and identity consistency (Eq. 9, Fig. 9) of clips."""
from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import click

from fsvideo.cli import import_torch
from fsvideo.cli._console import console
from fsvideo.cli._face_options import detector_option
from fsvideo.errors import InputError, OutputError, WeightsError

log = logging.getLogger(__name__)

_TABLE_METRICS = (("ssim", "SSIM ↑"), ("psnr", "PSNR ↑"), ("mse", "MSE ↓"), ("lpips", "LPIPS ↓"), ("id", "ID ↑"))


def _weights_stamp(ref: str) -> dict:
    """What identifies a weights file in the cache key: registry name + recorded sha256, or file stats."""
    from fsvideo import weights
    p = Path(ref)
    if weights.is_path_ref(ref) and p.is_file():
        st = p.stat()
        return {"file": str(p.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        rec = weights.manifest_record(ref) or {}
        return {"name": ref, "sha256": rec.get("sha256")}
    except Exception:  # noqa: BLE001 - an unknown name fails later with a clear message
        return {"name": ref}


# what a run writes into --out, by its JSON document: (the document's "tool", the files it replaces)
_RESULTS = {"metrics.json": ("fsvideo metrics", ("metrics.csv", "metrics.json", "ic_boxplot.png", "ic_boxplot.svg")),
            "temporal.json": ("fsvideo metrics --edited", ("temporal.csv", "temporal_frames.csv", "temporal.json"))}


def _check_out_dir(out: Path, network: str, name: str = "metrics.json") -> None:
    """Refuse an --out folder whose results (``name``) were measured with another identity network, or
    that holds result files an earlier run of this command did not write (they would be replaced)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file", hint="pass a folder (it is created if needed)")
    tool, files = _RESULTS[name]
    prev = out / name
    doc = None
    if prev.is_file():
        try:
            doc = json.loads(prev.read_text())
        except (OSError, ValueError):
            doc = None
        if not (isinstance(doc, dict) and doc.get("tool") == tool):
            raise OutputError(f"{prev} is not a result of `{tool}` (or it is damaged); this run would replace it",
                              hint="choose another --out folder, or remove the file")
    elif not (out / "clips").is_dir():      # no earlier run here (its cache would be): other files are the user's
        present = [f for f in files if (out / f).exists()]
        if present:
            raise OutputError(f"{out} holds {', '.join(present)}, not written by `{tool}`; this run would replace "
                              f"{'it' if len(present) == 1 else 'them'}", hint="choose another --out folder")
    if doc is not None:
        old = doc.get("identity_network")
        if old and old != network:
            raise OutputError(f"{prev} holds results measured with the identity network {old}; this run measures "
                              f"with {network}, and numbers from different networks are never mixed",
                              hint=f"use another --out folder, or --identity matching {old}")


def _fmt(s: dict, digits: int) -> str:
    from fsvideo.metrics.summary import format_mean_std
    return format_mean_std(s, digits)


def _print_summary(summary: dict, *, label: str, source_only: bool, out_files: list[Path]) -> None:
    from rich.table import Table

    net = summary.get("identity_network") or "-"
    m = summary["metrics"]
    digits = {"psnr": 2}
    console.print(f"[bold]Video inversion metrics[/]: {summary['measured']} of {summary['clips']} clips measured, "
                  f"identity network {net}", highlight=False)
    t = Table(caption="mean ± std over clips of the per-clip means", caption_justify="left")
    t.add_column("metric", style="bold")
    t.add_column("source", justify="right", no_wrap=True)
    if not source_only:
        t.add_column(label, justify="right", no_wrap=True)
        for k, head in _TABLE_METRICS:
            t.add_row(head, "-", _fmt(m[k], digits.get(k, 3)))
        t.add_row("IC ↑ (Eq. 9)", _fmt(m["ic_source"], 3), _fmt(m["ic_inversion"], 3))
    else:
        t.add_row("IC ↑ (Eq. 9)", _fmt(m["ic_source"], 3))
    console.print(t)
    console.print(f"{summary['frames_used']} frames with a face ({summary['faces_found']} faces found in "
                  f"{summary['frames_sampled']} sampled frames)", highlight=False)

    cols = [("ic_source", "IC src")]
    if not source_only:
        cols += [("ic_inversion", "IC inv"), ("ssim", "SSIM"), ("psnr", "PSNR"), ("lpips", "LPIPS"), ("id", "ID")]
    for field, title in (("by_actor", "actor"), ("by_emotion", "emotion")):
        groups = summary.get(field) or {}
        if not groups:
            continue
        g = Table(title=f"By RAVDESS {title} (means over clips)", title_justify="left")
        g.add_column(title, style="bold")
        g.add_column("clips", justify="right")
        for _, head in cols:
            g.add_column(head, justify="right", no_wrap=True)
        for name, row in groups.items():
            cells = [str(name), str(row["clips"])]
            for k, _ in cols:
                st = row["metrics"][k]
                cells.append(f"{st['mean']:.{digits.get(k, 3)}f}" if st["n"] else "-")
            g.add_row(*cells)
        console.print(g)

    print_skipped_and_files(summary["skipped"], out_files)


def print_skipped_and_files(skipped: list[dict], out_files: list[Path]) -> None:
    """The table of skipped clips (``{clip, reason}``) and the written files."""
    from rich.table import Table
    if skipped:
        s = Table(title=f"Skipped ({len(skipped)})", title_justify="left", title_style="yellow")
        s.add_column("clip", style="yellow")
        s.add_column("why")
        for item in skipped:
            s.add_row(item["clip"], item["reason"] or "")
        console.print(s)
    for f in out_files:
        console.print(f"wrote {f}", highlight=False)


@click.command("metrics")
@click.argument("clips", nargs=-1, metavar="[CLIPS]...")
@click.option("-o", "--out", "out", type=click.Path(file_okay=False), default="fsvideo-metrics", show_default=True,
              help="Results folder: metrics.csv, metrics.json, ic_boxplot.png/.svg and the per-clip cache clips/.")
@click.option("--sample", type=click.IntRange(min=1), default=None, metavar="N",
              help="Measure N clips drawn at random from CLIPS (the paper: 120 RAVDESS videos).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --sample.")
@click.option("--source-only", is_flag=True,
              help="Only the identity consistency of the source clips (no inversion, no model weights needed).")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True, metavar="K",
              help="Use every K-th frame.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, metavar="M",
              help="At most M sampled frames per clip (default: the whole clip).")
@click.option("--identity", "identity", default="auto", show_default=True, metavar="auto|arcface|dlib|FILE",
              help="Identity network R: ArcFace (the paper's; `fsvideo weights download arcface-r50`) or dlib's "
                   "ResNet descriptor (offline). auto takes ArcFace when its weights are present.")
@detector_option("Face detector.")
@click.option("-c", "--config", "config", default="ffhq", show_default=True, metavar="NAME|FILE",
              help="Model config naming the generator and encoder to invert with.")
@click.option("--generator", default=None, metavar="NAME|FILE", help="Generator weights (overrides the config).")
@click.option("--encoder", default=None, metavar="NAME|FILE", help="Encoder weights (overrides the config).")
@click.option("--label", default=None, help="Name of the inversion method in the table and the plot "
                                            "(default: the encoder's name).")
@click.option("--size", type=click.IntRange(min=16), default=None, metavar="PX",
              help="Crop side the metrics are computed on (default: the crop size the model inverts, e.g. 1024; "
                   "256 with --source-only).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Faces per batch.")
@click.option("--noise-seed", type=int, default=0, show_default=True, help="Seed of the fixed generator noise.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", default="fp32", show_default=True, type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
              help="Precision of the inversion networks.")
@click.option("--no-plot", is_flag=True, help="Do not draw the box plot.")
@click.option("--edited", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Edited video to measure against its source (temporal metrics; repeatable) instead of CLIPS.")
@click.option("--source", "sources", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Source of each --edited, in order (one for all is fine). Default: found by name.")
@click.option("--edited-dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Every video in DIR made by `fsvideo edit` (<source>.<edit>.<ext>), matched with its source.")
@click.option("--source-dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Where the sources of the edited videos are (default: beside each edited video).")
@click.option("--flow", type=click.Choice(["dis", "farneback"]), default="dis", show_default=True,
              help="Optical flow of the flicker (warping error) metric.")
@click.option("--flow-size", "flow_max_side", type=click.IntRange(min=32), default=512, show_default=True,
              metavar="PX", help="Long side frames are shrunk to for the flicker metric.")
@click.option("--dilate", type=click.FloatRange(min=0), default=0.1, show_default=True,
              help="The face region is grown by this fraction of the face size (background = the rest).")
def metrics(clips, out, sample, seed, source_only, every, max_frames, identity, detector, config, generator, encoder,
            label, size, batch_size, noise_seed, device, precision, no_plot, edited, sources, edited_dir, source_dir,
            flow, flow_max_side, dilate) -> None:
    """Measure video inversion: SSIM, PSNR, MSE, LPIPS, ID (Table 3) and identity consistency IC (Eq. 9).

    CLIPS are video files or folders (searched recursively).  RAVDESS names
    (MM-VC-EE-II-SS-RR-AA.mp4) are parsed for per-actor and per-emotion breakdowns.  For each
    clip the largest face of every used frame is aligned (FFHQ), inverted, and compared on the
    aligned crops; IC compares every frame's identity with the first frame's.

    \b
    With --edited / --edited-dir it measures edited videos against their sources instead: STIT's
    TL-ID and TG-ID, identity to frame 0, flicker (flow-warping error in and outside the face,
    with the source as the floor), background PSNR, landmark jitter; per-frame curves go to
    temporal_frames.csv and temporal_curves/.

    \b
    Examples:
      fsvideo metrics ravdess/ --sample 120 --seed 0 --out eval/fse
      fsvideo metrics talk.mp4 --source-only --every 10
      torchrun --nproc-per-node 4 -m fsvideo metrics ravdess/ --sample 120 --out eval/fse
      fsvideo metrics --edited talk.smile+2.mp4 --source talk.mp4 --out eval/smile
      fsvideo metrics --edited-dir edits/ --source-dir videos/ --out eval/edits

    Results already measured with the same settings (cached by clip content in OUT/clips/) are
    reused, so an interrupted run resumes.  Clips that cannot be measured (unreadable, no face)
    are reported and skipped.
    """
    import_torch()
    if edited or sources or edited_dir or source_dir:  # temporal metrics of edited videos
        if clips or source_only or every != 1:
            raise InputError("CLIPS, --source-only and --every do not go with --edited/--edited-dir",
                             hint="measure edited videos (all frames, in order) or inversions of CLIPS, one per run")
        from fsvideo.cli.metrics_temporal import run_temporal
        return run_temporal(edited=edited, sources=sources, edited_dir=edited_dir, source_dir=source_dir, out=out,
                            sample=sample, seed=seed, max_frames=max_frames, identity=identity, detector=detector,
                            size=size, batch_size=batch_size, device=device, flow=flow, flow_max_side=flow_max_side,
                            dilate=dilate, no_plot=no_plot)
    from fsvideo.metrics.distributed import Distributed
    from fsvideo.metrics.evaluate import find_clips, sample_clips
    from fsvideo.metrics.ravdess import one_file_per_recording

    out_dir = Path(out)
    found, problems = find_clips(clips)
    found, copies = one_file_per_recording(found)      # RAVDESS 01 / 02: one recording, measured once
    chosen = sample_clips(found, sample, seed)
    if not chosen and not problems:
        raise InputError("no clips given", hint="pass video files or folders holding videos")

    with Distributed() as dist:
        main = dist.is_main
        components = _build(dist, source_only=source_only, identity=identity, detector=detector, config=config,
                            generator=generator, encoder=encoder, size=size, batch_size=batch_size,
                            noise_seed=noise_seed, device=device, precision=precision, every=every,
                            max_frames=max_frames)
        evaluator, method_label = components
        label = label or method_label
        _check_out_dir(out_dir, evaluator.identity.name)
        if main:
            head = f"measuring {len(chosen)} clip{'s' if len(chosen) != 1 else ''}"
            if copies:
                head += f", {len(chosen)} distinct recordings"
            if sample is not None and len(found) > len(chosen):
                head += f" (sampled from {len(found)} with seed {seed})"
            if copies:
                head += (f"; {len(copies)} video-only cop{'ies' if len(copies) != 1 else 'y'} of full-AV "
                         f"recordings left out")
            if dist.enabled:
                head += f" on {dist.world} processes"
            console.print(f"{head}; identity network: {evaluator.identity.name}; detector: "
                          f"{evaluator.settings.detector}" + ("" if source_only else f"; inversion: {label}"),
                          highlight=False)
        out_dir.mkdir(parents=True, exist_ok=True)
        mine = _run(dist, chosen, evaluator, out_dir)
        merged = dist.gather(mine)
    if not main:
        return
    results = problems + [r for _, r in merged]
    _write_and_report(results, evaluator, out_dir, label=label, source_only=source_only, no_plot=no_plot,
                      inputs={"files_found": len(found) + len(copies), "distinct_recordings": len(found),
                              "copies_left_out": [str(c) for c, _ in copies], "sampled": len(chosen)})


def _build(dist, *, source_only, identity, detector, config, generator, encoder, size, batch_size, noise_seed,
           device, precision, every, max_frames):
    from fsvideo.distributed import device_for
    from fsvideo.faces import DEFAULT_DETECT_SIDE, make_detector
    from fsvideo.metrics.evaluate import ClipEvaluator
    from fsvideo.metrics.identity import load_identity
    from fsvideo.utils import pick_device, pick_dtype

    dev = device_for(pick_device(device), dist.info)
    R = load_identity(identity, device=dev)
    det = make_detector(detector, device=dev, max_side=DEFAULT_DETECT_SIDE)  # as invert detects
    inverter, label = None, "source"
    if not source_only:
        from fsvideo.config import ModelConfig, load_config, resolve_config_path
        from fsvideo.metrics.inversion import FeatureStyleInverter
        from fsvideo.pipeline.jobs import load_model
        cfg = load_config(resolve_config_path(config), ModelConfig, "model")
        gref, eref = generator or cfg.generator, encoder or cfg.encoder
        try:
            model = load_model(cfg, generator=generator, encoder=encoder, device=dev)
        except WeightsError as e:
            raise WeightsError(e.message, hint=(e.hint + "; " if e.hint else "")
                               + "or measure only the source clips with --source-only") from e
        inverter = FeatureStyleInverter(model, device=dev, dtype=pick_dtype(dev, precision), batch_size=batch_size,
                                        noise_seed=noise_seed,
                                        info={"generator": _weights_stamp(gref), "encoder": _weights_stamp(eref)})
        label = Path(eref).stem if Path(eref).suffix else eref
    lp = None
    if inverter is not None:
        from fsvideo.metrics.perceptual import LPIPS
        lp = LPIPS("alex", device=dev, batch_size=batch_size)
    ev = ClipEvaluator(det, R, inverter, lpips=lp, every=every, max_frames=max_frames, size=size,
                       batch_size=batch_size)
    return ev, label


def _run(dist, chosen, evaluator, out_dir: Path):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fsvideo.metrics.evaluate import evaluate_clips, shard
    from fsvideo.metrics.results import ResultsCache

    cache = ResultsCache(out_dir / "clips")
    n_mine = len(shard(len(chosen), dist.rank, dist.world))
    if not dist.is_main:
        return evaluate_clips(chosen, evaluator, cache=cache, rank=dist.rank, world=dist.world)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("clips", total=n_mine)

        def on_clip(i, res, cached):
            bar.advance(task)
            if res.ok:
                ic = res.metrics.get("ic_source")
                extra = "" if res.metrics.get("lpips") is None else \
                    f", LPIPS {res.metrics['lpips']:.3f}, ID {res.metrics['id']:.3f}"
                ic_s = "-" if ic is None or (isinstance(ic, float) and math.isnan(ic)) else f"{ic:.3f}"
                console.print(f"[green]ok[/] {res.clip}: {res.frames_used}/{res.frames_sampled} frames, "
                              f"IC source {ic_s}{extra}" + (" (cached)" if cached else ""), highlight=False)
            else:
                console.print(f"[yellow]skipped[/] {res.clip}: {res.reason}" + (" (cached)" if cached else ""),
                              highlight=False)

        def progress(name, frames):
            bar.update(task, description=f"{name} ({frames} frames)")

        return evaluate_clips(chosen, evaluator, cache=cache, rank=dist.rank, world=dist.world,
                              on_clip=on_clip, progress=progress)


def _write_and_report(results, evaluator, out_dir: Path, *, label: str, source_only: bool, no_plot: bool,
                      inputs: dict) -> None:
    from fsvideo.metrics.plots import ic_boxplot
    from fsvideo.metrics.results import ResultsCache, write_csv, write_json
    from fsvideo.metrics.summary import json_safe, summarize

    cache = ResultsCache(out_dir / "clips")
    for r in results:  # several machines without a shared folder: rank 0 keeps everything
        if r.sha256 and r.settings_key and not cache.path_for(r.sha256, r.settings_key).is_file():
            cache.save(r)
    summary = summarize(results)
    files = [write_csv(results, out_dir / "metrics.csv"),
             write_json(results, out_dir / "metrics.json", settings=evaluator.settings, summary=json_safe(summary),
                        extra={"label": label, "argv": sys.argv[1:], "inputs": inputs})]
    ok = [r for r in results if r.ok]
    if ok and not no_plot:
        groups = {"source": [r.metrics.get("ic_source") for r in ok]}
        if not source_only:
            groups[label] = [r.metrics.get("ic_inversion") for r in ok]
        files += ic_boxplot(groups, out_dir / "ic_boxplot.png", svg=out_dir / "ic_boxplot.svg",
                            ylabel=f"identity consistency ({evaluator.identity.name})")
    _print_summary(summary, label=label, source_only=source_only, out_files=files)
    if not ok:
        raise InputError(f"none of the {len(results)} clips could be measured (see the skipped list above)",
                         hint="check the paths, and that the clips show a face")
