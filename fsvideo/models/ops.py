"""Pure-PyTorch versions of the StyleGAN2 ops (no CUDA extension, any device and dtype).

``upfirdn2d`` and ``fused_leaky_relu`` have the semantics of rosinality's CUDA ops, which the
released checkpoints were trained with:

* ``fused_leaky_relu(x, b) = leaky_relu(x + b[channel], 0.2) * sqrt(2)``
* ``upfirdn2d(x, k, up, down, pad)``: insert ``up - 1`` zeros after every sample, pad by
  ``(pad0, pad1)`` on both spatial axes (negative pads crop), convolve with ``k`` (correlate with
  the flipped kernel), keep every ``down``-th sample.

Inference memory (issue 11, point 8): a 1024 px generator's last layers hold 32-64 channels x 1024 x
1024 float32 tensors, 128-256 MiB each.  Where no autograd graph is recorded (:func:`no_graph`) the
bias, activation and noise steps work in place on the convolution's fresh output instead of making a
new full-size tensor per elementwise op; the values are the same (the same kernels, the same order of
operations, checked bit for bit by the tests).  A symmetric FIR padding is the convolution's own
``padding`` instead of a padded copy of the input (equal bit for bit on the CPU in float16/32/64 and
bfloat16: the padded zeros add nothing).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

SQRT2 = math.sqrt(2.0)


def no_graph(*tensors: Tensor) -> bool:
    """True when autograd records nothing for ``tensors`` (grad disabled, or none of them requires
    grad): then overwriting a temporary in place cannot corrupt a backward pass."""
    return not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors)


def fused_leaky_relu(x: Tensor, bias: Tensor, negative_slope: float = 0.2, scale: float = SQRT2,
                     inplace: bool = False) -> Tensor:
    """``leaky_relu(x + bias, 0.2) * sqrt(2)`` with ``bias`` along dim 1.

    ``inplace`` overwrites ``x`` (a temporary the caller owns) and returns it: the same values
    without two full-size temporaries; only allowed where :func:`no_graph` holds.
    """
    shape = (1, bias.shape[0]) + (1,) * (x.ndim - 2)
    if inplace:
        if not no_graph(x, bias):
            raise RuntimeError("fused_leaky_relu(inplace=True) while autograd records the graph")
        return F.leaky_relu_(x.add_(bias.view(shape).to(x.dtype)), negative_slope).mul_(scale)
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
    conv_pad = 0
    if p0 == p1 >= 0:                  # symmetric: the convolution pads (no padded copy of x)
        conv_pad = p0
    else:
        x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
        if p0 < 0 or p1 < 0:
            x = x[:, :, max(-p0, 0): x.shape[2] - max(-p1, 0), max(-p0, 0): x.shape[3] - max(-p1, 0)]
    k = torch.flip(kernel, (0, 1)).to(dtype=x.dtype, device=x.device)
    k = k[None, None].expand(c, 1, *k.shape)
    x = F.conv2d(x, k, padding=conv_pad, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x
