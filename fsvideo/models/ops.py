"""Pure-PyTorch versions of the StyleGAN2 ops (no CUDA extension, any device and dtype).

``upfirdn2d`` and ``fused_leaky_relu`` have the semantics of rosinality's CUDA ops, which the
released checkpoints were trained with:

* ``fused_leaky_relu(x, b) = leaky_relu(x + b[channel], 0.2) * sqrt(2)``
* ``upfirdn2d(x, k, up, down, pad)``: insert ``up - 1`` zeros after every sample, pad by
  ``(pad0, pad1)`` on both spatial axes (negative pads crop), convolve with ``k`` (correlate with
  the flipped kernel), keep every ``down``-th sample.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

SQRT2 = math.sqrt(2.0)


def fused_leaky_relu(x: Tensor, bias: Tensor, negative_slope: float = 0.2, scale: float = SQRT2) -> Tensor:
    """``leaky_relu(x + bias, 0.2) * sqrt(2)`` with ``bias`` along dim 1."""
    shape = (1, bias.shape[0]) + (1,) * (x.ndim - 2)
    return F.leaky_relu(x + bias.view(shape).to(x.dtype), negative_slope) * scale


def make_kernel(k) -> Tensor:
    """Separable FIR kernel from a 1-D list (outer product), normalised to sum 1."""
    k = torch.as_tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """Upsample (zero insertion), FIR filter and downsample ``x`` [N, C, H, W] with a 2-D ``kernel``."""
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(n, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
    if p0 < 0 or p1 < 0:
        x = x[:, :, max(-p0, 0): x.shape[2] - max(-p1, 0), max(-p0, 0): x.shape[3] - max(-p1, 0)]
    k = torch.flip(kernel, (0, 1)).to(dtype=x.dtype, device=x.device)
    k = k[None, None].expand(c, 1, *k.shape)
    x = F.conv2d(x, k, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x
