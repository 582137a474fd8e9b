"""``fsvideo studio``: start the local web page (see :mod:`fsvideo.studio`)."""
from __future__ import annotations

from pathlib import Path

import click

from fsvideo.cli import import_torch
from fsvideo.cli._console import console, err_console
from fsvideo.cli.edit import _options, run_options


@click.command("studio")
@click.argument("video", required=False, type=click.Path(dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on. Anything but 127.0.0.1/localhost exposes the page to the network.")
@click.option("--port", default=7870, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--no-browser", is_flag=True, help="Do not open the page in a browser.")
@click.option("--draft-res", default=None, type=int,
              help="Generator size of the draft shown while a frame renders (default: 64 on a CPU, 256 on a GPU; "
                   "see benchmarks/studio.py).")
@click.option("--workdir", default=None, type=click.Path(file_okay=False),
              help="Latents cache, uploads, clips and exports (default $FSVIDEO_HOME/studio).")
@click.option("--max-upload-mb", default=2048.0, show_default=True, type=float, help="Largest video upload.")
@click.option("--cache-gb", default=20.0, show_default=True, type=float,
              help="Bound of the latents cache and uploads in --workdir; the least recently used go first (0: none).")
@click.option("--cache-days", default=30.0, show_default=True, type=float,
              help="Remove cached inversions and uploads unused for longer than this (0: keep).")
@click.option("--allow-paths", is_flag=True,
              help="Let the page open files by path even when --host is not loopback (on by default on loopback).")
@run_options
def studio(video, host, port, no_browser, draft_res, workdir, max_upload_mb, cache_gb, cache_days, allow_paths, quiet,
           as_json, **kw):
    """Scrub a video and try edits on its real frames in a local web page, then export.

    The video is inverted once in the background (frames become editable as they are
    inverted; the latents are cached, so reopening it is instant); a slider change shows a
    draft, then the full frame; export renders the whole video from the cached latents.

    \b
    Examples:
      fsvideo studio talk.mp4
      fsvideo studio talk.mp4 --end 10 --port 8000 --no-browser
      fsvideo studio --generator G.pt --encoder E.pt      # open or upload a video in the page
    """
    import_torch()
    import importlib.util
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        from fsvideo.errors import ConfigError
        raise ConfigError(f"fsvideo studio needs {' and '.join(missing)}", hint="pip install 'fsvideo[studio]'")
    from fsvideo.studio import serve
    from fsvideo.studio.app import LOOPBACK, StudioConfig
    from fsvideo.studio.prune import check_limits
    from fsvideo.utils import check_input_file
    from fsvideo.weights import weights_home
    src = check_input_file(video, "video") if video else None
    if src is not None:
        from fsvideo.video import probe
        probe(src)          # an unreadable video fails here, not in the page after the server started
    check_limits(cache_gb, cache_days)
    work = Path(workdir) if workdir else weights_home() / "studio"
    _check_workdir(work)
    if host not in LOOPBACK:
        err_console.print(f"[bold yellow]warning:[/] listening on {host}: anyone who can reach this machine "
                          f"can use the studio and see your video{'' if not allow_paths else ' and open its files'}. "
                          "Use the default 127.0.0.1 unless you mean it.", highlight=False)
    config = StudioConfig(options=_options(kw), workdir=work,
                          video=src, draft_res=draft_res, host=host, allow_paths=True if allow_paths else None,
                          max_upload_mb=max_upload_mb, cache_gb=cache_gb, cache_days=cache_days)

    def ready(url: str) -> None:
        if not quiet:
            console.print(f"fsvideo studio at [bold]{url}[/] (Ctrl-C to stop); files in {config.workdir}",
                          highlight=False)
    serve(config, port=port, open_browser=not no_browser, ready=ready)


def _check_workdir(work: Path) -> None:
    """The work folder (cache, uploads, exports) is created and written to before the server starts: a
    read-only or impossible one used to start a studio whose every inversion then failed in the page."""
    import tempfile

    from fsvideo.errors import OutputError
    try:
        work.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=work):
            pass
    except OSError as e:
        raise OutputError(f"the studio's work folder {work} cannot be written ({e.strerror or e})",
                          hint="pass --workdir with a writable folder (or set FSVIDEO_HOME)") from e
