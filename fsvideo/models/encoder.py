"""The Feature-Style encoder (Yao et al., Fig. 2), in the layout of the released ``143_enc.pth``.

An IResNet-50 backbone (the ArcFace architecture, without its head) feeds two branches:

* latent branch: the outputs of the four stages are average-pooled to 3x3 with PyTorch's
  *overlapping* adaptive bins, concatenated (64 + 128 + 256 + 512 = 960 channels), flattened
  channel-major to 8640 values, and mapped by one ``Linear(8640, 512)`` per W+ row;
* feature branch: the third stage's output (256 x 32 x 32) goes through
  ``BN -> conv3x3 -> BN -> PReLU -> conv3x3 stride 2 -> BN`` to the feature code ``F``
  (512 x 16 x 16), which replaces the generator's layer-K activation.

The size of ``F`` follows K (``Generator.feature_shape(K)``; the paper ablates K = 4..7): its
channels are the head's width (a parameter shape), its side ``feature_size`` is not, so one state
dict serves any side and :meth:`FeatureStyleEncoder.set_feature_size` sets it.  Side 16 (K = 4, 5)
and 32 (K = 6, 7) are the official ``fs_stride`` 2 and 1; smaller sides average-pool the 16 px
output, larger ones upsample the 32 px output bilinearly (the encoder sees 256 px, so a larger F
carries no finer detail; the official code offers no such K).

The encoder predicts ``w_offset``; the W+ code is ``w = w_offset + latent_avg`` (see
:class:`fsvideo.models.fse.FeatureStyleModel`).  Inputs larger than 256 px are reduced by successive
2x bilinear steps (each equals a 2x2 box average), exactly as the official model does.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsvideo.models.iresnet import BN_EPS, IRESNET_LAYERS, make_stage, stem

ENCODER_INPUT = 256
_CONTENT_SIDE = ENCODER_INPUT // 8       # side of the third stage's output, the feature branch's input


def downscale_to(x: Tensor, size: int = ENCODER_INPUT) -> Tensor:
    """Halve ``x`` [N, C, S, S] with bilinear ``scale_factor=0.5`` steps until it is ``size`` px.

    ``S`` must be ``size * 2**n``.  Two 2x steps (1024 -> 256) are what the released encoder saw in
    training; a single 4x resize moves ``w`` by about 0.4 and is wrong.
    """
    s = x.shape[-1]
    if x.shape[-2] != s or s < size or 2 ** round(math.log2(s / size)) * size != s:
        raise ValueError(f"encoder input must be square and {size} * 2**n px, got {list(x.shape[-2:])}")
    while x.shape[-1] > size:
        x = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
    return x


class FeatureStyleEncoder(nn.Module):
    """Feature-Style encoder.

    Args:
        n_styles: rows of W+ predicted (18 for a 1024 px generator: ``2 * log2(size) - 2``).
        style_dim: width of each row (512).
        widths: channels of the four backbone stages (IResNet: 64, 128, 256, 512).
        layers: blocks per stage (IResNet-50: 3, 4, 14, 3).
        feature_channels: channels of ``F`` (the generator's channels at layer K: 512).
        stem_channels: channels of the first conv (64).
        feature_size: side of ``F`` (the generator's layer-K side: 16 for K = 5).

    Input ``x`` is ``[N, 3, S, S]`` in [-1, 1] with ``S = 256 * 2**n``; output is
    ``(w_offset [N, n_styles, style_dim], F [N, feature_channels, feature_size, feature_size])``.
    """

    def __init__(self, n_styles: int = 18, style_dim: int = 512, widths: Sequence[int] = (64, 128, 256, 512),
                 layers: Sequence[int] = IRESNET_LAYERS[50], feature_channels: int = 512, stem_channels: int = 64,
                 feature_size: int = 16):
        super().__init__()
        self.config = dict(n_styles=n_styles, style_dim=style_dim, widths=list(widths), layers=list(layers),
                           feature_channels=feature_channels, stem_channels=stem_channels)
        self.n_styles, self.style_dim = n_styles, style_dim
        self.conv = stem(stem_channels)
        chans = [stem_channels, *widths]
        for i in range(4):
            setattr(self, f"block_{i + 1}", make_stage(chans[i], chans[i + 1], layers[i], stride=2))
        self.pool = nn.AdaptiveAvgPool2d((3, 3))
        self.content_layer = nn.Sequential(
            nn.BatchNorm2d(widths[2], eps=BN_EPS),
            nn.Conv2d(widths[2], feature_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(feature_channels, eps=BN_EPS),
            nn.PReLU(feature_channels),
            nn.Conv2d(feature_channels, feature_channels, 3, 2, 1, bias=False),
            nn.BatchNorm2d(feature_channels, eps=BN_EPS),
        )
        self.styles = nn.ModuleList([nn.Linear(sum(widths) * 9, style_dim) for _ in range(n_styles)])
        self.set_feature_size(feature_size)

    def set_feature_size(self, size: int) -> None:
        """Make ``F`` ``size`` px square (a power of two, >= 1); no parameter changes.

        16 and 32 set the last conv's stride to 2 and 1 (the official ``fs_stride``), below 16 the
        16 px result is average-pooled, above 32 the 32 px result is upsampled bilinearly.
        """
        if size < 1 or size & (size - 1):
            raise ValueError(f"feature_size must be a power of two, got {size}")
        self.feature_size = int(size)
        self.config["feature_size"] = self.feature_size
        self.content_layer[4].stride = (1, 1) if size >= _CONTENT_SIDE else (2, 2)

    def _content(self, x: Tensor) -> Tensor:
        """Third-stage output [N, widths[2], 32, 32] -> F [N, feature_channels, feature_size, feature_size]."""
        f = self.content_layer(x)
        r = self.feature_size
        if f.shape[-1] > r:
            f = F.adaptive_avg_pool2d(f, r)
        elif f.shape[-1] < r:
            f = F.interpolate(f, size=(r, r), mode="bilinear", align_corners=False)
        return f

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x must be [N, 3, S, S], got {list(x.shape)}")
        x = self.conv(downscale_to(x))
        pooled = []
        content = None
        for i in range(1, 5):
            x = getattr(self, f"block_{i}")(x)
            if i == 3:
                content = self._content(x)
            pooled.append(self.pool(x))
        v = torch.cat(pooled, dim=1).flatten(1)                       # [N, 960 * 9], channel-major
        w_offset = torch.stack([head(v) for head in self.styles], dim=1)
        return w_offset, content
