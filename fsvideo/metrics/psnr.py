"""PSNR and MSE, batched in PyTorch, equal to scikit-image's ``peak_signal_noise_ratio`` and
``mean_squared_error``.

* :func:`psnr` matches ``skimage.metrics.peak_signal_noise_ratio(a, b, data_range=255)`` on uint8
  RGB images: ``10 log10(L^2 / MSE)`` over all pixels and channels of one image (``inf`` for
  identical images, as in scikit-image).
* :func:`mse` is the mean squared error **on images in [-1, 1]** (the model range), which is the
  scale of the MSE column of the paper's Tables 1 and 3 (e.g. PSNR 23.65 dB <-> MSE 0.019 there:
  ``4 * 10^(-23.65/10) = 0.017``).  It equals
  ``skimage.metrics.mean_squared_error(a / 127.5 - 1, b / 127.5 - 1)`` on uint8 images, i.e. the
  0..255 MSE divided by 127.5^2.

Example::

    p = psnr(source_crops, inverted_crops)     # uint8 [N, H, W, 3] each -> float64 [N] (dB)
    e = mse(source_crops, inverted_crops)      # float64 [N], images taken in [-1, 1]
"""
from __future__ import annotations

import torch
from torch import Tensor

from fsvideo.metrics._images import check_pair, to_unit_batch


def _mse01(x, y) -> Tensor:
    a = to_unit_batch(x, "x")
    b = to_unit_batch(y, "y")
    check_pair(a, b)
    return ((a - b) ** 2).mean(dim=(1, 2, 3))


def mse(x, y) -> Tensor:
    """Mean squared error of each pair on the [-1, 1] scale (the paper's MSE).

    Args:
        x, y: the same shape; uint8 ``[N, H, W, 3]`` / ``[H, W, 3]`` (numpy or torch) or float
            tensors ``[N, 3, H, W]`` in [-1, 1].

    Returns:
        ``[N]`` values in [0, 4].
    """
    return 4.0 * _mse01(x, y)  # [0, 1] -> [-1, 1] doubles every difference


def psnr(x, y) -> Tensor:
    """Peak signal-to-noise ratio of each pair in dB (peak = the full 0..255 range).

    Same inputs as :func:`mse`.  Returns ``[N]`` values; ``inf`` where the images are identical.
    """
    return 10.0 * torch.log10(1.0 / _mse01(x, y))


__all__ = ["mse", "psnr"]
