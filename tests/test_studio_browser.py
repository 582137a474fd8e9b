"""`fsvideo studio` in a real headless Chromium: invert, drag a strength slider, see the frame change, export;
then what a user meets around that: the keyboard, the timeline, resetting edits, picking a face, a long
export with its progress and cancel, a server error, a lost connection, and the page's idle traffic.

One server (tiny seeded models, 1 s of a shared clip) and one browser serve the whole module; each test
opens its own tab (its own session; the inversion is shared).  Skipped when Playwright or Debian's
chromium is missing (both are installed by .ci/run).
"""
from __future__ import annotations

import io
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_studio_api import CLIP, opts, tiny  # noqa: F401 - fixtures

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]
MULTI = "videos/other/facerec-short_hamilton_clip.mp4"     # one face, then none, then another


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(app, port: int | None = None):
    """Run ``app`` with uvicorn in a thread on a loopback port (None: a free one); yields (url, app)."""
    import uvicorn
    port = port or _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    while not srv.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/", app
    srv.should_exit = True
    th.join(10)


@pytest.fixture(scope="module")
def server(opts, media_dir, tmp_path_factory):  # noqa: F811
    from fsvideo.studio.app import StudioConfig, create_app
    work = tmp_path_factory.mktemp("studio-browser")
    yield from _serve(create_app(StudioConfig(options=opts, workdir=work, video=media_dir / CLIP)))


