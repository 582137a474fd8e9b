"""``fsvideo edit`` and ``fsvideo invert``: thin wrappers over :mod:`fsvideo.pipeline.edit` and
:mod:`fsvideo.pipeline.invert`."""
from __future__ import annotations

import contextlib
import json

import click

from fsvideo.cli import batch, import_torch
from fsvideo.cli._console import console
from fsvideo.cli._face_options import STABILIZE_HELP, StabilizeValue, detector_option
from fsvideo.cli.batch import batch_options
from fsvideo.errors import InputError


def run_options(f):
    """Options shared by edit and invert (models, device, faces, output); defaults from RunOptions."""
    from fsvideo.faces.keyframes import TRACK_MODES
    from fsvideo.pipeline.options import DEFAULTS as D
    from fsvideo.video.encoders import PRESETS, VIDEO_CODECS
    opts = [
        click.option("--config", default=D.config, show_default=True,
                     help="Model config: a name in configs/ or a YAML path."),
        click.option("--generator", default=D.generator,
                     help="Generator weights file or registry name (overrides the config)."),
        click.option("--encoder", default=D.encoder,
                     help="Encoder weights file or registry name (overrides the config)."),
        click.option("--device", default=D.device, show_default=True, help="auto, cpu, cuda, cuda:N."),
        click.option("--precision", default=D.precision, show_default=True,
                     help="auto (fp16 on GPU), fp32, fp16, bf16."),
        click.option("--batch-size", default=D.batch_size, type=int,
                     help="Faces per network call [default: 0 = auto: 4 on a GPU, 1 on a CPU, where larger "
                          "batches measured slower]."),
        click.option("--compile", is_flag=True, default=D.compile,
                     help="torch.compile the encoder and generator: a one-time compile (a minute or more), then "
                          "faster frames (1.2x on a 2-core CPU, README); for long videos."),
        detector_option("Face detector."),
        click.option("--detect-batch", default=D.detect_batch, show_default=True, type=int,
                     help="Frames per detector call (FAN runs the faces of all of them in one batch)."),
        click.option("--detect-every", default=str(D.detect_every), show_default=True, type=str,
                     help="Full face detection every N seconds (1, 0.5s) or frames (12f) and on shot cuts, "
                          "faces followed by --track in between; 0: every frame."),
        click.option("--track", default=D.track, show_default=True, type=click.Choice(TRACK_MODES),
                     help="Between full detections: roi (the detector's own search around each face, "
                          "the same quality) or flow (optical flow, faster, less close to per-frame detection)."),
        click.option("--face", default=D.face, show_default=True, help="Which faces: largest, all, a track id, or several (0,2)."),
        click.option("--on-missing-face", "on_missing", default=D.on_missing, show_default=True,
                     type=click.Choice(["passthrough", "hold", "error"]),
                     help="Frames without a face: keep unedited, hold the last face, or stop."),
        click.option("--stabilize", default=D.stabilize, show_default=True, type=StabilizeValue(),
                     help=STABILIZE_HELP),
        click.option("--align-method", default=D.align_method, show_default=True,
                     type=click.Choice(["fast", "exact"]),
                     help="Face crops: fast (one warp) or exact (the FFHQ procedure, much slower)."),
        click.option("--blend", default=D.blend, show_default=True, type=click.Choice(["alpha", "poisson"])),
        click.option("--mask", default=D.mask, show_default=True, type=click.Choice(["auto", "hull", "parsing"]),
                     help="Blend mask: face parsing when its weights are present (auto), landmark hull, or parsing."),
        click.option("--start", "--from", "start", type=float, default=D.start,
                     help="Start time in seconds (--from: the same; under torchrun, which reads --start as "
                          "its own --start-method, use --from)."),
        click.option("--end", type=float, default=D.end, help="End time in seconds."),
        click.option("--seed", default=D.seed, type=int,
                     help="Generator noise seed, fixed per video [default: 0; a re-edit from latents: the seed they were made with]."),
        click.option("--codec", default=D.codec, show_default=True, type=click.Choice(VIDEO_CODECS),
                     help="Video encoder; auto: h264_nvenc when a GPU encoder opens, else libx264 "
                          "(a .gif or .webm output uses its own)."),
        click.option("--preset", default=D.preset, show_default=True, type=click.Choice(PRESETS),
                     help="x264 speed preset (veryfast: measured 2.6x less CPU than medium for 0.3 dB)."),
        click.option("--crf", default=D.crf, show_default=True, type=int, help="Video quality (lower is better)."),
        click.option("--workers", default=D.workers, type=click.IntRange(min=1),
                     help="Threads for each per-frame stage such as detection [default: from the core budget: "
                          "1 when the networks run on the CPU, the cores but one (at least 2) on a GPU]."),
        click.option("--network-calls", default=D.network_calls, type=click.IntRange(min=1),
                     help="Networks on a CPU: calls in flight at once, each on cores/N torch threads [default: from "
                          "the core budget: one per core up to 4, one on every core above 256 px or with --compile]."),
        click.option("--overwrite", is_flag=True, help="Replace an existing output."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _options(kw: dict, compare: bool = False):
    """RunOptions from the parsed flags (every flag of :func:`run_options` is a RunOptions field)."""
    from fsvideo.pipeline.options import RunOptions
    return RunOptions(**kw, compare=compare)


@contextlib.contextmanager
def _progress(quiet: bool, what: str):
    """A rich progress bar (frames, fps, ETA) yielding a ``progress(done, total)`` callback.

    The bar appears with the first frame, so errors found while loading print alone.
    """
    if quiet:
        yield None
        return
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    cols = [TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
            TextColumn("{task.fields[fps]} fps"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    bar = Progress(*cols, console=console)
    state = {}

    def cb(done: int, total: int | None) -> None:
        if "task" not in state:
            bar.start()
            state["task"] = bar.add_task(what, total=None, fps="-")
            state["t0"] = time.perf_counter()
        dt = time.perf_counter() - state["t0"]
        bar.update(state["task"], completed=done, total=max(total or 0, done) or None,
                   fps=f"{done / dt:.1f}" if dt > 0 else "-")
    try:
        yield cb
    finally:
        bar.stop()


def _report(summary, quiet: bool, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=1))
        return
    if quiet:
        return
    from rich.table import Table
    t = Table(show_header=False, box=None, pad_edge=False)
    rows = [("output", summary.output), ("latents", summary.latents), ("edits", ", ".join(summary.edits) or None),
            ("frames", summary.frames), ("faces edited", summary.faces_edited),
            ("frames without a face", summary.frames_without_face),
            ("time", f"{summary.seconds:.1f} s ({summary.fps:.2f} frames/s)"),
            ("device / detector", f"{summary.device} / {summary.detector}"),
            ("video encoder", summary.encoder or None)]
    for k, v in rows:
        if v is not None:
            t.add_row(f"[dim]{k}[/]", str(v))
    console.print(t)


@click.command("edit")
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True)
@click.option("--attr", "attrs", multiple=True,
              help="Attribute to edit: smile, makeup, eyeglasses, sefa:N, or a fitted direction name. Repeatable.")
@click.option("--direction", "directions", multiple=True, type=click.Path(dir_okay=False),
              help="A direction file (.npy: (1, 9216), (18, 512) or (512,)). Repeatable.")
@click.option("--strength", "strengths", multiple=True, type=float,
              help="Strength of each --attr, then each --direction, in order (default 1). Negative undoes.")
@click.option("-o", "--output", default=None, type=batch.OutputFile(), help="Output file.")
@click.option("--latents", default=None, type=click.Path(),
              help="Re-edit from latents made by `fsvideo invert` (no detection or encoding): a latents file, "
                   "or a folder holding INPUT.latents for each input (`fsvideo invert INPUTS --out-dir FOLDER`).")
@click.option("--compare", is_flag=True, help="Write original | reconstruction | edit side by side.")
@run_options
@batch_options
def edit(inputs, attrs, directions, strengths, output, latents, compare, quiet, as_json, out_dir, split_time,
         split_context, **kw):
    """Edit the faces of a video or image.

    \b
    Examples:
      fsvideo edit talk.mp4 --attr smile --strength 2
      fsvideo edit talk.mp4 --attr smile --strength 1.5 --attr makeup --strength -1 --compare
      fsvideo edit talk.mp4 --direction my_dir.npy --strength 0.5 -o out.mp4
      fsvideo edit face.jpg --attr eyeglasses
      fsvideo edit talk.mp4 --latents talk.latents --attr smile --strength 3
      fsvideo edit clips/ 'more/*.mov' --out-dir edited/ --attr smile     # many videos, restartable
      fsvideo edit clips/ --latents inverted/ --out-dir edited/ --attr smile   # re-edit `fsvideo invert clips/ --out-dir inverted/`
      torchrun --nproc-per-node 4 -m fsvideo edit clips/ --out-dir edited/ --attr smile

    The strength scales a unit W+ direction by the config's edit_step (15, the official convention):
    w~ = w + 15 s d.
    """
    import_torch()
    from fsvideo.edits.requests import EditRequest
    from fsvideo.pipeline.edit import edit_video
    names = list(attrs) + list(directions)
    if not names:
        raise InputError("no edit given", hint="pass --attr smile --strength 2 (or --direction FILE.npy)")
    if strengths and len(strengths) != len(names):
        raise InputError(f"{len(strengths)} --strength values for {len(names)} edits",
                         hint="give one --strength per --attr/--direction, in the same order, or none (1 each)")
    reqs = [EditRequest(n, s) for n, s in zip(names, strengths or [1.0] * len(names))]
    if batch.is_batch(inputs, out_dir) or split_time:
        return batch.run("edit", inputs, out_dir, edits=reqs, options=_options(kw, compare), split_time=split_time,
                         split_context=split_context, quiet=quiet, as_json=as_json, latents=latents,
                         single_only={"-o/--output": output})
    (input_path,) = inputs
    with _progress(quiet or as_json, "editing") as cb:
        summary = edit_video(input_path, output, edits=reqs, options=_options(kw, compare), latents=latents,
                             progress=cb)
    _report(summary, quiet, as_json)


@click.command("invert")
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True)
@click.option("-o", "--output", default=None, type=batch.OutputFile(),
              help="Reconstruction video (default INPUT.inversion.EXT).")
@click.option("--latents-out", default=None, type=batch.OutputFile(),
              help="Latents file (default INPUT.latents).")
@run_options
@batch_options
def invert(inputs, output, latents_out, quiet, as_json, out_dir, split_time, split_context, **kw):
    """Reconstruct the faces of a video with G(w, F) and store the per-frame latents.

    \b
    Example:
      fsvideo invert talk.mp4                    # talk.inversion.mp4 + talk.latents
      fsvideo edit talk.mp4 --latents talk.latents --attr smile --strength 2
      fsvideo invert clips/ --out-dir inverted/     # many videos: clip.inversion.mp4 + clip.latents each
      fsvideo edit clips/ --latents inverted/ --out-dir edited/ --attr smile   # re-edit them all
      torchrun --nproc-per-node 4 -m fsvideo invert long.mp4 --out-dir inverted/ --split-time
    """
    import_torch()
    from fsvideo.pipeline.invert import invert_video
    if batch.is_batch(inputs, out_dir) or split_time:
        return batch.run("invert", inputs, out_dir, options=_options(kw), split_time=split_time,
                         split_context=split_context, quiet=quiet, as_json=as_json,
                         single_only={"-o/--output": output, "--latents-out": latents_out})
    (input_path,) = inputs
    with _progress(quiet or as_json, "inverting") as cb:
        summary = invert_video(input_path, output, latents_out=latents_out, options=_options(kw), progress=cb)
    _report(summary, quiet, as_json)
