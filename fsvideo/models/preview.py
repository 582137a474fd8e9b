"""Draft images: the StyleGAN2 generator stopped early, read from its RGB skip branch.

A StyleGAN2 generator builds its image as a sum of ToRGB outputs, one per resolution, each
up-sampled and added to the next (the "skip" architecture).  The running sum after the ToRGB of
resolution ``r`` is already a coherent ``r x r`` picture of the final image: coarse structure,
colours and the effect of an edit are there, only the finest detail (added by the larger layers)
is missing.  ``fsvideo studio`` shows it as a labelled draft while the full frame renders.

Cost (layer sizes of the released 1024 px generator, one image): up to 256 px about 58% of a full
pass, up to 128 px about 38%, up to 64 px about 18%; ``benchmarks/studio.py`` measures it.

This mirrors :meth:`fsvideo.models.stylegan2.Generator.forward` (same layers, same order, same
Feature-Style injection at ``outs[k]``); ``tests/test_studio_api.py`` checks that a "draft" at
the full size, and a draft resumed to the full size, equal ``forward`` exactly, so the two cannot
drift apart silently.  Resuming (:func:`synthesize` with ``start``) makes draft + full frame cost
one generator pass in total.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from fsvideo.models.stylegan2 import Generator


def draft_sizes(generator: Generator, k: int = 5) -> list[int]:
    """Draft sizes a generator can stop at: from the resolution of ``outs[k]`` (where ``F`` enters) up to its size."""
    first = generator.feature_shape(k)[1]
    return [2 ** i for i in range(first.bit_length() - 1, generator.log_size + 1)]


@dataclass
class Partial:
    """A generator pass stopped after the layers of ``res`` px: resume it with :func:`synthesize`.

    ``x`` is the activation after the ``res`` px block (F already injected when ``res`` reaches it);
    ``skip`` the RGB sum so far, [N, 3, res, res]; ``block`` the index of the next up-sampling block.
    """

    x: Tensor
    skip: Tensor
    res: int
    block: int


@torch.no_grad()
def synthesize(generator: Generator, w: Tensor, f: Tensor | None, noise: Sequence[Tensor | None], k: int = 5,
               until: int = 256, start: Partial | None = None) -> Partial:
    """Run G(w, F) up to the ``until`` px layers, from scratch or from ``start`` (same w, F, noise).

    A draft then the full frame cost one generator pass in total: the full frame resumes the draft.
    """
    G = generator
    sizes = draft_sizes(G, k)
    if until not in sizes:
        raise ValueError(f"max_res must be one of {sizes} (F enters at {sizes[0]} px), got {until}")
    if w.ndim != 3 or w.shape[1:] != (G.n_latent, G.style_dim):
        raise ValueError(f"w must be [N, {G.n_latent}, {G.style_dim}], got {list(w.shape)}")
    if len(noise) != G.num_layers:
        raise ValueError(f"noise must have {G.num_layers} entries, got {len(noise)}")

    def inject(x: Tensor, idx: int) -> Tensor:
        return f.to(x.dtype) if f is not None and idx == k else x

    if start is None:
        x = G.input(w.shape[0]).to(w.dtype)
        x = G.conv1(x, w[:, 0], noise=noise[0])
        skip = G.to_rgb1(x, w[:, 1])
        start = Partial(inject(x, 1), skip, 4, 0)
    elif start.res > until:
        raise ValueError(f"cannot resume a {start.res} px pass down to {until} px")
    x, skip, res, j = start.x, start.skip, start.res, start.block
    while res < until:
        x = inject(G.convs[2 * j](x, w[:, 2 * j + 1], noise=noise[2 * j + 1]), 2 * j + 2)
        x = G.convs[2 * j + 1](x, w[:, 2 * j + 2], noise=noise[2 * j + 2])
        skip = G.to_rgbs[j](x, w[:, 2 * j + 3], skip)
        x = inject(x, 2 * j + 3)
        res, j = res * 2, j + 1
    return Partial(x, skip, res, j)


def draft_decode(generator: Generator, w: Tensor, f: Tensor | None, noise: Sequence[Tensor | None],
                 k: int = 5, max_res: int = 256) -> Tensor:
    """G(w, F) stopped after the ``max_res`` layers: the RGB skip sum, [N, 3, max_res, max_res].

    Args:
        generator: the StyleGAN2 generator.
        w: [N, n_latent, style_dim] W+ codes.
        f: feature code [N, C, H, W] replacing ``outs[k]`` (or None: G(w)).
        noise: the fixed noise list of the video (``num_layers`` maps).
        k: feature index K (5: F enters at 16 px).
        max_res: a size from :func:`draft_sizes`; the generator's own size gives ``G(w, F)`` exactly.
    """
    return synthesize(generator, w, f, noise, k, max_res).skip
