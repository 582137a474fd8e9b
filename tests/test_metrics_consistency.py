"""Eq. 9 (identity consistency) and ID similarity, exact on synthetic embeddings."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fsvideo.metrics.consistency import (
    ConsistencyAccumulator,
    id_similarity,
    identity_consistency,
    similarity_to_reference,
)


def test_ic_exact_on_constructed_embeddings():
    # frame 0 = e0; frames 1..4 at known angles from it: cosines 1, 0, -1, 0.5
    e0 = np.array([1.0, 0.0, 0.0])
    frames = np.array([e0, [1, 0, 0], [0, 1, 0], [-1, 0, 0], [0.5, math.sqrt(3) / 2, 0]])
    assert identity_consistency(frames) == pytest.approx((1 + 0 - 1 + 0.5) / 4, abs=1e-15)
    # scaling a frame's embedding does not change its cosine (R's output is normalised in Eq. 9)
    scaled = frames * np.array([[3.0], [0.2], [7.0], [1.0], [10.0]])
    assert identity_consistency(scaled) == pytest.approx(0.125, abs=1e-15)
    # the reference frame is not compared with itself (sum over i = 1..N)
    assert identity_consistency(np.array([e0, [0.0, 1.0, 0.0]])) == pytest.approx(0.0, abs=1e-15)


def test_ic_of_one_person_and_of_two():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 512))
    same = np.stack([a + 0.05 * rng.normal(size=512) for _ in range(10)])
    mixed = np.concatenate([same[:5], np.stack([b + 0.05 * rng.normal(size=512) for _ in range(5)])])
    assert identity_consistency(same) > 0.99
    assert identity_consistency(mixed) < 0.6


def test_degenerate_cases():
    assert math.isnan(identity_consistency(np.ones((1, 4))))
    assert math.isnan(identity_consistency(np.zeros((0, 4))))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        identity_consistency(np.ones(4))
    with pytest.raises(ValueError, match="same shape"):
        id_similarity(np.ones((2, 3)), np.ones((3, 3)))


def test_id_similarity_is_rowwise_cosine():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    b = np.array([[2.0, 0.0], [0.0, -1.0], [1.0, 0.0]])
    assert id_similarity(a, b) == pytest.approx([1.0, -1.0, 1 / math.sqrt(2)], abs=1e-15)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 20), st.integers(1, 8)),
              elements=st.floats(-10, 10, allow_nan=False)),
       st.integers(1, 7))
def test_streaming_equals_batch(e, chunk):
    e = e + np.where(np.abs(e).sum(axis=1, keepdims=True) < 1e-3, 1.0, 0.0)  # no all-zero rows
    acc = ConsistencyAccumulator()
    for i in range(0, len(e), chunk):
        acc.add(e[i:i + chunk])
    assert acc.value == pytest.approx(identity_consistency(e), abs=1e-12)
    assert np.allclose(acc.similarities, similarity_to_reference(e), atol=1e-12)
    n = e / np.linalg.norm(e, axis=1, keepdims=True)
    assert acc.value == pytest.approx(float(np.mean(n[1:] @ n[0])), abs=1e-12)


# ------------------------------------------------------------------------------------------------
# Eq. 9 through the clip evaluator, against a computation that shares none of its code


class _ColourIdentity:
    """A stand-in identity network R: the crop's 4x4 block means, centred (48 numbers); records its inputs."""

    name, dim = "colour-blocks", 48

    def __init__(self):
        self.seen: list[np.ndarray] = []

    def embed(self, crops, landmarks=None):
        self.seen.append(crops.copy())
        c = crops.astype(np.float64)
        n, s = c.shape[0], c.shape[1]
        e = c.reshape(n, 4, s // 4, 4, s // 4, 3).mean((2, 4)).reshape(n, -1)
        e = e - e.mean(1, keepdims=True)
        return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)


class _ZeroLPIPS:
    name = "zero"

    def __call__(self, a, b):
        import torch
        return torch.zeros(len(a))


def test_evaluator_ic_equals_eq9_by_hand(media_dir):
    from fsvideo.faces.detect import make_detector
    from fsvideo.metrics.evaluate import ClipEvaluator

    crops_in, recs_out = [], []

    class Darken:                                   # an "inversion" that changes the frames differently
        resolution = 64

        def __call__(self, crops):
            rng = np.random.default_rng(len(crops_in))
            out = np.clip(crops.astype(np.int16) * 0.7 + rng.integers(0, 60, crops.shape), 0, 255).astype(np.uint8)
            crops_in.append(crops.copy())
            recs_out.append(out)
            return out

        def describe(self):
            return {"method": "darken"}

    R = _ColourIdentity()
    ev = ClipEvaluator(make_detector("dlib"), R, Darken(), lpips=_ZeroLPIPS(), every=5, max_frames=5, batch_size=2)
    res = ev.evaluate(media_dir / "videos/other/pyfeat-single_face.mp4")
    assert res.ok and res.frames_used == 5
    src, rec = np.concatenate(crops_in), np.concatenate(recs_out)

    def eq9(frames):                                 # IC = 1/N sum_{i=1..N} <R(x_i), R(x_0)>, cosines by hand
        feats = []
        for fr in frames:
            blocks = [fr[i * 16:(i + 1) * 16, j * 16:(j + 1) * 16].astype(np.float64).mean((0, 1))
                      for i in range(4) for j in range(4)]
            v = np.concatenate(blocks)
            feats.append(v - v.mean())
        cos = [float(feats[i] @ feats[0] / (np.linalg.norm(feats[i]) * np.linalg.norm(feats[0])))
               for i in range(1, len(feats))]
        return sum(cos) / len(cos)

    assert res.metrics["ic_source"] == pytest.approx(eq9(src), abs=1e-6)
    assert res.metrics["ic_inversion"] == pytest.approx(eq9(rec), abs=1e-6)
    assert abs(res.metrics["ic_source"] - res.metrics["ic_inversion"]) > 1e-4        # not the same input
    # R saw the source crops and the inversions, batch by batch
    np.testing.assert_array_equal(np.concatenate(R.seen[0::2]), src)
    np.testing.assert_array_equal(np.concatenate(R.seen[1::2]), rec)
