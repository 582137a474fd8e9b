"""``fsvideo weights``: list, download, import, verify and locate model weights."""
from __future__ import annotations

import contextlib

import click
from rich.markup import escape

from fsvideo.cli._console import console, err_console
from fsvideo.errors import FsvideoError, WeightsError


def _size(n: int | None, approx: str = "") -> str:
    from fsvideo.weights import human_size
    return (approx or "?") if n is None else human_size(n)


def _names_arg(ctx, param, value):
    from fsvideo import weights as W
    for name in value:
        W.entry(name)  # raises with the list of known names
    return value


@click.group("weights")
def weights() -> None:
    """List, download, import and verify model weights.

    \b
    Files are cached in $FSVIDEO_HOME (default: the platform cache dir).
    Examples:
      fsvideo weights list
      fsvideo weights download stylegan2-ffhq fse-ffhq direction-smile
      fsvideo weights import arcface-r50 ~/Downloads/backbone.pth
      fsvideo weights verify
    """


@weights.command("list")
def list_cmd() -> None:
    """Every known weights file: what it is, whether it is present and verified."""
    from rich.table import Table

    from fsvideo import weights as W
    table = Table(title=f"weights in {W.weights_home()}", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("what", ratio=2)
    table.add_column("present", no_wrap=True)
    table.add_column("verified", no_wrap=True)
    table.add_column("size", ratio=1)
    table.add_column("path", ratio=2, overflow="fold")
    for row in W.entries_status():
        verified = {"yes": "[green]yes[/]", "unverified": "[yellow]unverified[/]",
                    "converted": "[yellow]converted[/]"}.get(row.verified, "")
        table.add_row(row.name, row.what, "[green]yes[/]" if row.present else "[dim]no[/]", verified,
                      _size(row.size, row.approx_size), str(row.path) if row.path else "")
    console.print(table)


@weights.command("download")
@click.argument("names", nargs=-1, required=True, callback=_names_arg)
@click.option("--force", is_flag=True, help="Download again even if the file is present.")
def download_cmd(names: tuple[str, ...], force: bool) -> None:
    """Download NAMES into the cache (resumes, checks sha256, renames atomically)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from fsvideo import weights as W
    failed: list[tuple[str, FsvideoError]] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=console, transient=False) as bar:
        for name in names:
            present, again = W.path_of(name), force
            if present is not None and not force:
                check = W.verify([name], load=False)[0]       # re-hashed: a damaged file is fetched again
                if check.ok:
                    bar.console.print(f"{name}: already present at {escape(str(present))} ({check.status})")
                    continue
                bar.console.print(f"{name}: the file at {escape(str(present))} is {check.status} "
                                  f"({escape(check.detail.split(';')[0])}); downloading it again")
                again = True
            task = bar.add_task(name, total=None)

            def cb(done: int, total: int | None, task=task) -> None:
                bar.update(task, completed=done, total=total)

            try:
                path = W.download(name, progress=cb, force=again)
            except FsvideoError as e:
                bar.update(task, description=f"[red]{name} failed[/]")
                failed.append((name, e))
                continue
            rec = W.manifest_record(name) or {}
            tag = "[green]verified[/]" if rec.get("verified") else "[yellow]unverified (no published checksum)[/]"
            bar.console.print(f"{name}: {path} {tag}")
    for _name, e in failed:
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
    if failed:
        raise click.exceptions.Exit(2)


@weights.command("import")
@click.argument("name", callback=lambda c, p, v: _names_arg(c, p, (v,))[0])
@click.argument("file", type=click.Path(dir_okay=False))
def import_cmd(name: str, file: str) -> None:
    """Adopt FILE (got elsewhere) as weights NAME: test-loaded, converted if needed, checksum recorded."""
    from fsvideo import weights as W
    with console.status(f"checking {file}..."):
        res = W.import_file(name, file)
    for w in res.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(str(w))}", highlight=False, soft_wrap=True)
    tag = "verified" if res.verified else "unverified"
    console.print(f"{name}: imported to {res.path} ({tag}, sha256 {res.sha256})", highlight=False)


@weights.command("verify")
@click.argument("names", nargs=-1, callback=_names_arg)
@click.option("--no-load", is_flag=True, help="Only check checksums; do not test-load the networks.")
def verify_cmd(names: tuple[str, ...], no_load: bool) -> None:
    """Re-hash and test-load cached weights (all present ones, or NAMES)."""
    from fsvideo import weights as W
    with console.status("verifying..."):
        results = W.verify(list(names) or None, load=not no_load)
    if not results:
        console.print("no weights are present; see `fsvideo weights list`")
        return
    colour = {"verified": "green", "unverified": "yellow", "missing": "red", "corrupt": "red", "broken": "red"}
    for r in results:
        console.print(f"[{colour[r.status]}]{r.status:>10}[/] {r.name}: {r.detail}", highlight=False, soft_wrap=True)
    bad = [r.name for r in results if not r.ok]
    if bad:
        raise WeightsError(f"{len(bad)} weights file(s) failed verification: {', '.join(bad)}",
                           hint=f"run `fsvideo weights download {' '.join(bad)} --force`")


@weights.command("path")
@click.argument("name", callback=lambda c, p, v: _names_arg(c, p, (v,))[0])
def path_cmd(name: str) -> None:
    """Print the cached file of NAME (error if absent)."""
    from fsvideo import weights as W
    click.echo(str(W.require(name)))


@contextlib.contextmanager
def first_run_downloads():
    """The weights store's first-run downloads, rendered on the console.

    Before a file is fetched: one line saying what, how big, from where, and its licence; then a
    progress bar (or, when another live display is running, a line every 10 %), closed when the file
    is in the cache, so the command's own progress display can start.
    """
    from rich.errors import LiveError
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from fsvideo import weights as W
    state: dict = {"bar": None, "task": None, "shown": -1}

    def stop() -> None:
        if state["bar"] is not None:
            state["bar"].stop()
        state.update(bar=None, task=None, shown=-1)

    def announce(e, size: str) -> None:
        stop()
        err_console.print(f"fetching `{e.name}` ({size}): {e.what}, from {e.sources[0].describe()}; "
                          f"licence: {e.licence} ({e.licence_url})", highlight=False, soft_wrap=True)
        bar = Progress(TextColumn(e.name), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                       console=err_console, transient=False)
        try:
            bar.start()
        except LiveError:           # another progress display is running: print lines instead
            return
        state.update(bar=bar, task=bar.add_task(e.name, total=None))

    def progress(name: str, done: int, total: int | None) -> None:
        if state["bar"] is not None:
            state["bar"].update(state["task"], completed=done, total=total)
        elif total:
            pct = int(100 * done / total) // 10 * 10
            if pct > state["shown"]:
                state["shown"] = pct
                err_console.print(f"{name}: {pct} % of {_size(total)}", highlight=False)

    def finished(name: str, path) -> None:
        stop()
        if path is not None:
            rec = W.manifest_record(name) or {}
            tag = "verified" if rec.get("verified") else "unverified (no published checksum)"
            err_console.print(f"{name}: {path} ({tag})", highlight=False, soft_wrap=True)

    try:
        with W.first_run_downloads(announce=announce, progress=progress, finished=finished):
            yield
    finally:
        stop()