@pytest.fixture(scope="module")
def bare_server(server):
    """A second studio started without a video (``fsvideo studio`` alone), sharing the first one's models."""
    from fsvideo.studio.app import StudioConfig, create_app
    first = server[1].state.studio
    yield from _serve(create_app(StudioConfig(options=first.config.options, workdir=first.workdir), first.renderer))


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, server):
    """A fresh tab on the studio, its video inverted and its first frame shown; ``page.errors`` collects
    uncaught exceptions and ``page.console_errors`` the console's errors (failed loads among them)."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    pg = ctx.new_page()
    pg.errors, pg.console_errors = [], []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("console", lambda m: m.type == "error" and pg.console_errors.append(f"{m.text} {m.location.get('url')}"))
    pg.goto(server[0])
    pg.wait_for_function("() => /ready/.test(document.getElementById('inv-text').textContent)", timeout=300_000)
    _settled(pg)
    yield pg
    ctx.close()


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def _settled(page, timeout=120_000):
    """Wait until the shown image is the full-quality render of the latest change."""
    page.wait_for_function("() => studio.shown === studio.seq && !studio.busy && "
                           "document.getElementById('view').dataset.quality === 'full'", timeout=timeout)


def test_studio_in_chromium(page, server, tmp_path, media_dir):
    from fsvideo.video import probe
    url, app = server
    page.click("#add-edit")
    page.select_option(".edit-row select.attr", "sefa:1")
    _settled(page)
    before = _png(page.locator("#view").screenshot())
    drafts = page.evaluate("studio.drafts")
    page.locator(".strength-slider").fill("4")              # drag the strength slider
    _settled(page)
    after = _png(page.locator("#view").screenshot())
    assert page.evaluate("studio.drafts") > drafts            # a draft was shown first
    assert np.abs(after - before).mean() > 0.5                # the frame changed
    page.wait_for_function("() => document.getElementById('command').textContent"
                           ".includes('--attr sefa:1 --strength 4')", timeout=60_000)
    page.check("input[name=view][value=edit]")
    _settled(page)
    page.check("input[name=view][value=composite]")
    page.check("#mask")
    _settled(page)
    page.uncheck("#mask")
    _settled(page)
    frame = page.evaluate("studio.frame")                     # the label shows the frame's own time
    (project,) = [p for p in app.state.studio.projects.values() if p.source.name == Path(CLIP).name]
    assert page.locator("#frame-label").text_content() == f"{frame} / 29  {project.time(frame):.2f} s"
    page.screenshot(path=str(tmp_path / "studio.png"), full_page=True)

    page.click("#export-btn")
    page.wait_for_selector("#export-link:not([hidden])", timeout=300_000)
    with page.expect_download() as dl:
        page.click("#export-link")
    got = tmp_path / "export.mp4"
    dl.value.save_as(got)
    assert page.locator("#export-link").text_content() == "download liveportrait-d18.sefa1+4.mp4"
    info, src = probe(got), probe(media_dir / CLIP)
    assert info.n_frames == 30 and info.fps == src.fps and info.has_audio
    assert "fsvideo edit" in page.locator("#command").text_content()

    other = page.context.new_page()                           # a second tab: its own session
    other.goto(url)
    other.wait_for_function("() => studio.sid && studio.state && studio.state.project")
    assert other.evaluate("studio.sid") != page.evaluate("studio.sid")
    assert other.evaluate("studio.edits.length") == 0 and page.evaluate("studio.edits.length") == 1
    assert not page.errors, page.errors
    assert not page.console_errors, page.console_errors      # e.g. no 404 for a favicon


def test_keyboard_and_timeline_drag_move_the_frame(page):
    """Arrows step a frame, Shift+arrows ten, Home/End go to the ends (not only inside the scrub slider);
    the timeline can be dragged as well as clicked; a key in a text box stays there."""
    frame = lambda: page.evaluate("studio.frame")            # noqa: E731
    page.locator("#add-edit").focus()                         # a button has the focus, not the slider
    page.keyboard.press("End")
    assert frame() == 29
    page.keyboard.press("Home")
    assert frame() == 0
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Shift+ArrowRight")
    assert frame() == 11
    page.keyboard.press("Shift+ArrowLeft")
    assert frame() == 1
    box = page.locator("#timeline").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=5)
    assert frame() == 15
    page.mouse.move(box["x"] + box["width"] * 0.8, y, steps=5)
    page.mouse.up()
    assert frame() == 24
    page.mouse.move(box["x"] + box["width"] * 0.2, y)           # the button is up: no more scrubbing
    assert frame() == 24
    page.locator("#clip-seconds").focus()
    page.keyboard.press("Home")
    assert frame() == 24
    _settled(page)
    assert page.locator("#scrub").get_attribute("aria-valuetext").startswith("frame 24 of 29")
    assert not page.errors, page.errors


def _names(page) -> dict[str, str]:
    """Accessible name (aria-label, a label, or the text) of every visible control, by a short id."""
    return page.evaluate("""() => Object.fromEntries(Array.from(document.querySelectorAll('input, select, button, progress'))
        .filter((e) => e.offsetParent !== null)
        .map((e, k) => [`${e.tagName.toLowerCase()}#${e.id || e.className || k}:${k}`,
                        (e.getAttribute('aria-label') || (e.labels && e.labels[0] && e.labels[0].textContent)
                         || (e.getAttribute('aria-labelledby') && document.getElementById(
                             e.getAttribute('aria-labelledby')).textContent) || e.textContent || '').trim()]))""")


def _contrast(page, fg: str, bg: str, fg_property: str = "color") -> float:
    """WCAG contrast ratio of the first ``fg`` element's colour (or other property) against ``bg``'s background
    (an ``a`` in ``fg``'s place is made for the occasion when the page has none)."""
    return page.evaluate("""([fg, bg, prop]) => {
        let el = document.querySelector(fg), made = null;
        if (!el) { made = el = document.createElement('a'); el.href = '#'; document.querySelector('aside').append(el); }
        const lum = (c) => { const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map((v) => { v /= 255;
            return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
        const a = lum(getComputedStyle(el)[prop]), b = lum(getComputedStyle(document.querySelector(bg)).backgroundColor);
        if (made) made.remove();
        return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05); }""", [fg, bg, fg_property])


def test_edits_combine_reset_and_every_control_is_named(page):
    """A second edit picks another direction; each slider, number box and remove button names its
    direction (also after the direction is changed); Reset puts every strength back to 0 and a double
    click one; every control has a name a screen reader can say (not a bare ◀ or ×)."""
    page.click("#add-edit")
    page.click("#add-edit")
    _settled(page)
    attrs = page.eval_on_selector_all(".edit-row select.attr", "els => els.map((e) => e.value)")
    assert attrs == ["sefa:0", "sefa:1"]
    page.locator(".edit-row select.attr").nth(1).select_option("sefa:3")
    row = page.locator(".edit-row").nth(1)
    assert row.locator(".strength-slider").get_attribute("aria-label") == "strength of sefa:3"
    assert row.locator("input.strength").get_attribute("aria-label") == "strength of sefa:3 (number)"
    assert row.locator("button").get_attribute("aria-label") == "remove the edit sefa:3"
    page.locator(".strength-slider").nth(0).fill("2")
    page.locator(".strength-slider").nth(1).fill("-3")
    _settled(page)
    page.wait_for_function("() => /--strength -3/.test(document.getElementById('command').textContent)")
    page.locator(".strength-slider").nth(1).dblclick()
    _settled(page)
    assert page.evaluate("studio.edits.map((e) => e.strength)") == [2, 0]
    assert page.locator("input.strength").nth(1).input_value() == "0"
    page.click("#reset-edits")
    _settled(page)
    assert page.evaluate("studio.edits.map((e) => e.strength)") == [0, 0]
    assert [page.locator(".strength-slider").nth(k).input_value() for k in (0, 1)] == ["0", "0"]
    page.wait_for_function("() => /--strength 0 .*--strength 0 /.test(document.getElementById('command').textContent)")

    names = _names(page)
    unnamed = {k: v for k, v in names.items() if len(v) < 2 or v in ("◀", "▶", "×")}
    assert not unnamed, unnamed
    # links are readable on the dark page (WCAG AA: contrast 4.5:1), the timeline's marks stand out
    # from its background (3:1 for graphics), and the job and inversion texts are announced
    assert _contrast(page, "aside a", "body") >= 4.5
    for mark in (".sw.pending", ".sw.noface", ".sw.track"):
        assert _contrast(page, mark, "#timeline", "backgroundColor") >= 3, mark
    assert {page.get_attribute(f"#{k}", "aria-live") for k in ("export-status", "clip-status", "inv-text")} == {"polite"}
    assert not page.errors, page.errors


def test_server_errors_and_a_lost_connection_are_shown_then_cleared(page, server, monkeypatch):
    """A failing render is a message naming the failure, gone once a render works again; when the server
    cannot be reached (stopped, or the network hiccups) the page says so instead of a bare 'Failed to
    fetch', and once it answers again the latest change is rendered without the user doing anything."""
    renderer = server[1].state.studio.renderer
    working = renderer.render

    def boom(*a, **kw):
        raise RuntimeError("boom")
    monkeypatch.setattr(renderer, "render", boom)
    page.click("#add-edit")
    page.wait_for_selector("#error:not([hidden])")
    assert "RuntimeError: boom" in page.locator("#error-text").text_content()
    monkeypatch.setattr(renderer, "render", working)
    page.locator(".strength-slider").fill("1")
    _settled(page)
    assert page.locator("#error").is_hidden()                 # no stale message once it works

    page.wait_for_function("() => /--strength 1 /.test(document.getElementById('command').textContent)")
    page.route("**/api/**", lambda route: route.abort("connectionrefused"))
    page.locator(".strength-slider").fill("2")
    page.wait_for_selector("#offline:not([hidden])")
    assert "does not answer" in page.locator("#offline").text_content()
    assert page.locator("#error").is_hidden(), page.locator("#error-text").text_content()
    banner, code = page.locator("#offline").bounding_box(), page.locator("#offline code").bounding_box()
    assert code["x"] < banner["x"] + banner["width"] * 0.35  # one sentence, not spread over the banner
    page.wait_for_timeout(500)                                # the command's debounce: it stays a command
    assert "--strength 1 " in page.locator("#command").text_content(), page.locator("#command").text_content()
    seq = page.evaluate("studio.seq")
    assert page.evaluate("studio.shown") < seq                # the change is waiting for the server
    page.unroute("**/api/**")
    page.wait_for_selector("#offline", state="hidden")
    _settled(page)                                           # ...rendered now, with the strength set meanwhile
    assert page.evaluate("studio.shown") >= seq and page.evaluate("studio.edits[0].strength") == 2
    assert not page.errors, page.errors


def _endless_export(monkeypatch):
    """Exports count their frames over and over until cancelled."""
    from fsvideo.studio import app as studio_app
    from fsvideo.studio.jobs import Job

    def slow_export(project, edits, tracks, out, resolution):
        def work(progress):
            for i in range(100_000):                          # until cancelled (progress raises then)
                progress(i % project.n_frames, project.n_frames)
                time.sleep(0.02)
        return Job("export", work, project.n_frames, name=out.name)
    monkeypatch.setattr(studio_app, "start_export", slow_export)


def test_a_long_export_shows_progress_and_can_be_cancelled(page, server, monkeypatch):
    """While an export runs its button is off (a second click started a second export, whose progress
    replaced the first's while both ran), the frames done are counted, and Cancel stops it."""
    _endless_export(monkeypatch)
    page.click("#add-edit")
    page.locator(".strength-slider").fill("1")
    _settled(page)
    page.click("#export-btn")
    page.wait_for_selector("#export-progress:not([hidden])")
    page.wait_for_function("() => /^\\d+ \\/ 30 frames/.test(document.getElementById('export-status').textContent)")
    assert page.locator("#export-btn").is_disabled()
    page.click("#export-cancel")
    page.wait_for_function("() => /cancelled/.test(document.getElementById('export-status').textContent)")
    assert page.locator("#export-btn").is_enabled()
    assert page.locator("#export-cancel").is_hidden() and page.locator("#export-progress").is_hidden()
    session = server[1].state.studio.sessions[page.evaluate("studio.sid")]
    assert [j.state for j in session.jobs.values()] == ["cancelled"]
    assert not page.errors, page.errors


def test_an_idle_page_asks_for_its_state_rarely(page):
    """Nothing moves (inverted, no job): the page polls every few seconds, not twice a second."""
    asked = []
    page.on("request", lambda r: r.url.endswith("/state") and asked.append(time.time()))
    page.wait_for_timeout(4000)                              # (a sleep would not dispatch the events)
    assert 1 <= len(asked) <= 2, len(asked)
    assert not page.errors, page.errors


def test_a_slider_drag_on_a_slow_server_sends_few_renders_and_the_last_value_wins(page, server, monkeypatch):
    """At most one render is in flight per tab, and the next one carries the latest value: dragging over
    30 values while each render takes 0.2 s sends a handful of requests, not one per value."""
    renderer = server[1].state.studio.renderer
    working = renderer.render

    def slow(*a, **kw):
        time.sleep(0.2)
        return working(*a, **kw)
    page.click("#add-edit")
    _settled(page)
    monkeypatch.setattr(renderer, "render", slow)
    sent = []
    page.on("request", lambda r: r.url.endswith("/render") and sent.append(r.post_data_json))
    box = page.locator(".strength-slider").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] / 2, y)
    page.mouse.down()
    for k in range(30):
        page.mouse.move(box["x"] + box["width"] * (0.5 + k / 62), y)
        page.wait_for_timeout(30)
    page.mouse.up()
    _settled(page)
    last = page.evaluate("studio.edits[0].strength")
    assert last > 2 and len(sent) <= 14, (last, len(sent))
    assert sent[-1]["edits"][0]["strength"] == last and sent[-1]["quality"] == "full"


