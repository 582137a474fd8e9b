"""The weights store against an HTTP server on 127.0.0.1 (never the real network).

The server supports Range requests, can drop a connection halfway, can ignore Range, and emulates
Google Drive's "can't scan this file for viruses" page with its confirm form.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import http.server
import io
import os
import re
import subprocess
import sys
import tarfile
import threading
import urllib.parse

import numpy as np
import pytest
import torch

from fsvideo import weights as W
from fsvideo.errors import InputError, WeightsError
from fsvideo.weights import Source, fetch

SMILE_SHA = "5782190b00340d58f8418885dc9ad9ab53462874d7a9a1b91241e76099c9fc22"


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def _html(self, body: str, status: int = 200, cookie: str | None = None):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.end_headers()
        self.wfile.write(data)

    def _file(self, key: str, body: bytes):
        srv = self.server
        start = 0
        rng = self.headers.get("Range")
        if rng and not srv.no_range:
            start = int(re.match(r"bytes=(\d+)-", rng).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        rest = body[start:]
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        if srv.stall_mid.get(key, 0) > 0:     # send half, then nothing (the connection stays open)
            srv.stall_mid[key] -= 1
            self.wfile.write(rest[: len(rest) // 2])
            self.wfile.flush()
            srv.release.wait(30)
            self.close_connection = True
            return
        if srv.drop.get(key, 0) > 0:          # send half, then hang up
            srv.drop[key] -= 1
            self.wfile.write(rest[: len(rest) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(rest)

    def do_GET(self):
        srv = self.server
        url = urllib.parse.urlparse(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        srv.log.append((url.path, q, self.headers.get("Range"), self.headers.get("Cookie")))
        if url.path in srv.stall:                  # accept, read the request, then send nothing
            srv.release.wait(30)
            self.close_connection = True
            return
        if url.path == "/gdrive/download":
            fid = q.get("id", "")
            if fid == "quota":
                return self._html("<html><head><title>Google Drive - Quota exceeded</title></head>"
                                  "<body>Too many users have viewed or downloaded this file recently.</body></html>")
            if fid == "small":                     # small files come straight away
                return self._file("gd:small", srv.files["/gdrive/small"])
            return self._html(
                "<html><head><title>Google Drive - Virus scan warning</title></head><body>"
                "<p>Google Drive can't scan this file for viruses.</p>"
                '<form id="download-form" action="/gdrive/confirmed" method="get">'
                '<input type="submit" id="uc-download-link" value="Download anyway"/>'
                f'<input type="hidden" name="id" value="{fid}">'
                '<input type="hidden" name="export" value="download">'
                '<input type="hidden" name="confirm" value="t">'
                '<input type="hidden" name="uuid" value="1234-abcd"></form></body></html>',
                cookie="NID=abc; Path=/")
        if url.path == "/gdrive/confirmed":
            if q.get("confirm") != "t" or q.get("uuid") != "1234-abcd" or not (self.headers.get("Cookie") or ""):
                return self._html("<html><head><title>Error 403</title></head></html>", status=403)
            key = "gd:" + q.get("id", "")
            if key not in srv.gdrive:
                return self._html("<html><head><title>Not found</title></head></html>", status=404)
            return self._file(key, srv.gdrive[key])
        if url.path in srv.files:
            return self._file(url.path, srv.files[url.path])
        if url.path in srv.pages:
            return self._html(srv.pages[url.path])
        self.send_error(404)


class Server:
    def __init__(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.files = {}
        self.httpd.gdrive = {}
        self.httpd.pages = {}
        self.httpd.drop = collections.Counter()
        self.httpd.no_range = False
        self.httpd.stall = set()
        self.httpd.stall_mid = collections.Counter()
        self.httpd.release = threading.Event()
        self.httpd.log = []
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, path: str, data: bytes) -> str:
        self.httpd.files[path] = data
        return self.base + path

    @property
    def log(self):
        return self.httpd.log

    def close(self):
        self.httpd.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def smile_bytes(shared_dir) -> bytes:
    return (shared_dir / "directions" / "Smiling_boundary.npy").read_bytes()


def _use(monkeypatch, name: str, *sources: Source):
    monkeypatch.setitem(W.REGISTRY, name, W.replace_sources(name, *sources))


def _files() -> list[str]:
    """Files in the cache, leaving out the .locks and .downloads folders."""
    return sorted(p.name for p in W.weights_home().iterdir() if not p.name.startswith("."))


# ---------------------------------------------------------------------------------------------
# registry and cache basics


def test_registry_names_and_published_checksums(shared_dir):
    for name in ("stylegan2-ffhq", "fse-ffhq", "arcface-r50", "bisenet-19", "fan-2d", "direction-smile",
                 "direction-makeup", "direction-eyeglasses", "lpips-alex"):
        assert name in W.REGISTRY
        e = W.REGISTRY[name]
        assert e.sources and e.licence and e.licence_url.startswith("https://")
    # the three directions carry the checksums of ../shared/directions/README.md, and they are right
    for name, fname in (("direction-smile", "Smiling_boundary.npy"), ("direction-makeup", "Heavy_Makeup_boundary.npy"),
                        ("direction-eyeglasses", "Eyeglasses_boundary.npy")):
        e = W.REGISTRY[name]
        assert e.sources[0].url.endswith(f"/4aa0069aedec3993dab6f3471f481616617d7bc9/boundaries_ours/{fname}")
        assert hashlib.sha256((shared_dir / "directions" / fname).read_bytes()).hexdigest() == e.sha256
    gd = {W.REGISTRY[n].sources[0].gdrive_id for n in ("stylegan2-ffhq", "fse-ffhq", "arcface-r50", "bisenet-19")}
    assert gd == {"1bMTNWkh5LArlaWSc_wa8VKyq2V42T2z0", "1RnnBL77j_Can0dY1KOiXHvG224MxjvzC",
                  "1coFTz-Kkgvoc_gRT8JFzqCgeC3lAFWQp", "154JgKpzCPW82qINcVieuPH3fZ2e0P812"}
    assert W.REGISTRY["stylegan2-ffhq"].sources[1].gdrive_id == "1EM87UquaoQmk17Q8d5kYIAHqu0dkYqdT"


def test_fan_urls_are_face_alignments_own():
    api = pytest.importorskip("face_alignment.api")
    from face_alignment.detection.sfd import sfd_detector
    assert api.models_urls["2DFAN-4"] == W.FAN_2D_URL == W.REGISTRY["fan-2d"].sources[0].url
    assert sfd_detector.models_urls["s3fd"] == W.FAN_S3FD_URL == W.REGISTRY["fan-s3fd"].sources[0].url
    # the cached names are face_alignment's, so its torch-hub cache files can be imported as they are
    assert W.REGISTRY["fan-2d"].filename == "2DFAN4-11f355bf06.pth.tar"


def test_weights_home_and_require_message(tmp_path, monkeypatch):
    monkeypatch.setenv("FSVIDEO_HOME", str(tmp_path / "cache"))
    assert W.weights_home() == tmp_path / "cache"
    assert W.path_of("stylegan2-ffhq") is None
    with pytest.raises(WeightsError) as ei:
        W.require("stylegan2-ffhq")
    assert str(ei.value) == ("weights `stylegan2-ffhq` are missing; run `fsvideo weights download stylegan2-ffhq` "
                             "(or `fsvideo weights import stylegan2-ffhq FILE`)")
    with pytest.raises(WeightsError, match=r"`fse-ffhq`, `bisenet-19` are missing; run `fsvideo weights download "
                                           r"fse-ffhq bisenet-19`"):
        W.require_all(["fse-ffhq", "bisenet-19"])
    with pytest.raises(WeightsError, match="unknown weights name 'nope'.*stylegan2-ffhq"):
        W.require("nope")
    monkeypatch.delenv("FSVIDEO_HOME")
    assert "fsvideo" in str(W.weights_home())


# ---------------------------------------------------------------------------------------------
# downloads


def test_download_checks_sha256_and_records(server, monkeypatch, smile_bytes):
    _use(monkeypatch, "direction-smile", Source(url=server.add("/Smiling_boundary.npy", smile_bytes), sha256=SMILE_SHA))
    seen = []
    p = W.download("direction-smile", progress=lambda d, t: seen.append((d, t)))
    assert p == W.weights_home() / "Smiling_boundary.npy" and p.read_bytes() == smile_bytes
    assert seen[-1] == (len(smile_bytes), len(smile_bytes)) and all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    rec = W.manifest_record("direction-smile")
    assert rec["sha256"] == SMILE_SHA and rec["verified"] is True and rec["source"].startswith(server.base)
    assert not list(W.weights_home().glob("*.part"))
    # present: a second call does not touch the network
    n = len(server.log)
    assert W.download("direction-smile") == p and len(server.log) == n
    [res] = W.verify(["direction-smile"])
    assert res.status == "verified" and res.ok


def test_resume_after_dropped_connection(server, monkeypatch, smile_bytes):
    monkeypatch.setattr(fetch, "CHUNK", 4096)
    url = server.add("/d.npy", smile_bytes)
    server.httpd.drop["/d.npy"] = 1
    _use(monkeypatch, "direction-smile", Source(url=url, sha256=SMILE_SHA))
    with pytest.raises(WeightsError, match="interrupted after 18496 bytes.*run the same command again to resume"):
        W.download("direction-smile", retries=0)
    final = W.weights_home() / "Smiling_boundary.npy"
    part = final.with_name(final.name + ".part")
    assert not final.exists() and W.path_of("direction-smile") is None      # nothing at the final path
    assert part.stat().st_size == len(smile_bytes) // 2                       # the partial file stays
    W.download("direction-smile", retries=0)
    assert final.read_bytes() == smile_bytes and not part.exists()
    assert server.log[-1][2] == f"bytes={len(smile_bytes) // 2}-"            # resumed with a Range request


def test_retry_resumes_within_one_call(server, monkeypatch, smile_bytes):
    url = server.add("/d.npy", smile_bytes)
    server.httpd.drop["/d.npy"] = 2
    _use(monkeypatch, "direction-smile", Source(url=url, sha256=SMILE_SHA))
    p = W.download("direction-smile", retries=3)
    assert p.read_bytes() == smile_bytes
    assert [r for _, _, r, _ in server.log] == [None, "bytes=18496-", "bytes=27744-"]


def test_a_stalled_server_gives_up_after_two_silent_reads(server, monkeypatch, smile_bytes):
    """A server that accepted the connection and then sent nothing held `weights download` for about
    4 minutes (4 tries of a 60 s timeout) before a message.  Now a stall (no byte for ``timeout``
    seconds) is tried once more and then given up, with one line naming the address and the fix;
    a stall after some bytes still resumes."""
    import time
    url = server.add("/d.npy", smile_bytes)
    server.httpd.stall.add("/d.npy")
    _use(monkeypatch, "direction-smile", Source(url=url, sha256=SMILE_SHA))
    t0 = time.monotonic()
    with pytest.raises(WeightsError) as err:
        W.download("direction-smile", retries=3, timeout=0.3)
    took = time.monotonic() - t0
    msg = str(err.value)
    assert len(server.log) == fetch.STALL_TRIES == 2, server.log           # not retries + 1 = 4 tries
    assert took < 2.5, took
    assert f"{url}: the server sent nothing for 0.3 s, 2 times in a row" in msg and "\n" not in msg, msg
    assert "run the same command again to resume" in msg and "fsvideo weights import direction-smile" in msg
    assert W.path_of("direction-smile") is None

    server.httpd.stall.clear()                        # a stall after some bytes is a dropped connection:
    server.httpd.stall_mid["/d.npy"] = 2              # resumed, and each try that got bytes counts anew
    assert W.download("direction-smile", retries=3, timeout=0.3).read_bytes() == smile_bytes
    assert [r for _, _, r, _ in server.log[2:]] == [None, "bytes=18496-", "bytes=27744-"]


def test_server_without_range_restarts(server, monkeypatch, smile_bytes):
    url = server.add("/d.npy", smile_bytes)
    _use(monkeypatch, "direction-smile", Source(url=url, sha256=SMILE_SHA))
    home = W.weights_home()
    home.mkdir(parents=True, exist_ok=True)
    (home / "Smiling_boundary.npy.part").write_bytes(b"garbage that must not survive")
    server.httpd.no_range = True
    assert W.download("direction-smile").read_bytes() == smile_bytes


def test_checksum_mismatch_removes_the_file(server, monkeypatch, smile_bytes):
    _use(monkeypatch, "direction-smile", Source(url=server.add("/d.npy", smile_bytes), sha256="0" * 64))
    with pytest.raises(WeightsError) as ei:
        W.download("direction-smile")
    msg = str(ei.value)
    assert "sha256 mismatch" in msg and SMILE_SHA in msg and "removed" in msg and "weights import" in msg
    assert _files() == []                              # no final file, no .part, no manifest entry


def test_http_error_and_html_page_leave_nothing(server, monkeypatch):
    server.httpd.pages["/moved"] = "<html><title>moved</title></html>"
    _use(monkeypatch, "direction-smile", Source(url=server.base + "/missing.npy", sha256=SMILE_SHA),
         Source(url=server.base + "/moved", sha256=SMILE_SHA))
    with pytest.raises(WeightsError) as ei:
        W.download("direction-smile")
    assert "HTTP 404" in str(ei.value) and "web page instead of the file" in str(ei.value)
    assert W.path_of("direction-smile") is None
    assert _files() == []


def test_falls_back_to_the_next_source(server, monkeypatch, smile_bytes):
    _use(monkeypatch, "direction-smile", Source(url=server.base + "/missing.npy", sha256=SMILE_SHA),
         Source(url=server.add("/ok.npy", smile_bytes), sha256=SMILE_SHA))
    assert W.download("direction-smile").read_bytes() == smile_bytes
    assert W.manifest_record("direction-smile")["source"].endswith("/ok.npy")


def test_unpublished_checksum_is_recorded_and_test_loaded(server, monkeypatch, smile_bytes):
    _use(monkeypatch, "direction-smile", Source(url=server.add("/bad.npy", b"\x00" * 1000)))
    with pytest.raises(WeightsError, match="does not load.*removed"):
        W.download("direction-smile")
    assert W.path_of("direction-smile") is None
    _use(monkeypatch, "direction-smile", Source(url=server.add("/good.npy", smile_bytes)))
    W.download("direction-smile")
    rec = W.manifest_record("direction-smile")
    assert rec["verified"] is False and rec["sha256"] == SMILE_SHA
    [row] = [r for r in W.entries_status() if r.name == "direction-smile"]
    assert row.present and row.verified == "unverified" and row.size == len(smile_bytes)
    [res] = W.verify(["direction-smile"])
    assert res.status == "unverified" and "no published checksum" in res.detail


def test_mirror_is_tried_first(server, monkeypatch, smile_bytes):
    server.add("/mirror/Smiling_boundary.npy", smile_bytes)
    monkeypatch.setenv("FSVIDEO_WEIGHTS_MIRROR", server.base + "/mirror/")
    _use(monkeypatch, "direction-smile", Source(url="http://127.0.0.1:9/unreachable.npy", sha256=SMILE_SHA))
    assert W.download("direction-smile").read_bytes() == smile_bytes
    assert server.log[0][0] == "/mirror/Smiling_boundary.npy"


def test_archive_member_is_extracted_and_checked(server, monkeypatch, tmp_path, smile_bytes):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo("pkg-1.0/pkg/weights/s.npy")
        info.size = len(smile_bytes)
        t.addfile(info, io.BytesIO(smile_bytes))
    data = buf.getvalue()
    url = server.add("/pkg-1.0.tar.gz", data)
    good = Source(url=url, member="pkg-1.0/pkg/weights/s.npy", archive_sha256=hashlib.sha256(data).hexdigest(),
                  sha256=SMILE_SHA)
    _use(monkeypatch, "direction-smile", good)
    assert W.download("direction-smile").read_bytes() == smile_bytes
    assert not list((W.weights_home() / ".downloads").iterdir())          # the archive is not kept
    bad = Source(url=url, member="pkg-1.0/pkg/weights/s.npy", archive_sha256="1" * 64, sha256=SMILE_SHA)
    _use(monkeypatch, "direction-smile", bad)
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        W.download("direction-smile", force=True)
    assert W.path_of("direction-smile").read_bytes() == smile_bytes       # the good file survives a failed --force


def test_concurrent_download_is_refused(server, monkeypatch, smile_bytes):
    fcntl = pytest.importorskip("fcntl")
    _use(monkeypatch, "direction-smile", Source(url=server.add("/d.npy", smile_bytes), sha256=SMILE_SHA))
    locks = W.weights_home() / ".locks"
    locks.mkdir(parents=True)
    with open(locks / "direction-smile.lock", "a") as f:   # another process holds the lock
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(WeightsError, match="another fsvideo process is downloading or importing `direction-smile`"):
            W.download("direction-smile")
        fcntl.flock(f, fcntl.LOCK_UN)
    assert W.download("direction-smile").read_bytes() == smile_bytes


def test_full_or_read_only_cache_is_one_line_naming_the_folder(server, monkeypatch, smile_bytes):
    """A full disk (here RLIMIT_FSIZE: EFBIG, as ENOSPC) or a read-only cache folder raised a bare OSError,
    an internal error; now a WeightsError naming the folder and FSVIDEO_HOME.  The .part stays (resumable)."""
    import errno
    import pathlib
    resource = pytest.importorskip("resource")
    _use(monkeypatch, "direction-smile", Source(url=server.add("/s.npy", smile_bytes), sha256=SMILE_SHA))
    W.weights_home().mkdir(parents=True, exist_ok=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20000, hard))      # Python ignores SIGXFSZ: writes fail
    try:
        with pytest.raises(WeightsError) as ei:
            W.download("direction-smile")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert f"cannot write `direction-smile` into the weights folder {W.weights_home()}" in str(ei.value)
    assert "free space in" in str(ei.value) and "FSVIDEO_HOME" in str(ei.value)
    assert _files() == ["Smiling_boundary.npy.part"]

    real_mkdir = pathlib.Path.mkdir

    def read_only(self, *a, **k):
        if self.name == ".locks":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *a, **k)
    monkeypatch.setattr(pathlib.Path, "mkdir", read_only)
    with pytest.raises(WeightsError, match=r"cannot write the lock of `direction-smile` into the weights folder .*"
                                           r"\(Permission denied\); make .* writable or set FSVIDEO_HOME"):
        W.download("direction-smile")
    monkeypatch.setattr(pathlib.Path, "mkdir", real_mkdir)
    assert W.download("direction-smile").read_bytes() == smile_bytes          # resumes from the .part


# ---------------------------------------------------------------------------------------------
# Google Drive


def test_google_drive_confirm_form(server, monkeypatch, smile_bytes):
    monkeypatch.setattr(fetch, "GDRIVE_URL", server.base + "/gdrive/download")
    server.httpd.gdrive["gd:FILEID"] = smile_bytes
    server.httpd.drop["gd:FILEID"] = 1                      # and the confirmed download drops once
    _use(monkeypatch, "direction-smile", Source(gdrive_id="FILEID", sha256=SMILE_SHA))
    p = W.download("direction-smile")
    assert p.read_bytes() == smile_bytes
    paths = [(path, q.get("id"), q.get("confirm"), q.get("uuid"), rng) for path, q, rng, _ in server.log]
    assert paths[0] == ("/gdrive/download", "FILEID", None, None, None)
    assert paths[1] == ("/gdrive/confirmed", "FILEID", "t", "1234-abcd", None)
    assert paths[2] == ("/gdrive/confirmed", "FILEID", "t", "1234-abcd", f"bytes={len(smile_bytes) // 2}-")
    assert "NID=abc" in (server.log[1][3] or "")             # the cookie of the warning page is sent back
    assert "drive.google.com/file/d/FILEID" in W.manifest_record("direction-smile")["source"]


def test_google_drive_small_file_and_quota_page(server, monkeypatch, smile_bytes):
    monkeypatch.setattr(fetch, "GDRIVE_URL", server.base + "/gdrive/download")
    server.httpd.files["/gdrive/small"] = smile_bytes
    _use(monkeypatch, "direction-smile", Source(gdrive_id="small", sha256=SMILE_SHA))
    assert W.download("direction-smile").read_bytes() == smile_bytes
    _use(monkeypatch, "direction-makeup", Source(gdrive_id="quota"))
    with pytest.raises(WeightsError) as ei:
        W.download("direction-makeup")
    assert "Quota exceeded" in str(ei.value) and "browser" in str(ei.value) and "weights import" in str(ei.value)
    assert W.path_of("direction-makeup") is None


def test_google_drive_older_pages():
    old = (b'<html><a id="uc-download-link" href="/uc?export=download&amp;confirm=AbC_1&amp;id=XYZ">'
           b"Download anyway</a></html>")
    url = fetch._gdrive_confirm_url(old, "https://drive.google.com/uc?export=download&id=XYZ", "XYZ")
    assert url == "https://drive.google.com/uc?export=download&confirm=AbC_1&id=XYZ"
    assert fetch._gdrive_confirm_url(b"<html><title>Sign in</title></html>", "https://x/", "XYZ") is None


def test_confirmation_pages_are_read_by_gdowns_parser(monkeypatch):
    """gdown's parser reads the pages (also its JSON `downloadUrl` form); its error page means None."""
    import importlib
    gd = importlib.import_module("gdown.download")
    seen = []
    real = gd.get_url_from_gdrive_confirmation
    monkeypatch.setattr(gd, "get_url_from_gdrive_confirmation", lambda c: seen.append(c) or real(c))
    page = b'<script>var x = {"downloadUrl":"https://drive.usercontent.google.com/download?id\\u003dXYZ\\u0026confirm\\u003dt"};'
    assert (fetch._gdrive_confirm_url(page, "https://drive.google.com/uc?id=XYZ", "XYZ")
            == "https://drive.usercontent.google.com/download?id=XYZ&confirm=t")
    assert len(seen) == 1
    quota = b'<html><p class="uc-error-subcaption">Too many users have viewed or downloaded this file.</p></html>'
    assert fetch._gdrive_confirm_url(quota, "https://drive.google.com/uc?id=XYZ", "XYZ") is None


