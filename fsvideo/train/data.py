"""Training data: real aligned images from a folder and synthetic images made on the fly (paper §4.1).

Everything random is drawn from generators seeded by ``(seed, rank, step)``: the batch of step
``s`` is the same whether the run was interrupted or not, which makes ``--resume`` exact.

* Real images: the epoch-``e`` order is a permutation seeded by ``(seed, e)``, shared by all ranks;
  rank ``r`` of ``world`` takes every ``world``-th slot, so ranks see disjoint images.
* Synthetic images: ``z ~ N(0, I)`` -> ``w = mapping(z)`` (one W, broadcast to W+; optional
  truncation) and per-sample noise maps; the image is ``clamp(G(w, noise), -1, 1)`` and its noise is
  the ground truth passed to the generator when reconstructing it.  Real images get random noise.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from fsvideo.errors import InputError
from fsvideo.models.stylegan2 import Generator

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def _mix(*xs: int) -> int:
    """A 63-bit seed from integers (splitmix64 mixing), stable across runs and platforms."""
    h = 0x9E3779B97F4A7C15
    for x in xs:
        h = (h ^ (int(x) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def step_generator(*keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``keys`` (e.g. seed, rank, step, purpose)."""
    return torch.Generator().manual_seed(_mix(*keys))


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted by relative path."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"real image folder {root} not found",
                         hint="set data.real_dir to a folder of aligned faces (e.g. made by `fsvideo align`)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {root}",
                         hint="point data.real_dir at a folder of aligned face images")
    return files


def load_image(path: Path, size: int) -> np.ndarray:
    """uint8 [size, size, 3] RGB, resized (bilinear with antialiasing, as torchvision's ``Resize``)."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).copy()
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read training image {path} ({e})", hint="remove or replace the file") from e


def to_tensor(img: np.ndarray) -> Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] in [-1, 1]."""
    return torch.from_numpy(img).permute(2, 0, 1).float().div(127.5).sub(1.0)


class RealImages(torch.utils.data.Dataset):
    """Aligned real images resized to the generator's resolution: item ``i`` -> float32 [3, S, S] in [-1, 1]."""

    def __init__(self, files: Sequence[Path], size: int, cache: bool = False):
        self.files, self.size = list(files), int(size)
        self._cache: dict[int, np.ndarray] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Tensor:
        if self._cache is not None:
            if i not in self._cache:
                self._cache[i] = load_image(self.files[i], self.size)
            return to_tensor(self._cache[i])
        return to_tensor(load_image(self.files[i], self.size))


class StepSampler(torch.utils.data.Sampler):
    """Infinite index stream: the ``per_rank`` indices of step ``start_step``, then the next step's...

    Slot ``q = (step * world + rank) * per_rank + j`` of the global stream is image
    ``perm_e[q mod N]`` with ``e = q // N`` and ``perm_e`` a permutation seeded by ``(seed, e)``.
    """

    def __init__(self, n: int, per_rank: int, *, seed: int, rank: int = 0, world: int = 1, start_step: int = 0):
        self.n, self.per_rank, self.seed = n, per_rank, seed
        self.rank, self.world, self.start_step = rank, world, start_step
        self._perm: tuple[int, Tensor] | None = None

    def index(self, step: int, j: int) -> int:
        q = (step * self.world + self.rank) * self.per_rank + j
        e, i = divmod(q, self.n)
        if self._perm is None or self._perm[0] != e:
            self._perm = (e, torch.randperm(self.n, generator=step_generator(self.seed, 0x5EA1, e)))
        return int(self._perm[1][i])

    def __iter__(self) -> Iterator[int]:
        step = self.start_step
        while True:
            for j in range(self.per_rank):
                yield self.index(step, j)
            step += 1

    def __len__(self) -> int:  # pragma: no cover - infinite
        return 2 ** 62