def test_picking_a_face_goes_to_its_frames_and_marks_its_track(page, media_dir):
    """Picking a face that is not in the current frame moves to its first frame (before: the frame
    stayed, saying 'no selected face in this frame', and the user had to find the face's bar)."""
    page.evaluate("async (path) => opened(await (await call('open', {path, start: 3.0, end: 4.0})).json())",
                  str(media_dir / MULTI))
    page.wait_for_function("() => studio.state && studio.state.project && studio.state.project.video === "
                           f"'{Path(MULTI).name}' && studio.state.project.status.state === 'ready'", timeout=300_000)
    _settled(page)
    tracks = page.evaluate("studio.state.project.timeline.tracks")
    first = tracks[0]["runs"][0][0]
    assert first > 0, tracks                                   # the span starts without that face
    assert page.evaluate("studio.frame") == 0
    page.select_option("#face", str(tracks[0]["id"]))
    _settled(page)
    assert page.evaluate("studio.frame") == first
    assert page.locator("#note").is_hidden()
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("Home")                                # the user may still look elsewhere
    _settled(page)
    assert page.evaluate("studio.frame") == 0 and page.locator("#face").input_value() == str(tracks[0]["id"])
    assert not page.errors, page.errors


def test_holding_compare_shows_the_original_frame_without_rendering_the_edit_again(page):
    """Holding C (or the compare button) shows the source frame over the edit, releasing it shows the edit
    again at once: no render of the edit is asked for (before, the only way was to switch the view to
    'original' and back, one generator pass each way)."""
    page.click("#add-edit")
    page.locator(".strength-slider").fill("4")
    _settled(page)
    edited = _png(page.locator(".frame-box").screenshot())
    renders = []
    page.on("request", lambda r: r.url.endswith("/render") and renders.append(r.post_data_json["view"]))
    page.evaluate("document.activeElement.blur()")
    page.keyboard.down("c")
    page.wait_for_function("() => { const c = document.getElementById('compare-view');"
                           " return !c.hidden && c.complete && c.naturalWidth > 0; }")
    assert page.locator("#compare-badge").is_visible()       # the user is told what is shown
    original = _png(page.locator(".frame-box").screenshot())
    assert np.abs(original - edited).mean() > 0.5
    page.keyboard.up("c")
    assert page.locator("#compare-view").is_hidden() and page.locator("#compare-badge").is_hidden()
    assert np.abs(_png(page.locator(".frame-box").screenshot()) - edited).mean() < 0.5
    box = page.locator("#compare").bounding_box()               # the button, held with the mouse
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.wait_for_selector("#compare-view:not([hidden])")
    page.mouse.up()
    assert page.locator("#compare-view").is_hidden()
    assert renders and set(renders) == {"original"}, renders  # the edit was not rendered again
    assert not page.errors, page.errors


