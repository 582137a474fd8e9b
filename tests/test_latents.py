import numpy as np
import pytest

from fsvideo.errors import InputError
from fsvideo.latents import FrameLatents, LatentsReader, LatentsWriter


def _frame(i, n, rng):
    return FrameLatents(i, np.arange(n), rng.standard_normal((n, 4, 8)).astype(np.float32),
                        rng.standard_normal((n, 2, 4, 4)).astype(np.float32), np.tile(np.eye(3), (n, 1, 1)),
                        rng.standard_normal((n, 68, 2)).astype(np.float32))


def test_round_trip_with_faceless_frames(tmp_path):
    rng = np.random.default_rng(0)
    frames = [_frame(i, n, rng) for i, n in enumerate([1, 0, 2, 1, 0, 1, 3])]
    w = LatentsWriter(tmp_path / "a.latents", meta={"source": "x.mp4"}, chunk_frames=3, f_dtype="float32")
    for f in frames:
        w.add(f)
    w.close()
    r = LatentsReader(tmp_path / "a.latents")
    got = list(r)
    assert len(r) == 7 and r.meta["source"] == "x.mp4" and [g.frame for g in got] == list(range(7))
    for a, b in zip(frames, got):
        assert np.array_equal(a.w, b.w) and np.array_equal(a.F, b.F) and np.array_equal(a.track, b.track)
        assert np.array_equal(a.matrix, b.matrix) and np.array_equal(a.landmarks, b.landmarks)


def test_incomplete_file_is_a_clear_error(tmp_path):
    w = LatentsWriter(tmp_path / "b.latents", chunk_frames=1)
    w.add(_frame(0, 1, np.random.default_rng(0)))
    w.abort()                         # interrupted: no meta.json
    with pytest.raises(InputError, match="b.latents is not a complete"):
        LatentsReader(tmp_path / "b.latents")
    (tmp_path / "c.latents").write_bytes(b"junk")
    with pytest.raises(InputError, match="c.latents"):
        LatentsReader(tmp_path / "c.latents")


def _meta(**kw):
    base = dict(source_sha256="aa", resolution=64, k=5, noise_seed=3, generator="g.pt", generator_sha256="1" * 64,
                encoder="e.pt", encoder_sha256="2" * 64)
    base.update(kw)
    return base


def _written(tmp_path, meta):
    w = LatentsWriter(tmp_path / "m.latents", meta=meta)
    w.add(_frame(0, 1, np.random.default_rng(0)))
    w.close()
    return LatentsReader(tmp_path / "m.latents")


def test_check_refuses_another_model_or_k_naming_both_values(tmp_path):
    r = _written(tmp_path, _meta())
    assert r.noise_seed == 3
    same = dict(generator="stylegan2-ffhq", generator_sha256="1" * 64, encoder="e.pt", encoder_sha256="2" * 64)
    r.check(source="v.mp4", source_sha256="aa", resolution=64, k=5, models=same)   # another name, same file: fine
    with pytest.raises(InputError, match="K=5, this model uses K=6"):
        r.check(source="v.mp4", source_sha256="aa", resolution=64, k=6, models=same)
    other = dict(same, encoder="other.pt", encoder_sha256="3" * 64)
    with pytest.raises(InputError, match=r"made with encoder e.pt \(sha256 222222222222\), this run uses "
                                         r"other.pt \(sha256 333333333333\)"):
        r.check(source="v.mp4", source_sha256="aa", resolution=64, k=5, models=other)
    with pytest.raises(InputError, match="another file than v.mp4"):
        r.check(source="v.mp4", source_sha256="bb", resolution=64, k=5, models=same)
    old = _written(tmp_path, _meta(generator_sha256=None, encoder_sha256=None))   # a file without checksums
    with pytest.raises(InputError, match="generator g.pt, this run uses h.pt"):
        old.check(source="v.mp4", source_sha256="aa", resolution=64, k=5, models=dict(same, generator="h.pt"))


def test_live_frames_index_and_random_chunk_access(tmp_path):
    """`on_add` sees every frame before the file is complete; `index` + `read_chunk` give random access."""
    rng = np.random.default_rng(1)
    frames = [_frame(i, n, rng) for i, n in enumerate([1, 0, 2, 1, 0, 1, 3])]
    seen = []
    w = LatentsWriter(tmp_path / "a.latents", chunk_frames=3, on_add=seen.append)
    for f in frames:
        w.add(f)
        assert seen[-1] is f
    w.close()
    r = LatentsReader(tmp_path / "a.latents")
    idx = r.index()
    assert [(c, fr) for c, fr, _ in idx] == [(0, 0), (0, 1), (0, 2), (1, 3), (1, 4), (1, 5), (2, 6)]
    assert all(np.array_equal(t, f.track) for (_, _, t), f in zip(idx, frames))
    (six,) = [g for g in r.read_chunk(2)]
    assert six.frame == 6 and np.array_equal(six.F, frames[6].F)