def real_batches(dataset: RealImages, per_rank: int, *, seed: int, rank: int, world: int, start_step: int,
                 workers: int = 0) -> Iterator[Tensor]:
    """Batches [per_rank, 3, S, S] of real images, step ``start_step`` first."""
    sampler = StepSampler(len(dataset), per_rank, seed=seed, rank=rank, world=world, start_step=start_step)
    loader = torch.utils.data.DataLoader(dataset, batch_size=per_rank, sampler=sampler, num_workers=workers,
                                         persistent_workers=workers > 0, drop_last=True)
    return iter(loader)


def random_noise(G: Generator, n: int, gen: torch.Generator) -> list[Tensor]:
    """``num_layers`` noise maps [n, 1, r, r] (float32, CPU) drawn from ``gen``."""
    return [torch.randn((n, *s[1:]), generator=gen) for s in G.noise_shapes()]


@dataclass
class Batch:
    """One training batch: synthetic rows first, then real rows.

    ``x`` [B, 3, S, S] in [-1, 1]; ``noise`` per layer [B, 1, r, r] (ground truth for synthetic rows,
    random for real rows); ``n_syn`` synthetic rows; ``rand_noise`` a second random draw for every
    row (the official recipe's first reconstruction).
    """

    x: Tensor
    noise: list[Tensor]
    rand_noise: list[Tensor]
    n_syn: int
    w_syn: Tensor | None = None      # ground-truth W+ codes of the synthetic rows [n_syn, n_latent, style_dim]


@torch.no_grad()
def synthetic_images(G: Generator, n: int, gen: torch.Generator, *, truncation: float = 1.0,
                     w_avg: Tensor | None = None) -> tuple[Tensor, list[Tensor], Tensor]:
    """``n`` synthetic images [n, 3, S, S] (clamped to [-1, 1]), their noise maps and W+ codes (on G's device).

    ``z`` and the noise are drawn from ``gen`` on the CPU, so the images do not depend on the device.
    """
    p = next(G.parameters())
    z = torch.randn(n, G.style_dim, generator=gen)
    noise = [t.to(p.device) for t in random_noise(G, n, gen)]
    w = G.mapping(z.to(p.device))
    if truncation != 1.0 and w_avg is not None:
        w = G.truncate(w, w_avg.to(w).reshape(-1, G.style_dim)[0], truncation)
    w = w[:, None].expand(-1, G.n_latent, -1).contiguous()
    if n == 0:
        return torch.zeros(0, 3, G.size, G.size, device=p.device), noise, w
    img = G(w, noise=noise).clamp(-1.0, 1.0)
    return img, noise, w


def make_batch(G: Generator, real: Tensor | None, n_syn: int, *, seed: int, rank: int, step: int,
               truncation: float = 1.0, w_avg: Tensor | None = None) -> Batch:
    """Assemble the batch of ``step`` on ``rank``: ``n_syn`` synthetic images then the ``real`` ones."""
    device = next(G.parameters()).device
    syn, syn_noise, w_syn = synthetic_images(G, n_syn, step_generator(seed, rank, step, 1), truncation=truncation,
                                      w_avg=w_avg)
    n_real = 0 if real is None else real.shape[0]
    g = step_generator(seed, rank, step, 2)
    real_noise = [t.to(device) for t in random_noise(G, n_real, g)]
    rand_noise = [t.to(device) for t in random_noise(G, n_syn + n_real, g)]
    x = syn if real is None else torch.cat([syn, real.to(device)])
    noise = [torch.cat([a, b]) for a, b in zip(syn_noise, real_noise)]
    return Batch(x, noise, rand_noise, n_syn, w_syn)


def encoder_input(x: Tensor, min_size: int = 256) -> Tensor:
    """Images below the encoder's 256 px input are enlarged (bilinear); larger ones go as they are
    (the encoder halves them itself, as the released model was trained)."""
    if x.shape[-1] < min_size:
        return F.interpolate(x, size=(min_size, min_size), mode="bilinear", align_corners=False)
    return x