def test_opening_a_video_says_so_and_starts_clean(page, server, media_dir, monkeypatch):
    """While a video opens (hashing, probing) the page says so and Open is off (before: nothing moved and
    a second click opened it twice); the last video's export and clip are not offered for the new one;
    an image has no clip to render."""
    studio = server[1].state.studio
    opening = studio.open

    def slow(*a, **kw):
        time.sleep(1.0)
        return opening(*a, **kw)
    monkeypatch.setattr(studio, "open", slow)
    page.click("#add-edit")
    page.locator(".strength-slider").fill("1")
    _settled(page)
    page.click("#export-btn")
    page.wait_for_selector("#export-link:not([hidden])", timeout=300_000)
    image = "images/wild/facerec-two_people.jpg"
    page.fill("#open-path", str(media_dir / image))
    page.click("#open-btn")
    page.wait_for_function(f"() => document.getElementById('inv-text').textContent === 'opening {Path(image).name}…'")
    assert page.locator("#open-btn").is_disabled()
    page.wait_for_function("() => studio.state && studio.state.project && studio.state.project.video === "
                           f"'{Path(image).name}' && studio.state.project.status.state === 'ready'", timeout=300_000)
    _settled(page)
    assert page.locator("#open-btn").is_enabled()
    assert page.locator("#export-link").is_hidden() and page.locator("#export-status").text_content() == ""
    assert page.locator("#clip-box").is_hidden()
    assert not page.errors, page.errors