# ---------------------------------------------------------------------------------------------
# import


def test_import_good_and_bad_directions(tmp_path, shared_dir, smile_bytes):
    res = W.import_file("direction-smile", shared_dir / "directions" / "Smiling_boundary.npy")
    assert res.verified and not res.converted and res.warnings == []
    assert W.require("direction-smile").read_bytes() == smile_bytes
    # a valid but different direction: a warning, not an error
    other = tmp_path / "mine.npy"
    v = np.random.default_rng(0).standard_normal((18, 512)).astype(np.float32)
    np.save(other, v / np.linalg.norm(v))
    res = W.import_file("direction-smile", other)
    assert not res.verified and "not the released" in res.warnings[0]
    assert W.verify(["direction-smile"])[0].status == "unverified"
    # not unit norm, wrong shape: errors, and the cached file is untouched
    bad = tmp_path / "bad.npy"
    np.save(bad, np.ones((1, 9216), np.float32))
    with pytest.raises(WeightsError, match="L2 norm 96"):
        W.import_file("direction-smile", bad)
    np.save(bad, np.zeros((3, 3), np.float32))
    with pytest.raises(WeightsError, match=r"shape \(3, 3\)"):
        W.import_file("direction-smile", bad)
    assert np.allclose(np.load(W.require("direction-smile")), v / np.linalg.norm(v))
    with pytest.raises(InputError, match="no such file"):
        W.import_file("direction-smile", tmp_path / "nothing.npy")
    assert not list(W.weights_home().glob("*.part"))


