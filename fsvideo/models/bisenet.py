"""BiSeNet face parsing (zllrunning ``face-parsing.PyTorch``), in the layout of the released ``79999_iter.pth``.

19 CelebAMask-HQ classes (see :data:`LABELS`).  The architecture, top to bottom:

* context path ``cp``: a ResNet-18 (``cp.resnet``, built here: the original constructor downloads
  torchvision's ImageNet weights, which the released checkpoint overwrites anyway) gives features at
  1/8, 1/16 and 1/32; attention refinement modules ``arm16``/``arm32``, a global-average branch
  ``conv_avg``, and nearest upsampling with ``conv_head32``/``conv_head16``;
* the 1/8 ResNet feature stands in for the spatial path; ``ffm`` fuses it with the context;
* three heads ``conv_out`` (main), ``conv_out16`` and ``conv_out32`` (auxiliary), each upsampled
  bilinearly (``align_corners=True``) to the input size.

Input: ``[N, 3, H, W]`` normalised with ImageNet mean/std (the released model saw 512 x 512
images); :func:`parse` does that preprocessing.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

PARSING_SIZE = 512
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: class index -> CelebAMask-HQ part name, as used by face-parsing.PyTorch
LABELS = ("background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
          "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat")

#: the labels the official Feature-Style video editing treats as "face" when it builds its blend mask
OFFICIAL_FACE_LABELS = (1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13)


class ConvBNReLU(nn.Module):
    """Conv (no bias) -> BN -> ReLU; children ``conv`` and ``bn``."""

    def __init__(self, in_ch: int, out_ch: int, ks: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, ks, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet basic block as face-parsing.PyTorch writes it (ReLU after the sum)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if in_ch != out_ch or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        res = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        short = x if self.downsample is None else self.downsample(x)
        return F.relu(short + res)


def _basic_stage(in_ch: int, out_ch: int, blocks: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(in_ch, out_ch, stride), *[BasicBlock(out_ch, out_ch, 1) for _ in range(blocks - 1)])


class ResNet18(nn.Module):
    """ResNet-18 trunk returning the 1/8, 1/16 and 1/32 features (no classifier, no download)."""

    def __init__(self, widths: Sequence[int] = (64, 128, 256, 512), blocks: Sequence[int] = (2, 2, 2, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = _basic_stage(widths[0], widths[0], blocks[0], 1)
        self.layer2 = _basic_stage(widths[0], widths[1], blocks[1], 2)
        self.layer3 = _basic_stage(widths[1], widths[2], blocks[2], 2)
        self.layer4 = _basic_stage(widths[2], widths[3], blocks[3], 2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.layer1(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        feat8 = self.layer2(x)
        feat16 = self.layer3(feat8)
        feat32 = self.layer4(feat16)
        return feat8, feat16, feat32


class AttentionRefinementModule(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = ConvBNReLU(in_ch, out_ch, 3, 1, 1)
        self.conv_atten = nn.Conv2d(out_ch, out_ch, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        feat = self.conv(x)
        atten = torch.sigmoid(self.bn_atten(self.conv_atten(F.adaptive_avg_pool2d(feat, 1))))
        return feat * atten


class ContextPath(nn.Module):
    def __init__(self, widths: Sequence[int] = (64, 128, 256, 512), ch: int = 128):
        super().__init__()
        self.resnet = ResNet18(widths)
        self.arm16 = AttentionRefinementModule(widths[2], ch)
        self.arm32 = AttentionRefinementModule(widths[3], ch)
        self.conv_head32 = ConvBNReLU(ch, ch, 3, 1, 1)
        self.conv_head16 = ConvBNReLU(ch, ch, 3, 1, 1)
        self.conv_avg = ConvBNReLU(widths[3], ch, 1, 1, 0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        avg = self.conv_avg(F.adaptive_avg_pool2d(feat32, 1))
        feat32_sum = self.arm32(feat32) + F.interpolate(avg, feat32.shape[2:], mode="nearest")
        feat32_up = self.conv_head32(F.interpolate(feat32_sum, feat16.shape[2:], mode="nearest"))
        feat16_sum = self.arm16(feat16) + feat32_up
        feat16_up = self.conv_head16(F.interpolate(feat16_sum, feat8.shape[2:], mode="nearest"))
        return feat8, feat16_up, feat32_up            # 1/8, 1/8, 1/16


class FeatureFusionModule(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.convblk = ConvBNReLU(in_ch, out_ch, 1, 1, 0)
        self.conv1 = nn.Conv2d(out_ch, out_ch // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(out_ch // 4, out_ch, 1, bias=False)

    def forward(self, fsp: Tensor, fcp: Tensor) -> Tensor:
        feat = self.convblk(torch.cat([fsp, fcp], dim=1))
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(F.adaptive_avg_pool2d(feat, 1)))))
        return feat * atten + feat


class BiSeNetOutput(nn.Module):
    def __init__(self, in_ch: int, mid_ch: int, n_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(in_ch, mid_ch, 3, 1, 1)
        self.conv_out = nn.Conv2d(mid_ch, n_classes, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """BiSeNet face parser.

    Args:
        n_classes: output classes (19 for the released CelebAMask-HQ model).
        widths: channels of the four ResNet-18 stages (64, 128, 256, 512).
        cp_channels: channels of the context path (128).
        ffm_channels: channels of the fusion module and of the main head (256).
        aux_channels: hidden channels of the two auxiliary heads (64).

    ``forward(x [N, 3, H, W], ImageNet-normalised)`` returns ``(out, out16, out32)``, each
    ``[N, n_classes, H, W]`` logits (``out`` is the main prediction).
    """

    def __init__(self, n_classes: int = 19, widths: Sequence[int] = (64, 128, 256, 512), cp_channels: int = 128,
                 ffm_channels: int = 256, aux_channels: int = 64):
        super().__init__()
        if len(widths) != 4:
            raise ValueError(f"widths needs 4 entries, got {list(widths)}")
        self.n_classes = n_classes
        self.cp = ContextPath(widths, cp_channels)
        self.ffm = FeatureFusionModule(widths[1] + cp_channels, ffm_channels)
        self.conv_out = BiSeNetOutput(ffm_channels, ffm_channels, n_classes)
        self.conv_out16 = BiSeNetOutput(cp_channels, aux_channels, n_classes)
        self.conv_out32 = BiSeNetOutput(cp_channels, aux_channels, n_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"BiSeNet input x must be [N, 3, H, W], got {list(x.shape)}")
        size = x.shape[2:]
        feat8, cp8, cp16 = self.cp(x)
        outs = (self.conv_out(self.ffm(feat8, cp8)), self.conv_out16(cp8), self.conv_out32(cp16))
        return tuple(F.interpolate(o, size, mode="bilinear", align_corners=True) for o in outs)


def bisenet_config(sd: Mapping[str, Tensor]) -> dict:
    """BiSeNet constructor arguments read off a face-parsing.PyTorch state dict."""
    from fsvideo.errors import WeightsError
    try:
        widths = [int(sd[f"cp.resnet.layer{i}.0.conv1.weight"].shape[0]) for i in range(1, 5)]
        return dict(n_classes=int(sd["conv_out.conv_out.weight"].shape[0]), widths=widths,
                    cp_channels=int(sd["cp.conv_avg.conv.weight"].shape[0]),
                    ffm_channels=int(sd["ffm.convblk.conv.weight"].shape[0]),
                    aux_channels=int(sd["conv_out16.conv.conv.weight"].shape[0]))
    except KeyError as e:
        raise WeightsError(f"BiSeNet state dict lacks {e}",
                           hint="expected the face-parsing.PyTorch layout (79999_iter.pth)") from e


def load_bisenet(src, *, device: torch.device | str = "cpu") -> BiSeNet:
    """Build a :class:`BiSeNet` from a checkpoint (path or state dict) and load it strictly (eval mode).

    Read by the safe reader (:func:`fsvideo.models.loading.read_checkpoint`); missing or unexpected
    keys raise :class:`~fsvideo.errors.WeightsError` listing them.
    """
    from fsvideo.models.loading import load_network
    return load_network(src, lambda sd: BiSeNet(**bisenet_config(sd)), what="BiSeNet face-parsing",
                        marker="conv_out.conv_out.weight",
                        layout="the face-parsing.PyTorch 79999_iter.pth layout (cp.*, ffm.*, conv_out*)", device=device)


def preprocess(image) -> Tensor:
    """Image(s) -> the BiSeNet input: ``[N, 3, 512, 512]``, [0, 1] then ImageNet mean/std.

    ``image``: uint8 RGB ``[H, W, 3]`` / ``[N, H, W, 3]`` (numpy or tensor), or a float tensor
    ``[N, 3, H, W]`` in [-1, 1] (e.g. a generator output; clamped, as the official code does).
    Resizing to 512 is bilinear and antialiased (like the PIL resize of face-parsing.PyTorch's
    ``test.py``).
    """
    from fsvideo.models.arcface import _as_tensor_batch
    x = ((_as_tensor_batch(image, "image").float() + 1) / 2).clamp(0, 1)
    if tuple(x.shape[-2:]) != (PARSING_SIZE, PARSING_SIZE):
        x = F.interpolate(x, size=(PARSING_SIZE, PARSING_SIZE), mode="bilinear", align_corners=False,
                          antialias=True).clamp(0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def parse(model: BiSeNet, image, *, out_size: tuple[int, int] | None = None):
    """19-class label map of face image(s), with the official preprocessing (512 px, ImageNet mean/std).

    Args:
        model: a :class:`BiSeNet` (e.g. from :func:`load_bisenet`), in eval mode.
        image: uint8 RGB ``[H, W, 3]`` / ``[N, H, W, 3]`` numpy array, or a float tensor
            ``[N, 3, H, W]`` in [-1, 1].
        out_size: ``(H, W)`` of the returned map; the default ``None`` keeps the parser's 512 x 512.
            The main logits are upsampled bilinearly before the argmax.

    Returns:
        labels in ``0..n_classes-1`` (see :data:`LABELS`): a uint8 numpy array ``[H, W]`` (or
        ``[N, H, W]`` for a batch) when ``image`` is numpy, else an int64 tensor ``[N, H, W]``.
    """
    p = next(model.parameters())
    x = preprocess(image).to(device=p.device, dtype=p.dtype)
    out = model(x)[0].float()
    if out_size is not None and tuple(out_size) != tuple(out.shape[-2:]):
        out = F.interpolate(out, size=tuple(out_size), mode="bilinear", align_corners=False)
    labels = out.argmax(1)
    if isinstance(image, np.ndarray):
        arr = labels.cpu().numpy().astype(np.uint8)
        return arr[0] if image.ndim == 3 else arr
    return labels


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "LABELS", "OFFICIAL_FACE_LABELS", "PARSING_SIZE", "BiSeNet",
           "bisenet_config", "load_bisenet", "parse", "preprocess"]