def test_a_failed_inversion_is_an_error_message(page, media_dir, monkeypatch):
    """An inversion that fails says so in the error banner, naming the video (before: only the small grey
    text at the end of the progress bar)."""
    import fsvideo
    from fsvideo.errors import InputError

    def broken(*a, **kw):
        raise InputError("no usable frames", hint="try another span")
    monkeypatch.setattr(fsvideo, "invert_video", broken)
    page.evaluate("async (path) => opened(await (await call('open', {path, start: 0.1, end: 0.4})).json())",
                  str(media_dir / CLIP))
    page.wait_for_selector("#error:not([hidden])")
    text = page.locator("#error-text").text_content()
    assert text.startswith(f"the inversion of {Path(CLIP).name} failed: no usable frames"), text
    assert not page.errors, page.errors


def test_without_a_video_the_page_says_what_to_do(browser, bare_server, media_dir):
    """Started without a video: the frame area asks for one (before: a broken-image icon), the status
    says no video is open, the timeline keeps its height; a bad path is an error after which the status
    is back (before: 'opening…' stayed), and a good one shows its frame."""
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    try:
        page.goto(bare_server[0])
        page.wait_for_function("() => document.getElementById('inv-text').textContent === 'no video open'")
        assert page.locator("#placeholder").is_visible() and page.locator("#view").is_hidden()
        assert "upload" in page.locator("#placeholder").text_content()
        assert page.locator("#timeline").bounding_box()["height"] == 46
        page.fill("#open-path", "/nonexistent/x.mp4")
        page.click("#open-btn")
        page.wait_for_selector("#error:not([hidden])")
        assert "no such file" in page.locator("#error-text").text_content()
        page.wait_for_function("() => document.getElementById('inv-text').textContent === 'no video open'")
        assert page.evaluate("document.getElementById('inv-progress').hasAttribute('value')")   # not 'busy'
        page.fill("#open-path", str(media_dir / CLIP))
        page.click("#open-btn")
        page.wait_for_function("() => /ready/.test(document.getElementById('inv-text').textContent)", timeout=300_000)
        _settled(page)
        assert page.locator("#view").is_visible() and page.locator("#placeholder").is_hidden()
    finally:
        page.close()


def test_files_with_unicode_and_spaces_in_their_names_upload(page, tmp_path, tiny):  # noqa: F811
    """A video and a direction named in another script upload and keep their letters (before: fetch refused
    the non-Latin-1 X-Filename header, so the page said 'the studio server does not answer', and the
    server turned '视频.mp4' into 'mp4', no longer a video name)."""
    from fsvideo.video.synth import make_test_clip
    video, direction = tmp_path / "视频 é clip.mp4", tmp_path / "方向 ü.npy"
    make_test_clip(video, n_frames=6, audio=False)
    shutil.copy(tiny["dir"], direction)
    page.set_input_files("#upload", str(video))
    page.wait_for_function("() => studio.state && studio.state.project && "
                           "studio.state.project.video === '视频_é_clip.mp4'", timeout=20_000)
    page.set_input_files("#npy", str(direction))
    page.wait_for_selector(".edit-row")
    assert page.locator(".edit-row select.attr option:checked").text_content() == "方向_ü.npy (uploaded)"
    assert page.locator("#error").is_hidden() and page.locator("#offline").is_hidden()
    assert not page.errors, page.errors


