"""Turning the image batches the metrics accept into one tensor layout.

Every metric in :mod:`fsvideo.metrics` takes either

* uint8 RGB images, numpy or torch, ``[H, W, 3]`` or ``[N, H, W, 3]`` (the I/O-edge layout), or
* a float torch tensor ``[N, 3, H, W]`` (or ``[3, H, W]``) in [-1, 1] (the model layout, e.g. a
  generator output in the trainer's validation).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def to_unit_batch(images, name: str = "images", *, dtype: torch.dtype | None = None) -> Tensor:
    """``images`` as a float tensor ``[N, 3, H, W]`` in [0, 1].

    uint8 inputs are divided by 255 exactly; float inputs are taken to be in [-1, 1] and mapped
    by ``(x + 1) / 2`` (values outside are kept, not clamped: clamp first if you want to).
    ``dtype`` defaults to float64 (float32 on MPS, which has no float64).
    """
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise ValueError(f"{name}: numpy input must be uint8 RGB [H, W, 3] or [N, H, W, 3], got {images.dtype}")
        if not images.flags.writeable or not images.flags.c_contiguous:
            images = np.array(images)  # torch wants writable memory; copies only when needed
        images = torch.from_numpy(images)
    if not isinstance(images, Tensor):
        raise ValueError(f"{name} must be a numpy array or a torch tensor, got {type(images).__name__}")
    if dtype is None:
        dtype = torch.float32 if images.device.type == "mps" else torch.float64
    if images.dtype == torch.uint8:
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"{name}: uint8 input must be [H, W, 3] or [N, H, W, 3] RGB, got {list(images.shape)}")
        return images.permute(0, 3, 1, 2).to(dtype) / 255.0
    if not images.is_floating_point():
        raise ValueError(f"{name}: tensors must be uint8 [N, H, W, 3] or float [N, 3, H, W] in [-1, 1], "
                         f"got {images.dtype}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name}: float input must be [N, 3, H, W] in [-1, 1], got {list(images.shape)}")
    return (images.to(dtype) + 1.0) / 2.0


def check_pair(x: Tensor, y: Tensor, names: tuple[str, str] = ("x", "y")) -> None:
    """ValueError naming the arguments when two batches differ in shape."""
    if x.shape != y.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got {list(x.shape)} and {list(y.shape)}")
    if x.device != y.device:
        raise ValueError(f"{names[0]} and {names[1]} are on different devices ({x.device}, {y.device})")
