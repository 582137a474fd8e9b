"""``fsvideo studio``: a local web page to scrub a video and try edits on its real frames before rendering.

Why FastAPI and a static page rather than Gradio: the page needs a timeline canvas with face
tracks and frames without a face marked, a render loop that shows a labelled draft and then the
full frame and drops superseded requests, and per-tab state; in Gradio each of those is a custom
component or a workaround over its event queue, while here they are a few lines of JavaScript
against a small JSON API that tests drive directly (``tests/test_studio_api.py``) and through a
real browser (``tests/test_studio_browser.py``).

The studio is a thin layer over the library, like the CLI: inversion is :func:`fsvideo.invert_video`
(its latents file is the cache), frames are rendered with the pipeline's model runner and
:mod:`fsvideo.faces.blend`, drafts with :mod:`fsvideo.models.preview`, clips and exports with
:func:`fsvideo.edit_video` from the latents.

* :mod:`fsvideo.studio.project`  an opened video: frames (by timestamp), latents (live, then from the file), inversion
* :mod:`fsvideo.studio.render`   the views of one frame, draft or full (masks smoothed as the render's)
* :mod:`fsvideo.studio.jobs`     export and clip jobs, the equivalent ``fsvideo edit`` command
* :mod:`fsvideo.studio.prune`    the work folder's bound: latents cache and uploads, least recently used first
* :mod:`fsvideo.studio.app`      the HTTP API, sessions and checks; ``static/`` holds the page
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def serve(config, *, port: int = 7870, open_browser: bool = True, ready=None) -> None:
    """Run the studio until Ctrl-C (``config``: :class:`fsvideo.studio.app.StudioConfig`).

    ``ready(url)`` is called once the server listens (the CLI prints the address there).
    """
    import threading
    import webbrowser

    import uvicorn

    from fsvideo.studio.app import create_app
    _check_port(config.host, port)
    app = create_app(config)
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=port, log_level="warning",
                                           access_log=False))
    host = f"[{config.host}]" if ":" in config.host else config.host
    url = f"http://{host}:{port}/"

    def announce():
        while not server.started and not server.should_exit:
            threading.Event().wait(0.05)
        if server.started:
            if ready is not None:
                ready(url)
            if open_browser:
                webbrowser.open(url)
    threading.Thread(target=announce, daemon=True).start()
    server.run()


def _check_port(host: str, port: int) -> None:
    import socket

    from fsvideo.errors import InputError
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise InputError(f"cannot listen on {host}:{port} ({e.strerror})",
                             hint="pass another --port (or stop the program using it)") from e
