"""The ``fsvideo`` command line: a thin layer over the library.

Each command lives in its own module under ``fsvideo/cli/`` and is imported only when it runs,
so ``fsvideo --help`` stays fast.  The CLI owns the console: errors from the library
(:class:`fsvideo.errors.FsvideoError`) become one red line and exit code 2, Ctrl-C exit code 130,
SIGTERM / SIGHUP 143 / 129 after the same clean stop (no temporary output left).
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sys

import click

from fsvideo import __version__
from fsvideo.errors import FsvideoError

# command name -> (module, attribute, one-line help).  Modules are imported lazily.
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "weights": ("fsvideo.cli.weights", "weights", "List, download, import and verify model weights."),
    "edit": ("fsvideo.cli.edit", "edit", "Edit the faces of a video or image (Eq. 1)."),
    "invert": ("fsvideo.cli.edit", "invert", "Reconstruction video + per-frame latents of a video."),
    "doctor": ("fsvideo.cli.doctor", "doctor", "Check the installation: device, codecs, detectors, weights, a test run."),
    "train": ("fsvideo.cli.train", "train", "Train a Feature-Style encoder for a generator (Eqs. 2-8)."),
    "directions": ("fsvideo.cli.directions", "directions", "Fit InterFaceGAN directions, export SeFa directions."),
    "metrics": ("fsvideo.cli.metrics", "metrics",
                "Inversion quality and identity consistency (Eq. 9) of clips; temporal quality of edited videos."),
    "align": ("fsvideo.cli.align", "align", "FFHQ-aligned face crops (PNG) + transforms JSON from images or a video."),
    "studio": ("fsvideo.cli.studio", "studio", "Local web page: scrub a video, try edits on real frames, export."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(_COMMANDS)

    def get_command(self, ctx, name):
        if name not in _COMMANDS:
            return None
        mod, attr, _ = _COMMANDS[name]
        return getattr(importlib.import_module(mod), attr)

    def format_commands(self, ctx, formatter):  # short help without importing every module
        rows = [(n, _COMMANDS[n][2]) for n in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _configure_logging(verbose: int) -> None:
    from rich.logging import RichHandler

    from fsvideo.cli._console import console
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=console, show_path=False)])


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fsvideo")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("--offline", is_flag=True, help="Never download: missing weights are an error naming the command "
              "that gets them (also FSVIDEO_OFFLINE=1).")
@click.pass_context
def cli(ctx: click.Context, verbose: int, offline: bool) -> None:
    """Edit faces in real videos with the Feature-Style encoder and a pretrained StyleGAN2.

    \b
    Examples:
      fsvideo weights download stylegan2-ffhq fse-ffhq direction-smile
      fsvideo edit talk.mp4 --attr smile --strength 2
      fsvideo doctor
    """
    _configure_logging(verbose)
    if offline:
        before = os.environ.get("FSVIDEO_OFFLINE")
        os.environ["FSVIDEO_OFFLINE"] = "1"
        ctx.call_on_close(lambda: os.environ.pop("FSVIDEO_OFFLINE") if before is None
                          else os.environ.__setitem__("FSVIDEO_OFFLINE", before))
    from fsvideo.cli.weights import first_run_downloads
    ctx.with_resource(first_run_downloads())    # commands fetch missing registry weights on first use


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (``kill``, ``timeout``, a closed terminal, a job scheduler), raised in the main
    thread like Ctrl-C, so the pipeline stops its threads and every temporary output is removed
    (the default action would kill the process and leave the ``.partial`` files behind)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum, frame) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def _termination_as_interrupt():
    """While the CLI runs: SIGTERM and SIGHUP raise :class:`Terminated` (signals a caller set to be
    ignored stay ignored; the previous handlers come back afterwards)."""
    previous = {}
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is None:
            continue
        try:
            if signal.getsignal(sig) is signal.SIG_DFL:
                previous[sig] = signal.signal(sig, _raise_terminated)
        except ValueError:      # not the main thread: leave the signals alone
            pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def import_torch() -> None:
    """Import torch with Ctrl-C, SIGTERM and SIGHUP held until it is done, then delivered as a clean stop.

    A signal in the middle of ``import torch`` (1.5-2.5 s at the start of an edit or inversion on a CPU)
    raised KeyboardInterrupt inside torch's C++ import code: the process aborted ("terminate called after
    throwing an instance of 'pybind11::error_already_set'", "Fatal Python error: Aborted").  Blocking the
    signals would not do: they then go to another thread (numpy's BLAS pool), whose handler still
    interrupts the main thread; so the handlers only note them for the length of the import.
    """
    if "torch" in sys.modules:
        return
    noted: list[int] = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        try:
            if sig is not None and signal.getsignal(sig) not in (signal.SIG_IGN, None):
                previous[sig] = signal.signal(sig, lambda signum, frame: noted.append(signum))
        except ValueError:      # not the main thread: signals are not ours to handle
            break
    try:
        import torch  # noqa: F401
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if noted:
            signal.raise_signal(noted[0])


def _dash_file_hint(argv) -> str:
    """For `fsvideo edit -x.mp4`: a file whose name begins with a dash was read as options (click reads
    ``-x.mp4`` as ``-x``, ``-.``...; ``-o.mp4`` as ``-o .mp4``), and the usage error named only those."""
    files = [a for a in (sys.argv[1:] if argv is None else argv)
             if isinstance(a, str) and a.startswith("-") and os.path.isfile(a)]
    return f"; {files[0]} is a file: pass it as ./{files[0]} or after --" if files else ""


def main(argv=None) -> None:
    """Entry point: runs the CLI and turns errors into one line and an exit code."""
    from rich.markup import escape

    from fsvideo.cli._console import err_console
    from fsvideo.cores import threads_within_quota
    from fsvideo.pipeline.memory import use_huge_pages
    use_huge_pages()                # before any command imports torch (1024 px on a CPU: 1.4x faster)
    threads_within_quota()          # a container's --cpus, before torch sizes its pool by the host
    try:
        with _termination_as_interrupt():
            code = cli.main(args=argv, prog_name="fsvideo", standalone_mode=False)
        if isinstance(code, int) and not isinstance(code, bool) and code:
            sys.exit(code)      # a command's `click.exceptions.Exit(n)`: returned, not raised, in this mode
    except FsvideoError as e:
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt) as e:    # click turns Ctrl-C into Abort
        cause = e if isinstance(e, Terminated) else e.__cause__
        if isinstance(cause, Terminated):
            err_console.print(f"[bold red]terminated[/] ({escape(str(cause))}): no output was written")
            sys.exit(128 + cause.signum)
        err_console.print("[bold red]interrupted[/]: no output was written")
        sys.exit(130)
    except click.UsageError as e:   # a bad option value, a missing argument: one line, and where to read more
        where = e.ctx.command_path if e.ctx is not None else "fsvideo"
        message, dash = e.format_message(), _dash_file_hint(argv)
        message = message.rstrip(".") + dash if dash else message
        err_console.print(f"[bold red]error:[/] {escape(message)} (see `{where} --help`)", highlight=False,
                          soft_wrap=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # a bug: one line unless FSVIDEO_DEBUG asks for the traceback
        if os.environ.get("FSVIDEO_DEBUG"):
            raise
        err_console.print(f"[bold red]internal error:[/] {type(e).__name__}: {escape(str(e))} "
                          "(set FSVIDEO_DEBUG=1 for the traceback and please report it)",
                          highlight=False, soft_wrap=True)
        sys.exit(1)
