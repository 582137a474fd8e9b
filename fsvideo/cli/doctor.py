"""``fsvideo doctor``: check an installation before downloading anything."""
from __future__ import annotations

import sys

import click

from fsvideo.cli._console import console


@click.command("doctor")
@click.option("--no-run", is_flag=True, help="Skip the few-frame pipeline run.")
def doctor(no_run: bool) -> None:
    """Device, codecs, detectors, weights, and a few-frame edit with tiny random weights.

    \b
    Example:
      fsvideo doctor
    """
    from rich.table import Table

    from fsvideo.doctor import run_doctor
    with console.status("checking..."):
        report = run_doctor(pipeline=not no_run)
    t = Table(show_header=False, box=None)
    for c in report.checks:
        t.add_row("[green]ok[/]" if c.ok else "[red]FAIL[/]", f"[bold]{c.name}[/]", c.detail)
    console.print(t)
    if not report.ok:
        sys.exit(1)