def _at(xs, ids, frame):
    """A frame whose faces sit at x = ``xs`` (64 px crops, scale 1) with track ``ids``."""
    m = np.stack([np.array([[1.0, 0, x], [0, 1, 50], [0, 0, 1]]) for x in xs]).reshape(-1, 3, 3)
    n = len(xs)
    w = np.array(xs, np.float32).reshape(n, 1, 1) * np.ones((n, 4, 8), np.float32)
    return FrameLatents(frame, np.array(ids, np.int64), w, np.ones((n, 2, 4, 4), np.float32), m,
                        np.zeros((n, 68, 2), np.float32))


def test_join_renumbers_frames_and_keeps_each_persons_id_across_the_seam(tmp_path):
    from fsvideo.latents import join_latents
    meta = {"source": "x.mp4", "resolution": 64, "start": None, "end": None}
    # a single run: A (id 0) at x=100, B (id 1) at x=300 all along, C (id 2) from frame 7
    whole = [_at([100, 300] + ([500] if i >= 7 else []), [0, 1] + ([2] if i >= 7 else []), i) for i in range(10)]
    one = LatentsWriter(tmp_path / "one.latents", meta=meta, chunk_frames=4)
    first = LatentsWriter(tmp_path / "p1.latents", meta={**meta, "end": 0.5}, chunk_frames=4)
    second = LatentsWriter(tmp_path / "p2.latents", meta={**meta, "start": 0.5}, chunk_frames=4)
    for f in whole:
        one.add(f)
        if f.frame < 5:
            first.add(f)
    # the second span's tracker numbered B first, then A, and C as 7; it saw frames 3 and 4 as context
    for i in (3, 4):
        second.add_context(_at([300, 100], [0, 1], i))
    for i in range(5, 10):
        second.add(_at([300, 100] + ([500] if i >= 7 else []), [0, 1] + ([7] if i >= 7 else []), i - 5))
    for w in (one, first, second):
        w.close()
    assert "context_before" in LatentsReader(tmp_path / "p2.latents").meta
    n = join_latents([tmp_path / "p1.latents", tmp_path / "p2.latents"], tmp_path / "j.latents", {"end": None})
    a, b = LatentsReader(tmp_path / "one.latents"), LatentsReader(tmp_path / "j.latents")
    assert n == 10 and a.meta == {**b.meta, "chunks": a.meta["chunks"]}
    for x, y in zip(list(a), list(b)):
        order = np.argsort(y.track)
        assert x.frame == y.frame and np.array_equal(x.track, y.track[order])
        assert np.array_equal(x.w, y.w[order]) and np.array_equal(x.matrix, y.matrix[order])


def test_seek_reads_a_span_from_its_chunk_numbered_from_zero(tmp_path, monkeypatch):
    """What a rank of a split re-edit reads: the file's frames from `first` on, renumbered from 0, and
    the time its first decoded frame must have (checked as `first_time` is for a whole run)."""
    rng = np.random.default_rng(0)
    frames = [_frame(i, n, rng) for i, n in enumerate([1, 0, 2, 1, 0, 1, 3, 1])]
    w = LatentsWriter(tmp_path / "a.latents", meta={"first_time": 0.0, "start": None}, chunk_frames=3)
    for f in frames:
        w.add(f)
    w.close()
    r = LatentsReader(tmp_path / "a.latents").seek(4, 0.4)
    read = []
    monkeypatch.setattr(r, "read_chunk", lambda c, _f=r.read_chunk: read.append(c) or _f(c))
    got = list(r)
    assert read == [1, 2] and len(r) == 4 and [g.frame for g in got] == [0, 1, 2, 3]    # chunk 0 skipped
    for a, b in zip(frames[4:], got):
        assert np.array_equal(a.w, b.w) and np.array_equal(a.track, b.track)
    r.check_start(0.4 + 1e-6)                                          # the expected frame: fine
    with pytest.raises(InputError, match=r"a.latents has frame 4 at 0.400 s, this run's first frame is at 0.433 s"):
        r.check_start(0.433)
    with pytest.raises(InputError, match=r"a.latents starts at 0.000 s, this run's first frame is at 0.100 s"):
        LatentsReader(tmp_path / "a.latents").check_start(0.1)
    with pytest.raises(InputError, match="has no frame 8"):
        LatentsReader(tmp_path / "a.latents").seek(8, None)