def _tiny_arcface():
    from fsvideo.models.arcface import ArcFace
    torch.manual_seed(0)
    return ArcFace(layers=(1, 1, 1, 1), widths=(8, 8, 16, 16), embedding_size=16, stem_channels=8).eval()


def test_import_converts_a_dataparallel_checkpoint(tmp_path):
    net = _tiny_arcface()
    f = tmp_path / "backbone_dp.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in net.state_dict().items()}}, f)
    res = W.import_file("arcface-r50", f)
    assert res.converted and not res.verified and "converted" in res.warnings[-1]
    from fsvideo.models.arcface import load_arcface
    loaded = load_arcface(W.require("arcface-r50"))
    x = torch.rand(1, 3, 112, 112) * 2 - 1
    assert torch.equal(loaded(x), net(x))
    rec = W.manifest_record("arcface-r50")
    assert rec["converted"] and rec["original_sha256"] == W.sha256_file(f) and rec["sha256"] != rec["original_sha256"]
    [row] = [r for r in W.entries_status() if r.name == "arcface-r50"]
    assert row.verified == "converted"


def test_download_without_checksum_is_converted_when_needed(server, monkeypatch):
    net = _tiny_arcface()
    buf = io.BytesIO()
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, buf)
    _use(monkeypatch, "arcface-r50", Source(url=server.add("/backbone.pth", buf.getvalue())))
    p = W.download("arcface-r50")
    rec = W.manifest_record("arcface-r50")
    assert rec["converted"] and not rec["verified"]
    assert rec["original_sha256"] == hashlib.sha256(buf.getvalue()).hexdigest()
    assert rec["sha256"] == W.sha256_file(p) != rec["original_sha256"]
    assert _files() == ["backbone.pth", "manifest.json"]
    assert W.verify(["arcface-r50"])[0].status == "unverified"


