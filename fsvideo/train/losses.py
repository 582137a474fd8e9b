"""The training losses of the paper (Eqs. 2-8).

Every loss takes the inversion ``x_hat`` and the input ``x`` (float32 NCHW in [-1, 1]) and returns
one value per sample ([N]); the trainer averages and weights them:

* Eq. 2 pixel MSE (mean squared error, as ``nn.MSELoss``), on ``G(w)`` of synthetic images;
* Eq. 3 multi-scale LPIPS: ``sum_{i=0..2} LPIPS([x_hat]_i, [x]_i)``, ``[.]_i`` = 2^i downsampling;
* Eq. 4 feature reconstruction ``MSE(F, G^K(w).detach())`` (the gradient reaches F, not w);
* Eq. 6 multi-layer identity ``sum_i (1 - cos(R_i(x_hat), R_i(x)))`` over ArcFace's four stage
  outputs and its embedding (5 terms);
* Eq. 7 multi-layer face parsing ``sum_j (1 - cos(P_j(x_hat), P_j(x)))`` over the logit maps
  BiSeNet returns (main, 16 and 32 px heads; the official code uses these three).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_pair(x_hat: Tensor, x: Tensor) -> None:
    if x_hat.shape != x.shape or x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"x_hat and x must both be [N, 3, H, W], got {list(x_hat.shape)} and {list(x.shape)}")


def mse_per_sample(x_hat: Tensor, x: Tensor) -> Tensor:
    """Eq. 2: mean squared error per sample, [N]."""
    _check_pair(x_hat, x)
    return (x_hat - x).square().flatten(1).mean(1)


def downsample(x: Tensor, times: int) -> Tensor:
    """``[x]_i``: ``times`` 2x2 average poolings (equal to bilinear ``scale_factor=0.5`` steps)."""
    for _ in range(times):
        x = F.avg_pool2d(x, 2)
    return x


class MultiScaleLPIPS(nn.Module):
    """Eq. 3 with a given LPIPS network ``net(a, b) -> [N, 1, 1, 1]`` (inputs in [-1, 1]).

    Args:
        net: an LPIPS module (``lpips.LPIPS(net='alex')`` with real weights); frozen here.
        scales: number of scales (3 in the paper: full, 1/2, 1/4).
        min_size: AlexNet needs about 32 px; a smaller scale is enlarged (bilinear) to it, which only
            happens for tiny test generators.
    """

    def __init__(self, net: nn.Module, scales: int = 3, min_size: int = 32):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.scales, self.min_size = scales, min_size

    def train(self, mode: bool = True):  # the LPIPS network stays in eval mode
        return super().train(False)

    def forward(self, x_hat: Tensor, x: Tensor) -> Tensor:
        _check_pair(x_hat, x)
        total = x_hat.new_zeros(x_hat.shape[0])
        for i in range(self.scales):
            a, b = downsample(x_hat, i), downsample(x, i)
            if a.shape[-1] < self.min_size:
                a = F.interpolate(a, size=self.min_size, mode="bilinear", align_corners=False)
                b = F.interpolate(b, size=self.min_size, mode="bilinear", align_corners=False)
            total = total + self.net(a, b).reshape(a.shape[0], -1).mean(1)
        return total


def _cosine_terms(fa: list[Tensor], fb: list[Tensor]) -> Tensor:
    """``sum_i (1 - cos(flat(a_i), flat(b_i)))`` per sample."""
    total = None
    for a, b in zip(fa, fb):
        t = 1.0 - F.cosine_similarity(a.flatten(1).float(), b.flatten(1).float(), dim=1, eps=1e-8)
        total = t if total is None else total + t
    return total


class IdentityLoss(nn.Module):
    """Eq. 6: multi-layer ArcFace identity loss.

    ``arcface(x112, return_features=True) -> (list of stage maps, embedding)``; the whole frame is
    resized to 112 px (``resize='nearest'`` as the official trainer; ``area`` is smoother).
    The target's features are computed without gradient.
    """

    def __init__(self, arcface: nn.Module, resize: str = "nearest"):
        super().__init__()
        self.net = arcface.eval().requires_grad_(False)
        self.resize = resize

    def train(self, mode: bool = True):
        return super().train(False)

    def _features(self, x: Tensor) -> list[Tensor]:
        if x.shape[-1] != 112:
            kw = {} if self.resize in ("nearest", "area") else {"align_corners": False}
            x = F.interpolate(x, size=(112, 112), mode=self.resize, **kw)
        feats, emb = self.net(x, return_features=True)
        return [*feats, emb]

    def forward(self, x_hat: Tensor, x: Tensor) -> Tensor:
        _check_pair(x_hat, x)
        with torch.no_grad():
            target = self._features(x)
        return _cosine_terms(self._features(x_hat), target)


class ParsingLoss(nn.Module):
    """Eq. 7: multi-layer face-parsing loss with BiSeNet (``forward -> (out, out16, out32)`` logits).

    Images go from [-1, 1] to [0, 1] (clamped), are resized to ``size`` (512, bilinear) and
    ImageNet-normalised, as the parser was trained.  Each logit map is compared at ``size``.
    """

    def __init__(self, parser: nn.Module, size: int = 512):
        super().__init__()
        self.net = parser.eval().requires_grad_(False)
        self.size = size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        return super().train(False)

    def _features(self, x: Tensor) -> list[Tensor]:
        x = ((x + 1) / 2).clamp(0, 1)
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        outs = self.net((x - self.mean) / self.std)
        outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
        return [o if o.shape[-1] == self.size else
                F.interpolate(o, size=(self.size, self.size), mode="bilinear", align_corners=False) for o in outs]

    def forward(self, x_hat: Tensor, x: Tensor) -> Tensor:
        _check_pair(x_hat, x)
        with torch.no_grad():
            target = self._features(x)
        return _cosine_terms(self._features(x_hat), target)


def feature_reconstruction(f: Tensor, gk: Tensor) -> Tensor:
    """Eq. 4 per sample: ``mean((F - G^K(w).detach())^2)``, [N]."""
    if f.shape != gk.shape:
        raise ValueError(f"F {list(f.shape)} and G^K(w) {list(gk.shape)} must have the same shape")
    return (f - gk.detach()).square().flatten(1).mean(1)
