"""``fsvideo edit|invert INPUT... --out-dir DIR``: many inputs, restartable, torchrun-aware.

The commands in :mod:`fsvideo.cli.edit` hand over here when given several inputs, a folder, a glob
or ``--out-dir``; the work is :func:`fsvideo.pipeline.batch.run_batch`.
"""
from __future__ import annotations

import glob
import json
import os
import sys

import click

from fsvideo.cli._console import console
from fsvideo.errors import InputError


class OutputFile(click.Path):
    """``-o``/``--latents-out`` of edit and invert: a file name; an existing folder is refused with the
    way to write into it (``--out-dir``)."""

    def __init__(self):
        super().__init__(dir_okay=True)

    def convert(self, value, param, ctx):
        if os.path.isdir(value):
            self.fail(f"{value} is a folder: give a file name, or --out-dir {value} to write there an output "
                      "named after each input", param, ctx)
        return super().convert(value, param, ctx)


def batch_options(f):
    """``--out-dir``, ``--split-time`` and ``--split-context`` (added to edit and invert)."""
    opts = [
        click.option("--out-dir", default=None, type=click.Path(file_okay=False),
                     help="Write one output per input here (several inputs, folders, globs); restartable."),
        click.option("--split-time", is_flag=True,
                     help="Under torchrun: cut each video in time across the processes and join the spans."),
        click.option("--split-context", default=2.0, show_default=True, type=float,
                     help="With --split-time: seconds each process reads beyond its span (stabiliser context; "
                          "with --latents at most this much before it, for the blend masks)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def is_batch(inputs: tuple[str, ...], out_dir: str | None) -> bool:
    """Batch mode: --out-dir, several inputs, a folder, a glob pattern, or several torchrun processes."""
    from fsvideo.distributed import env_info
    return out_dir is not None or len(inputs) != 1 or os.path.isdir(inputs[0]) or (
        glob.has_magic(inputs[0]) and not os.path.exists(inputs[0])) or env_info().enabled


def _why_batch(inputs: tuple[str, ...]) -> str:
    """What made this a batch (the reason :func:`is_batch` gave), for messages naming the user's input."""
    if len(inputs) != 1:
        return f"{len(inputs)} inputs were given"
    if os.path.isdir(inputs[0]):
        return f"{inputs[0]} is a folder"
    if glob.has_magic(inputs[0]) and not os.path.exists(inputs[0]):
        return f"{inputs[0]} is a pattern (no file has that name)"
    return "several processes run it (torchrun)"


def run(kind: str, inputs, out_dir, *, edits=(), options, split_time: bool, split_context: float,
        quiet: bool, as_json: bool, single_only: dict, latents: str | None = None) -> None:
    """Run the batch, print a line per input (unless quiet / JSON) and the closing table on rank 0."""
    from fsvideo.distributed import env_info
    from fsvideo.pipeline.batch import BatchJob, run_batch
    given = [k for k, v in single_only.items() if v]
    if given:
        raise InputError(f"{given[0]} names one output, but {_why_batch(inputs)}",
                         hint="use --out-dir DIR (outputs are named as a single run names them)")
    if out_dir is None:
        raise InputError(f"{_why_batch(inputs)}: a batch needs --out-dir", hint="add --out-dir edited/")
    env = env_info()
    tag = f"[dim]rank {env.rank}[/] " if env.enabled else ""

    def on_row(r) -> None:
        if quiet or as_json:
            return
        style = {"done": "green", "skipped": "dim", "failed": "red"}[r.status]
        what = r.error if r.status == "failed" else f"{r.frames} frames, {r.seconds:.1f} s"
        console.print(f"{tag}[{style}]{r.status:>7}[/] {r.input}: {what}", highlight=False, soft_wrap=True)

    job = BatchJob(kind, tuple(edits), options, latents=latents)
    result = run_batch(list(inputs), out_dir, job, split_time=split_time, context_s=split_context, on_row=on_row)
    if not env.is_main:
        return
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=1))
    elif not quiet:
        _table(result)
    failed = result.counts["failed"]
    if failed:
        sys.exit(1)


def _table(result) -> None:
    from rich.table import Table
    t = Table(title=f"{len(result.rows)} inputs on {result.world} process(es), {result.seconds:.1f} s "
                    f"-> {result.out_dir}", title_justify="left")
    for col, just in (("input", "left"), ("frames", "right"), ("faces edited", "right"), ("time", "right"),
                      ("status", "left")):
        t.add_column(col, justify=just)
    for r in result.rows:
        status = r.status if r.status != "failed" else f"[red]failed[/]: {r.error}"
        t.add_row(os.path.basename(r.input) or r.input, str(r.frames),
                  "-" if r.faces_edited is None else str(r.faces_edited), f"{r.seconds:.1f} s",
                  status)
    console.print(t)
    c = result.counts
    console.print(f"{c['done']} done, {c['skipped']} skipped (finished before), {c['failed']} failed")