def test_import_rejects_a_file_that_does_not_load_naming_keys(tmp_path):
    from fsvideo.models.bisenet import BiSeNet
    sd = BiSeNet(19, widths=(8, 8, 16, 16), cp_channels=8, ffm_channels=16, aux_channels=8).state_dict()
    del sd["ffm.conv1.weight"]
    sd["extra.weight"] = torch.zeros(1)
    f = tmp_path / "79999_iter.pth"
    torch.save(sd, f)
    with pytest.raises(WeightsError) as ei:
        W.import_file("bisenet-19", f)
    assert "missing keys: ffm.conv1.weight" in str(ei.value) and "unexpected keys: extra.weight" in str(ei.value)
    assert W.path_of("bisenet-19") is None and not list(W.weights_home().glob("*.part"))
    f.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match="cannot be read as weights"):
        W.import_file("bisenet-19", f)


def test_import_generator_and_encoder_checkpoints(tmp_path):
    from fsvideo.models.loading import load_generator_checkpoint
    from fsvideo.models.random_init import random_model, save_official_checkpoints
    model = random_model(size=32, channel_max=16, style_dim=16, enc_widths=(8, 8, 8, 16))
    enc, gen = save_official_checkpoints(model, tmp_path)
    res = W.import_file("stylegan2-ffhq", gen)
    assert not res.converted and res.path.name == "psp_ffhq_encode.pt"
    G, avg = load_generator_checkpoint(W.require("stylegan2-ffhq"))
    assert torch.equal(avg, model.latent_avg)
    assert not W.import_file("fse-ffhq", enc).converted
    # a pSp checkpoint whose opts is an argparse.Namespace: weights_only refuses it, the converter fixes it
    ck = torch.load(gen, weights_only=True)
    ck["opts"] = argparse.Namespace(output_size=32, encoder_type="GradualStyleEncoder")
    ns = tmp_path / "psp_namespace.pt"
    torch.save(ck, ns)
    # the one safe reader allows argparse.Namespace (it only holds attributes; pSp forks store opts so)
    G2, _ = load_generator_checkpoint(ns)
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), G2.state_dict().values()))
    res = W.import_file("stylegan2-ffhq", ns)
    assert not res.converted
    from fsvideo.models.checkpoints import convert_generator
    from fsvideo.models.loading import read_checkpoint
    assert convert_generator(read_checkpoint(ns))["opts"] == {"output_size": 32, "encoder_type": "GradualStyleEncoder"}
    # a rosinality-format file keeps its own name, replacing the pSp one
    ros = tmp_path / "stylegan2-ffhq-config-f.pt"
    torch.save({"g_ema": {k[len("decoder."):]: v for k, v in ck["state_dict"].items()},
                "latent_avg": model.latent_avg[0].clone()}, ros)
    res = W.import_file("stylegan2-ffhq", ros)
    assert res.path.name == "stylegan2-ffhq-config-f.pt" and W.path_of("stylegan2-ffhq") == res.path
    assert not (W.weights_home() / "psp_ffhq_encode.pt").exists()
    # the encoder does not load as a generator: error names the problem
    with pytest.raises(WeightsError, match="not a StyleGAN2 generator checkpoint"):
        W.import_file("stylegan2-ffhq", enc)


