"""known_sha256: a weight file's digest is computed once and recomputed when the file changes."""
from __future__ import annotations

import hashlib
import os

import pytest

import fsvideo.weights.digests as D
from fsvideo.weights import store


@pytest.fixture
def counted(monkeypatch):
    """Count real hashing calls; start each test with an empty in-process memo."""
    calls = []
    real = D.sha256_file

    def spy(path, progress=None):
        calls.append(str(path))
        return real(path, progress)
    monkeypatch.setattr(D, "sha256_file", spy)
    monkeypatch.setattr(D, "_memo", {})
    return calls


def test_hashed_once_then_remembered_across_processes(tmp_path, counted, monkeypatch):
    f = tmp_path / "g.pt"
    f.write_bytes(b"weights" * 1000)
    want = hashlib.sha256(f.read_bytes()).hexdigest()
    assert D.known_sha256(f) == want and len(counted) == 1
    assert D.known_sha256(f) == want and len(counted) == 1          # in-process memo
    monkeypatch.setattr(D, "_memo", {})                             # a new process: the digest file
    assert D.known_sha256(f) == want and len(counted) == 1
    assert (store.weights_home() / D.DIGESTS).is_file()


def test_a_rewritten_file_is_hashed_again(tmp_path, counted):
    f = tmp_path / "g.pt"
    f.write_bytes(b"a" * 100)
    D.known_sha256(f)
    f.write_bytes(b"b" * 100)                                       # same size, new content
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))        # coarse clocks: make the change visible
    assert D.known_sha256(f) == hashlib.sha256(b"b" * 100).hexdigest() and len(counted) == 2


def test_registry_files_use_the_manifest(counted):
    h = store.home(create=True)
    f = h / "stylegan2-ffhq-config-f.pt"
    f.write_bytes(b"x" * 64)
    store.record("stylegan2-ffhq", f, "ab" * 32, source="test", verified=True)
    assert D.known_sha256(f) == "ab" * 32 and not counted
    f.write_bytes(b"x" * 65)                                        # not the recorded file any more
    assert D.known_sha256(f) == hashlib.sha256(b"x" * 65).hexdigest() and len(counted) == 1


def test_a_read_only_cache_still_answers(tmp_path, counted, monkeypatch):
    f = tmp_path / "g.pt"
    f.write_bytes(b"z" * 10)

    def refuse(*a, **k):
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(D, "atomic_output", refuse)
    assert D.known_sha256(f) == hashlib.sha256(b"z" * 10).hexdigest()
