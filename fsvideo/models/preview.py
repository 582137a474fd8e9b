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
the full size equals ``forward`` exactly, so the two cannot drift apart silently.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from fsvideo.models.stylegan2 import Generator


def draft_sizes(generator: Generator, k: int = 5) -> list[int]:
    """Draft sizes a generator can stop at: from the resolution of ``outs[k]`` (where ``F`` enters) up to its size."""
    first = generator.feature_shape(k)[1]
    return [2 ** i for i in range(first.bit_length() - 1, generator.log_size + 1)]


@torch.no_grad()
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
    G = generator
    sizes = draft_sizes(G, k)
    if max_res not in sizes:
        raise ValueError(f"max_res must be one of {sizes} (F enters at {sizes[0]} px), got {max_res}")
    if w.ndim != 3 or w.shape[1:] != (G.n_latent, G.style_dim):
        raise ValueError(f"w must be [N, {G.n_latent}, {G.style_dim}], got {list(w.shape)}")
    if len(noise) != G.num_layers:
        raise ValueError(f"noise must have {G.num_layers} entries, got {len(noise)}")

    def inject(x: Tensor, idx: int) -> Tensor:
        return f.to(x.dtype) if f is not None and idx == k else x

    x = G.input(w.shape[0]).to(w.dtype)
    x = G.conv1(x, w[:, 0], noise=noise[0])
    skip = G.to_rgb1(x, w[:, 1])
    x = inject(x, 1)
    res = 4
    for j, to_rgb in enumerate(G.to_rgbs):
        res *= 2
        if res > max_res:
            break
        x = inject(G.convs[2 * j](x, w[:, 2 * j + 1], noise=noise[2 * j + 1]), 2 * j + 2)
        x = G.convs[2 * j + 1](x, w[:, 2 * j + 2], noise=noise[2 * j + 2])
        skip = to_rgb(x, w[:, 2 * j + 3], skip)
        x = inject(x, 2 * j + 3)
    return skip