# ---------------------------------------------------------------------------------------------
# verify


def test_verify_detects_changes(shared_dir):
    W.import_file("direction-smile", shared_dir / "directions" / "Smiling_boundary.npy")
    assert [r.status for r in W.verify()] == ["verified"]
    p = W.require("direction-smile")
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    [r] = W.verify(["direction-smile"])
    assert r.status == "corrupt" and "download direction-smile --force" in r.detail
    assert W.verify(["fse-ffhq"])[0].status == "missing"


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_list_download_verify_path(server, monkeypatch, smile_bytes):
    from click.testing import CliRunner

    from fsvideo.cli import cli
    _use(monkeypatch, "direction-smile", Source(url=server.add("/s.npy", smile_bytes), sha256=SMILE_SHA))
    runner = CliRunner()
    r = runner.invoke(cli, ["weights", "list"], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "stylegan2-ffhq" in r.output and "lpips-alex" in r.output and "direction-smile" in r.output
    r = runner.invoke(cli, ["weights", "download", "direction-smile"])
    assert r.exit_code == 0, r.output
    assert "verified" in r.output
    r = runner.invoke(cli, ["weights", "path", "direction-smile"])
    assert r.exit_code == 0 and r.output.strip() == str(W.weights_home() / "Smiling_boundary.npy")
    r = runner.invoke(cli, ["weights", "verify"])
    assert r.exit_code == 0 and "verified direction-smile" in " ".join(r.output.split())
    r = runner.invoke(cli, ["weights", "list"], terminal_width=200)
    assert re.search(r"direction-smile.*yes.*yes", r.output)
    r = runner.invoke(cli, ["weights", "path", "fse-ffhq"])
    assert isinstance(r.exception, WeightsError)
    r = runner.invoke(cli, ["weights", "verify", "fse-ffhq"])
    assert isinstance(r.exception, WeightsError) and "missing" in r.output


def test_cli_download_over_a_damaged_cached_file_fetches_it_again(server, monkeypatch, smile_bytes):
    """`weights download` said 'already present' over a cached file that had changed since (only
    `weights verify` noticed); it now re-hashes it and fetches a damaged one again."""
    from click.testing import CliRunner

    from fsvideo.cli import cli
    _use(monkeypatch, "direction-smile", Source(url=server.add("/s.npy", smile_bytes), sha256=SMILE_SHA))
    runner = CliRunner()
    assert runner.invoke(cli, ["weights", "download", "direction-smile"]).exit_code == 0
    r = runner.invoke(cli, ["weights", "download", "direction-smile"])
    assert r.exit_code == 0 and "already present" in r.output and "(verified)" in r.output
    p = W.require("direction-smile")
    p.write_bytes(p.read_bytes()[:-8])
    r = runner.invoke(cli, ["weights", "download", "direction-smile"], terminal_width=300)
    assert r.exit_code == 0, r.output
    assert "is corrupt" in " ".join(r.output.split()) and "downloading it again" in " ".join(r.output.split())
    assert p.read_bytes() == smile_bytes and W.verify(["direction-smile"])[0].status == "verified"


def test_cli_download_failure_exit_code(server, monkeypatch):
    from click.testing import CliRunner

    from fsvideo.cli import cli
    _use(monkeypatch, "direction-smile", Source(url=server.base + "/nope.npy", sha256=SMILE_SHA))
    r = CliRunner().invoke(cli, ["weights", "download", "direction-smile"])
    assert r.exit_code == 2 and "HTTP 404" in r.output


def test_cli_subprocess_missing_weights_message(tmp_path):
    env = dict(os.environ, FSVIDEO_HOME=str(tmp_path))
    p = subprocess.run([sys.executable, "-m", "fsvideo", "weights", "path", "fse-ffhq"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "weights `fse-ffhq` are missing; run `fsvideo weights download fse-ffhq`" in " ".join(p.stderr.split())


def test_cli_main_download_failure_exits_nonzero(server, monkeypatch, capsys):
    """Through the real entry point (not CliRunner): click returns a command's Exit code in
    non-standalone mode, and `fsvideo weights download` exited 0 after a failed download."""
    from fsvideo.cli import main
    _use(monkeypatch, "direction-smile", Source(url=server.base + "/nope.npy", sha256=SMILE_SHA))
    with pytest.raises(SystemExit) as ei:
        main(["weights", "download", "direction-smile"])
    assert ei.value.code == 2
    assert "HTTP 404" in capsys.readouterr().err
