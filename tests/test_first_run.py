"""First-run downloads (issue 13): commands fetch missing registry weights; --offline restores the error.

Against the 127.0.0.1 server of test_weights.py; never the real network.
"""
from __future__ import annotations

import sys

import click
import pytest
from test_weights import SMILE_SHA, server, smile_bytes  # noqa: F401  (fixtures)

from fsvideo import weights as W
from fsvideo.errors import WeightsError
from fsvideo.weights import Source

MISSING = ("weights `direction-smile` are missing; run `fsvideo weights download direction-smile` "
           "(or `fsvideo weights import direction-smile FILE`)")


@pytest.fixture(autouse=True)
def _online(monkeypatch):
    """conftest makes every test offline; these serve their downloads on 127.0.0.1."""
    monkeypatch.delenv("FSVIDEO_OFFLINE", raising=False)


def _use(monkeypatch, *sources: Source):
    monkeypatch.setitem(W.REGISTRY, "direction-smile", W.replace_sources("direction-smile", *sources))


def test_resolve_never_downloads_outside_first_run(server, monkeypatch, smile_bytes):  # noqa: F811
    _use(monkeypatch, Source(url=server.add("/s.npy", smile_bytes), sha256=SMILE_SHA))
    with pytest.raises(WeightsError) as ei:
        W.resolve("direction-smile")
    assert str(ei.value) == MISSING and server.log == []
    assert W.resolve("direction-smile", required=False) is None and server.log == []


def test_first_run_fetches_once_with_announcement_and_progress(server, monkeypatch, smile_bytes):  # noqa: F811
    _use(monkeypatch, Source(url=server.add("/s.npy", smile_bytes), sha256=SMILE_SHA, size=len(smile_bytes)))
    said, seen, done = [], [], []
    with W.first_run_downloads(announce=lambda e, size: said.append((e.name, size, e.licence)),
                               progress=lambda n, d, t: seen.append((n, d, t)),
                               finished=lambda n, p: done.append((n, p))):
        p = W.resolve("direction-smile")
        assert W.resolve("direction-smile") == p              # cached: no second announcement or request
        assert W.resolve("direction-smile", required=False) == p
    assert p.read_bytes() == smile_bytes and p.parent == W.weights_home()
    assert said == [("direction-smile", "36 KB", W.REGISTRY["direction-smile"].licence)]
    assert seen[-1] == ("direction-smile", len(smile_bytes), len(smile_bytes)) and done == [("direction-smile", p)]
    assert len(server.log) == 1 and W.manifest_record("direction-smile")["verified"] is True
    assert not list(W.weights_home().glob("*.part"))


def test_optional_weights_are_not_fetched(server, monkeypatch, smile_bytes):  # noqa: F811
    _use(monkeypatch, Source(url=server.add("/s.npy", smile_bytes), sha256=SMILE_SHA))
    with W.first_run_downloads():
        assert W.resolve("direction-smile", required=False) is None
    assert server.log == []


def test_offline_restores_the_error(server, monkeypatch, smile_bytes):  # noqa: F811
    _use(monkeypatch, Source(url=server.add("/s.npy", smile_bytes), sha256=SMILE_SHA))
    monkeypatch.setenv("FSVIDEO_OFFLINE", "1")
    with W.first_run_downloads(), pytest.raises(WeightsError) as ei:
        W.resolve("direction-smile")
    assert str(ei.value) == MISSING and server.log == []


def test_failed_download_is_one_line_naming_file_source_and_mirror(server, monkeypatch):  # noqa: F811
    url = server.base + "/gone.npy"
    _use(monkeypatch, Source(url=url, sha256=SMILE_SHA))
    with W.first_run_downloads(), pytest.raises(WeightsError) as ei:
        W.resolve("direction-smile")
    msg = str(ei.value)
    assert "\n" not in msg
    assert "Smiling_boundary.npy" in msg and url in msg and "HTTP 404" in msg
    assert "FSVIDEO_WEIGHTS_MIRROR" in msg and "--offline" in msg
    assert W.path_of("direction-smile") is None


def test_a_dropped_first_run_download_resumes(server, monkeypatch, smile_bytes):  # noqa: F811
    url = server.add("/s.npy", smile_bytes)
    server.httpd.drop["/s.npy"] = 1
    _use(monkeypatch, Source(url=url, sha256=SMILE_SHA))
    with W.first_run_downloads():
        assert W.resolve("direction-smile").read_bytes() == smile_bytes
    assert server.log[-1][2] == f"bytes={len(smile_bytes) // 2}-"


@click.command("probe")
def probe_cmd() -> None:
    """A command that needs registry weights."""
    click.echo(f"resolved {W.resolve('direction-smile')}")


def test_cli_fetches_on_first_use_and_offline_flag(server, monkeypatch, smile_bytes, capsys):  # noqa: F811
    from fsvideo import cli
    monkeypatch.setitem(cli._COMMANDS, "probe", (__name__, "probe_cmd", "probe"))
    monkeypatch.setitem(sys.modules, __name__, sys.modules[__name__])
    _use(monkeypatch, Source(url=server.add("/s.npy", smile_bytes), sha256=SMILE_SHA))
    with pytest.raises(SystemExit) as ei:
        cli.main(["--offline", "probe"])
    out = capsys.readouterr()
    assert ei.value.code == 2 and "fsvideo weights download direction-smile" in out.err and server.log == []
    assert "FSVIDEO_OFFLINE" not in __import__("os").environ          # the flag does not outlive the command
    cli.main(["probe"])
    out = capsys.readouterr()
    assert "fetching `direction-smile`" in out.err and "licence" in out.err and "(verified)" in out.err
    assert f"resolved {W.weights_home() / 'Smiling_boundary.npy'}" in out.out
