"""ArcFace IResNet (insightface ``arcface_torch``), in the layout of the released ``backbone.pth``.

The released ArcFace used by the Feature-Style encoder (for the encoder's initialisation and its
identity loss) is an IResNet-50 with these modules (475 state-dict entries, see
``../shared/spec/key-lists/arcface_iresnet50.txt``)::

    conv1 3x3 -> bn1 -> prelu -> layer1..layer4 (IBasicBlocks, each stage strides 2)
    -> bn2 -> flatten -> dropout -> fc (512*7*7 -> 512) -> features (BatchNorm1d(512), weight fixed at 1)

Input: ``[N, 3, 112, 112]`` in [-1, 1] (RGB).  Because ``fc`` flattens the 7x7 map, the network only
works at its input size (``fc_scale = 7 * 7``); :func:`identity_embedding` resizes any crop to it.

The embedding is *not* L2-normalised by the network; identity similarity is the cosine of two
embeddings.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsvideo.models.iresnet import BN_EPS, IRESNET_LAYERS, make_stage

ARCFACE_INPUT = 112


class ArcFace(nn.Module):
    """ArcFace IResNet.

    Args:
        layers: IBasicBlocks per stage (IResNet-50: 3, 4, 14, 3; IResNet-100: 3, 13, 30, 3).
        widths: channels of the four stages (64, 128, 256, 512).
        embedding_size: length of the identity embedding (512).
        stem_channels: channels of ``conv1`` (64).
        input_size: square input size the ``fc`` layer was built for (112; the four stages
            halve it to ``input_size // 16``).
        dropout: dropout probability before ``fc`` (0 at inference, as released).

    ``forward(x [N, 3, input_size, input_size] in [-1, 1])`` returns the embedding ``[N, embedding_size]``;
    with ``return_features=True`` it returns ``(features, embedding)`` where ``features`` are the four
    stage outputs ``[N, 64, 56, 56]``, ``[N, 128, 28, 28]``, ``[N, 256, 14, 14]``, ``[N, 512, 7, 7]``
    (the levels of the official multi-layer identity loss).

    Example::

        net = ArcFace()                      # the released architecture, random weights
        emb = net(torch.zeros(2, 3, 112, 112))   # [2, 512]
    """

    def __init__(self, layers: Sequence[int] = IRESNET_LAYERS[50], widths: Sequence[int] = (64, 128, 256, 512),
                 embedding_size: int = 512, stem_channels: int = 64, input_size: int = ARCFACE_INPUT,
                 dropout: float = 0.0):
        super().__init__()
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(f"layers and widths need 4 entries, got {list(layers)} and {list(widths)}")
        if input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16, got {input_size}")
        self.layers_cfg = tuple(int(n) for n in layers)
        self.widths = tuple(int(w) for w in widths)
        self.input_size = int(input_size)
        self.conv1 = nn.Conv2d(3, stem_channels, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels, eps=BN_EPS)
        self.prelu = nn.PReLU(stem_channels)
        chans = [stem_channels, *self.widths]
        self.layer1 = make_stage(chans[0], chans[1], self.layers_cfg[0], stride=2)
        self.layer2 = make_stage(chans[1], chans[2], self.layers_cfg[1], stride=2)
        self.layer3 = make_stage(chans[2], chans[3], self.layers_cfg[2], stride=2)
        self.layer4 = make_stage(chans[3], chans[4], self.layers_cfg[3], stride=2)
        self.bn2 = nn.BatchNorm2d(self.widths[3], eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        side = self.input_size // 16
        self.fc = nn.Linear(self.widths[3] * side * side, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=BN_EPS)
        # arcface_torch fixes the scale of the last BN at 1 and never trains it
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    @property
    def embedding_size(self) -> int:
        return self.fc.out_features

    def forward(self, x: Tensor, return_features: bool = False):
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(f"ArcFace input x must be [N, 3, {self.input_size}, {self.input_size}], "
                             f"got {list(x.shape)}; use identity_embedding() to resize crops")
        x = self.prelu(self.bn1(self.conv1(x)))
        feats = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            feats.append(x)
        x = torch.flatten(self.bn2(x), 1)
        emb = self.features(self.fc(self.dropout(x)))
        return (feats, emb) if return_features else emb


def _count(sd: Mapping[str, Any], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def arcface_config(sd: Mapping[str, Tensor]) -> dict:
    """ArcFace constructor arguments read off an ``arcface_torch`` state dict."""
    from fsvideo.errors import WeightsError
    try:
        widths = [int(sd[f"layer{i}.0.conv1.weight"].shape[0]) for i in range(1, 5)]
        layers = [_count(sd, rf"layer{i}\.(\d+)\.conv1\.weight") for i in range(1, 5)]
        emb, fc_in = (int(n) for n in sd["fc.weight"].shape)
        side2 = fc_in // widths[3]
        side = int(round(side2 ** 0.5))
        if side * side * widths[3] != fc_in:
            raise WeightsError(f"ArcFace fc.weight has {fc_in} inputs, not {widths[3]} x a square map",
                               hint="is this an arcface_torch IResNet state dict?")
        return dict(layers=layers, widths=widths, embedding_size=emb,
                    stem_channels=int(sd["conv1.weight"].shape[0]), input_size=side * 16)
    except KeyError as e:
        raise WeightsError(f"ArcFace state dict lacks {e}",
                           hint="expected the insightface arcface_torch layout (backbone.pth)") from e


def load_arcface(src, *, device: torch.device | str = "cpu") -> ArcFace:
    """Build an :class:`ArcFace` from a checkpoint (path or state dict) and load it strictly (eval mode).

    Read by the safe reader (:func:`fsvideo.models.loading.read_checkpoint`); the architecture
    (depth, widths) is read off the state dict, so the released IResNet-50 and tiny test models
    load the same way.  Missing or unexpected keys raise :class:`~fsvideo.errors.WeightsError`.
    """
    from fsvideo.models.loading import load_network
    return load_network(src, lambda sd: ArcFace(**arcface_config(sd)), what="ArcFace IResNet", marker="conv1.weight",
                        layout="the arcface_torch backbone.pth layout (conv1, bn1, layer1..4, fc, features)",
                        device=device)


def _as_tensor_batch(faces, what: str = "faces") -> Tensor:
    """uint8 [H,W,3] / [N,H,W,3] numpy or tensor, or float [N,3,H,W] in [-1,1] -> float [N,3,H,W] in [-1,1]."""
    if isinstance(faces, np.ndarray):
        if faces.dtype != np.uint8:
            raise ValueError(f"{what}: numpy input must be uint8 RGB [H, W, 3] or [N, H, W, 3], got {faces.dtype}")
        faces = torch.from_numpy(np.ascontiguousarray(faces))
    if not isinstance(faces, Tensor):
        raise ValueError(f"{what} must be a numpy array or a torch tensor, got {type(faces).__name__}")
    if faces.dtype == torch.uint8:
        if faces.ndim == 3:
            faces = faces[None]
        if faces.ndim != 4 or faces.shape[-1] != 3:
            raise ValueError(f"{what}: uint8 input must be [H, W, 3] or [N, H, W, 3] RGB, got {list(faces.shape)}")
        return faces.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if faces.ndim == 3:
        faces = faces[None]
    if faces.ndim != 4 or faces.shape[1] != 3:
        raise ValueError(f"{what}: float input must be [N, 3, H, W] in [-1, 1], got {list(faces.shape)}")
    return faces


def identity_embedding(model: ArcFace, faces, *, mode: str = "bilinear", normalize: bool = True) -> Tensor:
    """Identity embeddings of aligned face crops.

    Args:
        model: an :class:`ArcFace` (e.g. from :func:`load_arcface`), in eval mode.
        faces: aligned face crops of any square size, either uint8 RGB ``[H, W, 3]`` / ``[N, H, W, 3]``
            (numpy or tensor) or a float tensor ``[N, 3, H, W]`` in [-1, 1].  Use the same aligned
            crops fsvideo inverts (FFHQ alignment): the identity metric of the paper compares the
            aligned input face with the aligned reconstruction, not whole frames.
        mode: resize to 112 px with ``bilinear`` (antialiased; for metrics) or ``nearest`` (what
            the official identity loss does to the whole 1024 px frame).
        normalize: L2-normalise the embeddings, so ``a @ b.T`` is the cosine similarity.

    Returns:
        ``[N, embedding_size]`` float32 on the model's device.
    """
    x = _as_tensor_batch(faces)
    p = next(model.parameters())
    x = x.to(device=p.device, dtype=torch.float32)        # resize in float32, run in the model's dtype
    size = (model.input_size, model.input_size)
    if tuple(x.shape[-2:]) != size:
        if mode == "nearest":
            x = F.interpolate(x, size=size, mode="nearest")
        elif mode == "bilinear":
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        else:
            raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    emb = model(x.to(p.dtype)).float()
    return F.normalize(emb, dim=1) if normalize else emb


__all__ = ["ARCFACE_INPUT", "ArcFace", "arcface_config", "identity_embedding", "load_arcface"]
