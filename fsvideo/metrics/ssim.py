"""SSIM, batched in PyTorch, equal to scikit-image's ``structural_similarity`` defaults.

Matches ``skimage.metrics.structural_similarity(a, b, data_range=255, channel_axis=-1)`` on uint8
RGB images (scikit-image 0.21+; Wang et al. 2004 with the settings scikit-image uses by default):

* a 7 x 7 uniform window (``win_size=7``, ``gaussian_weights=False``),
* ``K1 = 0.01``, ``K2 = 0.03``, ``C1 = (K1 L)^2``, ``C2 = (K2 L)^2`` with ``L`` the data range,
* sample (co)variances (``use_sample_covariance=True``: the ``NP / (NP - 1)`` correction),
* the SSIM map averaged over the region 3 pixels away from the border (scikit-image crops the
  map by ``(win_size - 1) // 2``, so its border mode never matters), then over the channels.

Computed in float64 by default (float32 on MPS), images in [0, 1] with ``L = 1``, which is
scikit-image's value on the 0..255 images exactly (SSIM is invariant to scaling ``L`` and the
image together; it is *not* shift invariant, which is why [-1, 1] inputs are mapped to [0, 1]).
``tests/test_metrics_pixel.py`` checks it against scikit-image on real video frames.

Example::

    s = ssim(source_crops, inverted_crops)     # uint8 [N, H, W, 3] each -> float64 [N]
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from fsvideo.metrics._images import check_pair, to_unit_batch

WIN_SIZE = 7
K1 = 0.01
K2 = 0.03


def ssim(x, y, *, win_size: int = WIN_SIZE) -> Tensor:
    """Mean SSIM of each image pair.

    Args:
        x, y: the same shape; uint8 ``[N, H, W, 3]`` / ``[H, W, 3]`` RGB (numpy or torch) or float
            tensors ``[N, 3, H, W]`` in [-1, 1].  ``H, W >= win_size``.
        win_size: odd side of the uniform window (7 as in scikit-image).

    Returns:
        ``[N]`` SSIM values (1 for identical images) on the inputs' device.
    """
    a = to_unit_batch(x, "x")
    b = to_unit_batch(y, "y")
    check_pair(a, b)
    if win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"win_size must be odd and >= 3, got {win_size}")
    if min(a.shape[-2:]) < win_size:
        raise ValueError(f"images must be at least {win_size} x {win_size} for SSIM, got {list(a.shape[-2:])}")
    c1 = (K1 * 1.0) ** 2
    c2 = (K2 * 1.0) ** 2
    n = win_size * win_size
    cov_norm = n / (n - 1)

    def mean(t: Tensor) -> Tensor:  # window means over the valid region == skimage's cropped map
        return F.avg_pool2d(t, win_size, stride=1)

    ux, uy = mean(a), mean(b)
    uxx, uyy, uxy = mean(a * a), mean(b * b), mean(a * b)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(2, 3)).mean(dim=1)


__all__ = ["ssim"]