def _slow_first_answer(monkeypatch, seconds: float):
    """The next render answer the server sends comes ``seconds`` late (after the render, outside its
    lock, so later requests overtake it); the ones after it come at once."""
    from fsvideo.studio import app as studio_app
    calls, jpeg = [], studio_app.jpeg_bytes

    def late(image):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(seconds)
        return jpeg(image)
    monkeypatch.setattr(studio_app, "jpeg_bytes", late)


def test_moving_while_comparing_never_shows_another_frame_s_source(page, monkeypatch):
    """C held, then a step to the next frame: the source of the frame left comes back after the new one's;
    it was laid over the new frame as its source (the last answer won, not the last frame asked)."""
    page.evaluate("document.activeElement.blur()")
    _slow_first_answer(monkeypatch, 1.0)
    page.keyboard.down("c")                                   # asks for frame 0's source: answered late
    page.wait_for_timeout(200)
    page.keyboard.press("ArrowRight")                         # frame 1's source: answered at once
    page.wait_for_timeout(1500)
    assert page.evaluate("studio.frame") == 1
    assert page.evaluate("original.key") == f"{Path(CLIP).name}#1"
    assert page.evaluate("document.getElementById('compare-view').src === original.url")
    page.keyboard.up("c")
    assert not page.errors, page.errors


def _watch_shown(page):
    """Record, for every image the view shows, the frame it is of (X-Frame) and the frame the page is at."""
    page.evaluate("""() => { window.shownLog = [];
        new MutationObserver(() => shownLog.push([studio.time.frame, studio.frame, studio.state && studio.state.project
            && studio.state.project.video])).observe(document.getElementById('view'), {attributeFilter: ['data-seq']}); }""")


def test_a_frame_rendering_while_another_video_opens_is_not_shown(page, server, media_dir, monkeypatch):
    """A render of the last video still under way when another video opens came back and was shown as the
    new video's first frame (with the old frame's number and time), until the new video's state came."""
    from fsvideo.studio.project import Project
    page.evaluate("setFrame(20)")
    _settled(page)
    _watch_shown(page)
    _slow_first_answer(monkeypatch, 1.0)
    timeline = Project.timeline

    def slow_state(self):                                     # the new video's state comes after that answer
        time.sleep(2.0)
        return timeline(self)
    page.click("#add-edit")                                   # a render of frame 20 starts
    page.wait_for_timeout(200)
    monkeypatch.setattr(Project, "timeline", slow_state)
    image = "images/wild/facerec-two_people.jpg"
    page.evaluate("async (path) => opened(await (await call('open', {path})).json())", str(media_dir / image))
    page.wait_for_timeout(1500)
    monkeypatch.setattr(Project, "timeline", timeline)
    page.wait_for_function("() => studio.state && studio.state.project && studio.state.project.video === "
                           f"'{Path(image).name}' && studio.state.project.status.state === 'ready'", timeout=300_000)
    _settled(page)
    shown = page.evaluate("shownLog")
    assert shown and all(frame == at for frame, at, _ in shown), shown
    assert page.locator("#error").is_hidden(), page.locator("#error-text").text_content()
    assert not page.errors, page.errors


def _at_work(page):
    """The tab's session, edits, frame and face."""
    return page.evaluate("[studio.sid, studio.edits, studio.frame, document.getElementById('face').value]")


def test_a_reload_during_an_export_keeps_the_tab_s_work(page, monkeypatch):
    """Reloading the page while an export runs: the tab gets its session back, with its edits, frame and
    face, and the export's progress and Cancel (before: a new empty session; the export ran on unseen
    and could not be cancelled or downloaded)."""
    _endless_export(monkeypatch)
    page.click("#add-edit")
    page.locator(".strength-slider").fill("1.5")
    page.evaluate("setFrame(7)")
    page.select_option("#face", "0")
    _settled(page)
    page.click("#export-btn")
    page.wait_for_selector("#export-progress:not([hidden])")
    sid, edits, frame, face = before = _at_work(page)
    assert edits == [{"attr": "sefa:0", "strength": 1.5}] and frame == 7 and face == "0"
    page.reload()
    page.wait_for_function("() => /\\d+ \\/ 30 frames/.test(document.getElementById('export-status').textContent)",
                           timeout=15_000)
    _settled(page)
    assert _at_work(page) == before
    assert page.locator(".strength-slider").input_value() == "1.5"
    page.click("#export-cancel")
    page.wait_for_function("() => /cancelled/.test(document.getElementById('export-status').textContent)")
    other = page.context.new_page()                           # a new tab still gets a session of its own
    other.goto(page.url)
    other.wait_for_function("() => studio.sid")
    assert other.evaluate("studio.sid") != sid and other.evaluate("studio.edits.length") == 0
    assert not page.errors, page.errors


