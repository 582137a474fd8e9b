"""Identity consistency (IC), Eq. 9 of the paper (supplementary C), and ID similarity.

``IC = 1/N * sum_{i=1..N} <R(x_i), R(x_0)>`` for the frames ``x_0 .. x_N`` of one video, ``R`` an
identity network with L2-normalised embeddings, so ``<., .>`` is the cosine similarity.  The sum
runs over the frames *after* the reference frame ``x_0`` (the paper's indices), so a frame is never
compared with itself; a video with a single usable frame has no IC (NaN).

The paper applies it to the inverted frames (``x~_i``) and, as the reference, to the source frames
(Fig. 9's "source" box).  There is no reference implementation; this follows the equation and
``tests/test_metrics_consistency.py`` checks it exactly on synthetic embeddings.

ID similarity (Tables 1 and 3) is the cosine of the source and inversion embeddings of the same
frame: :func:`id_similarity`.

Example::

    e = identity.embed(crops)              # [N, D], L2-normalised
    ic = identity_consistency(e)           # float
"""
from __future__ import annotations

import math

import numpy as np


def _as_embeddings(e, name: str) -> np.ndarray:
    a = np.asarray(e, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be [N, D] embeddings, got shape {a.shape}")
    return a


def _normalise(a: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.maximum(n, 1e-12)


def similarity_to_reference(embeddings, reference=None) -> np.ndarray:
    """Cosine similarity of every row with ``reference`` (default: the first row) -> float64 [N]."""
    e = _normalise(_as_embeddings(embeddings, "embeddings"))
    if len(e) == 0:
        return np.zeros(0)
    r = e[0] if reference is None else _normalise(np.asarray(reference, dtype=np.float64).reshape(1, -1))[0]
    if r.shape[0] != e.shape[1]:
        raise ValueError(f"reference has {r.shape[0]} dimensions, embeddings have {e.shape[1]}")
    return e @ r


def identity_consistency(embeddings) -> float:
    """Eq. 9: mean cosine similarity of frames 1..N to frame 0.

    Args:
        embeddings: ``[N + 1, D]`` identity embeddings of the frames in order (normalised here, so
            raw network outputs are fine).

    Returns:
        IC in [-1, 1]; NaN when fewer than two frames are given.
    """
    s = similarity_to_reference(embeddings)
    if len(s) < 2:
        return math.nan
    return float(s[1:].mean())


def id_similarity(a, b) -> np.ndarray:
    """Row-wise cosine similarity of two ``[N, D]`` embedding sets (source vs inversion) -> float64 [N]."""
    ea = _normalise(_as_embeddings(a, "a"))
    eb = _normalise(_as_embeddings(b, "b"))
    if ea.shape != eb.shape:
        raise ValueError(f"a and b must have the same shape, got {ea.shape} and {eb.shape}")
    return (ea * eb).sum(axis=1)


class ConsistencyAccumulator:
    """Eq. 9 over a stream of frames without keeping them: feed embeddings chunk by chunk.

    Example::

        acc = ConsistencyAccumulator()
        for chunk in chunks: acc.add(identity.embed(chunk))
        acc.value, acc.similarities     # IC and the per-frame cosine to frame 0 (frame 0 gets 1.0)
    """

    def __init__(self):
        self.reference: np.ndarray | None = None
        self.similarities: list[float] = []

    def add(self, embeddings) -> np.ndarray:
        """Add ``[n, D]`` embeddings; returns their cosine similarity to frame 0."""
        e = _normalise(_as_embeddings(embeddings, "embeddings"))
        if len(e) == 0:
            return np.zeros(0)
        if self.reference is None:
            self.reference = e[0].copy()
        s = e @ self.reference
        self.similarities.extend(float(v) for v in s)
        return s

    @property
    def value(self) -> float:
        """IC so far (NaN with fewer than two frames)."""
        if len(self.similarities) < 2:
            return math.nan
        return float(np.mean(self.similarities[1:]))


__all__ = ["ConsistencyAccumulator", "id_similarity", "identity_consistency", "similarity_to_reference"]
