"""IResNet (insightface ``arcface_torch``) building blocks.

Shared by the Feature-Style encoder (whose backbone *is* an ArcFace IResNet-50 without its head)
and by the ArcFace identity network.  Module names match the released state dicts.

An :class:`IBasicBlock` computes ``bn1 -> conv1 3x3 -> bn2 -> prelu -> conv2 3x3 (stride) -> bn3``
and adds the identity, or ``downsample`` (1x1 conv with stride + BN).  There is no activation
after the addition.
"""
from __future__ import annotations

from torch import Tensor, nn

BN_EPS = 1e-5
IRESNET_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}


class IBasicBlock(nn.Module):
    """One IResNet residual block.

    Args:
        in_ch: input channels.
        ch: output channels.
        stride: stride of ``conv2`` (and of the downsample branch).
    """

    def __init__(self, in_ch: int, ch: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch, eps=BN_EPS)
        self.conv1 = nn.Conv2d(in_ch, ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch, eps=BN_EPS)
        self.prelu = nn.PReLU(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(ch, eps=BN_EPS)
        self.downsample = None
        if stride != 1 or in_ch != ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, ch, 1, stride, bias=False),
                                            nn.BatchNorm2d(ch, eps=BN_EPS))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


def make_stage(in_ch: int, ch: int, blocks: int, stride: int = 2) -> nn.Sequential:
    """``blocks`` IBasicBlocks; the first changes channels and strides."""
    layers = [IBasicBlock(in_ch, ch, stride)]
    layers += [IBasicBlock(ch, ch, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def stem(ch: int = 64) -> nn.Sequential:
    """Conv 3x3 (3 -> ch, stride 1, no bias) + BN + PReLU: children ``0``, ``1``, ``2``."""
    return nn.Sequential(nn.Conv2d(3, ch, 3, 1, 1, bias=False), nn.BatchNorm2d(ch, eps=BN_EPS), nn.PReLU(ch))