@pytest.mark.parametrize("uploaded", [None, "clip.mp4"])
def test_a_restarted_server_is_picked_up_with_the_edits(browser, server, monkeypatch, uploaded, tmp_path):
    """The server restarted under an open page: the page starts a new session, its video is open again and
    the edits are kept (before: 'unknown session (the studio was restarted?): reload the page', and a
    reload lost the edits); an export that was running is said to have stopped and Export works again
    (before: its last progress stayed, Export off for good).  An uploaded video is said to need uploading
    again (the new server opens its own video, or none)."""
    from fsvideo.studio.app import StudioConfig, create_app
    first = server[1].state.studio
    port = _free_port()

    def start():
        app = create_app(StudioConfig(options=first.config.options, workdir=first.workdir, video=first.config.video),
                         first.renderer)
        return _serve(app, port)
    one = start()
    url, app = next(one)
    page = browser.new_page()
    try:
        page.goto(url)
        page.wait_for_function("() => /ready/.test(document.getElementById('inv-text').textContent)", timeout=300_000)
        if uploaded:
            shutil.copy(first.config.video, tmp_path / uploaded)
            page.set_input_files("#upload", str(tmp_path / uploaded))
            page.wait_for_function("() => !studio.opening && studio.state && studio.state.project")
        page.click("#add-edit")
        page.locator(".strength-slider").fill("2")
        page.evaluate("setFrame(12)")
        _settled(page)
        sid, edits, frame, face = _at_work(page)
        _endless_export(monkeypatch)
        page.click("#export-btn")
        page.wait_for_selector("#export-cancel:not([hidden])")
        next(one, None)                                       # stopped...
        two = start()
        next(two)                                             # ...and started again on the same port
        page.wait_for_function(f"() => studio.sid && studio.sid !== '{sid}' && studio.state && studio.state.project",
                               timeout=20_000)
        _settled(page)
        if uploaded:                                          # the restarted server has forgotten it
            assert page.locator("#error-text").text_content() == f"the studio was restarted: upload {uploaded} again"
            next(two, None)
            return
        assert _at_work(page)[1:] == [edits, frame, face]
        assert page.locator("#error").is_hidden(), page.locator("#error-text").text_content()
        assert page.locator("#export-status").text_content() == "stopped: the studio was restarted"
        assert page.locator("#export-btn").is_enabled() and page.locator("#export-cancel").is_hidden()
        assert page.locator("#export-progress").is_hidden()
        next(two, None)
    finally:
        page.close()
        for s in app.state.studio.sessions.values():          # the first server's export, endless
            for j in s.jobs.values():
                j.cancel()


def test_a_state_asked_for_before_another_video_opened_is_not_shown(page, media_dir, monkeypatch):
    """A state poll under way while another video opens answered with the last video's state, which was then
    shown over the new one (its name, frame count and timeline) until the next poll."""
    from fsvideo.studio.project import Project
    timeline = Project.timeline

    def slow_state(self):
        time.sleep(1.5)
        return timeline(self)
    monkeypatch.setattr(Project, "timeline", slow_state)
    page.evaluate("""() => { window.names = [];
        new MutationObserver(() => names.push(document.getElementById('video-name').textContent))
            .observe(document.getElementById('video-name'), {childList: true, characterData: true, subtree: true}); }""")
    page.evaluate("pollSoon()")                               # a poll of this video is under way...
    page.wait_for_timeout(300)
    image = "images/wild/facerec-two_people.jpg"              # ...when another video opens
    page.evaluate("async (path) => opened(await (await call('open', {path})).json())", str(media_dir / image))
    page.wait_for_timeout(2000)
    monkeypatch.setattr(Project, "timeline", timeline)
    page.wait_for_function("() => studio.state && studio.state.project && studio.state.project.video === "
                           f"'{Path(image).name}' && studio.state.project.status.state === 'ready'", timeout=300_000)
    names = page.evaluate("names")
    assert Path(CLIP).name not in names[names.index(Path(image).name):], names
    assert not page.errors, page.errors


