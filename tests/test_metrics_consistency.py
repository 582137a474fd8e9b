"""Eq. 9 (identity consistency) and ID similarity, exact on synthetic embeddings."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fsvideo.metrics.consistency import (ConsistencyAccumulator, id_similarity, identity_consistency,
                                         similarity_to_reference)


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
