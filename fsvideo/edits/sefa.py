"""SeFa: closed-form edit directions of a StyleGAN2 generator (Shen & Zhou, CVPR 2021; paper appendix B).

Every style layer maps a W row to per-channel scales with an affine ``A_l`` ([C_l, 512], the
``modulation`` of a modulated convolution).  The directions ``n`` (unit, in W) that change the
styles of the chosen layers most maximise ``sum_l |A_l n|^2``: they are the top eigenvectors of
``A^T A`` with ``A`` the layers' affines stacked row-wise, each row (one output channel) scaled to
unit norm as in the authors' implementation.  The eigenvalues are sorted, largest first (the
reference code relies on ``np.linalg.eig``'s order, which is not guaranteed).

A direction in W is written into the W+ rows of the chosen layers (zeros elsewhere) and scaled to
unit norm over the flattened W+ code, the convention of :mod:`fsvideo.edits.directions`
(``w~ = w + 15 * s * d``).  Signs are fixed so that the largest-magnitude entry is positive.

Example::

    d = sefa_directions(G, k=5)                 # [5, n_latent, 512]
    d = sefa_directions(G, layers=range(0, 4))  # coarse layers (pose, shape)
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

from fsvideo.models.stylegan2 import Generator


def style_affines(G: Generator) -> dict[int, list[Tensor]]:
    """W+ row -> effective modulation weights [C, style_dim] of the convolutions reading that row.

    The last row feeds only the final ToRGB; as in SeFa's StyleGAN2 layer list (whose last entry is
    the output layer), that ToRGB affine stands for it.  Other ToRGB layers are left out.
    """
    rows: dict[int, list[Tensor]] = {0: [G.conv1.conv.modulation]}
    for j in range(len(G.to_rgbs)):
        rows.setdefault(2 * j + 1, []).append(G.convs[2 * j].conv.modulation)
        rows.setdefault(2 * j + 2, []).append(G.convs[2 * j + 1].conv.modulation)
    rows[G.n_latent - 1] = rows.get(G.n_latent - 1) or [G.to_rgbs[-1].conv.modulation]
    return {r: [m.weight.detach().float() * m.scale for m in mods] for r, mods in rows.items()}


def sefa_factorize(G: Generator, layers: Iterable[int] | None = None) -> tuple[Tensor, Tensor, list[int]]:
    """Eigen-decomposition of the chosen layers' stacked affines.

    Returns ``(eigenvalues [style_dim] descending, eigenvectors [style_dim, style_dim] one per row,
    layers)``; ``layers`` are W+ row indices (default: all rows).
    """
    affines = style_affines(G)
    rows = sorted(set(range(G.n_latent) if layers is None else (int(r) for r in layers)))
    bad = [r for r in rows if not 0 <= r < G.n_latent]
    if bad or not rows:
        raise ValueError(f"layers must be W+ rows in 0..{G.n_latent - 1}, got {bad or 'none'}")
    A = torch.cat([a for r in rows for a in affines[r]], dim=0).double()        # [sum C, style_dim]
    A = A / A.norm(dim=1, keepdim=True).clamp_min(1e-12)
    vals, vecs = torch.linalg.eigh(A.T @ A)                                     # ascending
    order = torch.argsort(vals, descending=True)
    vals, vecs = vals[order], vecs[:, order].T.contiguous()
    idx = vecs.abs().argmax(dim=1)
    signs = torch.sign(vecs.gather(1, idx[:, None]))
    return vals.float(), (vecs * signs).float(), rows


def sefa_directions(generator: Generator, layers: Iterable[int] | None = None, k: int = 10) -> Tensor:
    """The top-``k`` SeFa directions as unit-norm W+ directions ``[k, n_latent, style_dim]`` (float32, CPU).

    Args:
        generator: a StyleGAN2 :class:`Generator`.
        layers: W+ rows to edit (default: all); the direction is zero on the other rows.
        k: number of directions (at most ``style_dim``).
    """
    G = generator
    if not 1 <= k <= G.style_dim:
        raise ValueError(f"k must be in 1..{G.style_dim}, got {k}")
    _, vecs, rows = sefa_factorize(G, layers)
    out = torch.zeros(k, G.n_latent, G.style_dim)
    out[:, rows] = vecs[:k, None, :].cpu()
    return out / out.flatten(1).norm(dim=1).view(k, 1, 1)


__all__ = ["sefa_directions", "sefa_factorize", "style_affines"]