def _open_slowly(page, path, start: float, end: float, seconds: float, monkeypatch):
    """Open a span of ``path`` (one not inverted yet) in the tab, its inversion taking ``seconds`` a frame."""
    from fsvideo.studio.project import Project
    add = Project._add

    def slow_add(self, fl):
        time.sleep(seconds)
        add(self, fl)
    monkeypatch.setattr(Project, "_add", slow_add)
    page.evaluate("async ([path, start, end]) => opened(await (await call('open', {path, start, end})).json())",
                  [str(path), start, end])


def test_a_frame_inverted_but_not_in_memory_shows_its_source(page, media_dir, monkeypatch):
    """While a long video inverts, frames beyond LIVE_FRAMES back are dropped from memory until the latents
    file is complete (409); going back to one kept the image of the frame left on screen under the note,
    a stale frame for the position.  Now its source frame is shown, with the note."""
    from fsvideo.studio import project as project_mod
    monkeypatch.setattr(project_mod, "LIVE_FRAMES", 3)
    _open_slowly(page, media_dir / CLIP, 0.1, 0.9, 0.25, monkeypatch)
    page.wait_for_function("() => studio.state && studio.state.project && studio.state.project.timeline.inverted >= 8",
                           timeout=60_000)
    page.evaluate("setFrame(6)")
    _settled(page)
    page.evaluate("setFrame(1)")                              # inverted, dropped from memory
    page.wait_for_function("() => studio.shown === studio.seq && !studio.busy", timeout=10_000)
    assert page.evaluate("studio.time.frame") == 1
    assert "read back when the inversion finishes" in page.locator("#note").text_content()
    assert page.locator("#error").is_hidden()
    assert not page.errors, page.errors


def test_the_face_list_counts_the_frames_inverted_since(page, media_dir, monkeypatch):
    """The face list said 'face 0 (N frames)' with N from the poll where the face first appeared, for good:
    the list was rebuilt only when the faces changed.  The counts follow the inversion now."""
    _open_slowly(page, media_dir / CLIP, 0.2, 0.8, 0.15, monkeypatch)
    page.wait_for_function("() => studio.state && studio.state.project && studio.state.project.status.state === 'ready'",
                           timeout=60_000)
    page.wait_for_timeout(700)                                # the poll after 'ready'
    tracks = page.evaluate("studio.state.project.timeline.tracks")
    want = [f"face {t['id']} ({t['frames']} frames)" for t in tracks]
    assert page.eval_on_selector_all("#face option", "os => os.map((o) => o.text)")[1:] == want
    assert not page.errors, page.errors


def test_removing_edits_from_the_keyboard_keeps_the_focus(page):
    """× pressed from the keyboard rebuilt the rows and the focus fell to the page's start (a keyboard user
    had to tab through the whole page again); it moves to the next edit's ×, then to '+ add edit'."""
    for _ in range(2):
        page.click("#add-edit")
    page.locator(".edit-row button").nth(0).focus()
    page.keyboard.press("Enter")
    assert page.evaluate("studio.edits.map((e) => e.attr)") == ["sefa:1"]
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "remove the edit sefa:1"
    page.keyboard.press("Space")
    assert page.evaluate("studio.edits.length") == 0 and page.evaluate("document.activeElement.id") == "add-edit"
    page.keyboard.press("Enter")                              # and on from there
    assert page.evaluate("studio.edits.length") == 1
    assert not page.errors, page.errors


def test_a_tab_dropped_again_soon_says_so_instead_of_taking_another_session(page, server):
    """A tab whose session the server dropped takes a new one (as after a restart); dropped again within
    half a minute (more tabs than the server keeps: each new session drops the oldest), it says so rather
    than take another, or such tabs would drop each other for ever."""
    sessions = server[1].state.studio.sessions
    first = page.evaluate("studio.sid")
    sessions.pop(first)
    page.evaluate("pollSoon()")
    page.wait_for_function(f"() => studio.sid && studio.sid !== '{first}' && studio.state && studio.state.project")
    second = page.evaluate("studio.sid")
    sessions.pop(second)
    n = len(sessions)
    page.evaluate("pollSoon()")
    page.wait_for_selector("#error:not([hidden])", timeout=10_000)
    assert "unknown session" in page.locator("#error-text").text_content()
    page.wait_for_timeout(500)
    assert page.evaluate("studio.sid") == second and len(sessions) == n
    assert not page.errors, page.errors
