"""Loaders and converters of released files that are not fsvideo's own networks' formats.

* :func:`convert_state_dict` / :func:`convert_generator`: the registry's converters, mapping a
  repackaged checkpoint (``{'state_dict': sd}``, DataParallel's ``module.`` prefix, a pSp ``opts``
  Namespace) to the layout the loaders accept;
* :func:`load_fan`, :func:`load_s3fd`, :func:`s3fd_detector`: face-alignment's 2D-FAN-4 and S3FD
  networks, read by fsvideo's safe reader and loaded strictly, so no third-party ``torch.load``
  ever touches a cached file;
* :func:`load_direction_file`: a released InterFaceGAN direction ``.npy``.

Each function takes a path (or an already-read object) and never looks in the weights store.
"""
from __future__ import annotations

import argparse
import os
from collections import OrderedDict
from typing import Any, Mapping

import torch
from torch import nn

from fsvideo.errors import WeightsError
from fsvideo.models.loading import load_network, read_checkpoint


def _read(src: Any) -> Any:
    """A path read fully (not memory-mapped: the converted copy is written next to it), or the object itself."""
    return read_checkpoint(src, mmap=False) if isinstance(src, (str, os.PathLike)) else src


def _strip_module(sd: Mapping[str, Any]) -> "OrderedDict[str, Any]":
    return OrderedDict((k[len("module."):] if k.startswith("module.") else k, v) for k, v in sd.items())


def convert_state_dict(src: Any) -> Any | None:
    """Common repackagings of a plain state dict -> the plain state dict (None if not applicable).

    ``src``: a checkpoint path (read by the safe reader) or an already-read object.  Unwraps
    ``{'state_dict': sd}`` / ``{'model': sd}`` / ``{'net': sd}`` and strips DataParallel's
    ``module.`` prefix.
    """
    obj = _read(src)
    if not isinstance(obj, Mapping):
        return None
    changed = False
    for key in ("state_dict", "model", "net", "model_state_dict"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and all(isinstance(k, str) for k in inner):
            obj, changed = inner, True
            break
    if any(isinstance(k, str) and k.startswith("module.") for k in obj):
        obj, changed = _strip_module(obj), True
    return OrderedDict(obj) if changed else None


def convert_generator(src: Any) -> Any | None:
    """Generator checkpoints (path or object): pSp ``opts`` given as a Namespace -> a dict; ``module.`` prefixes
    removed."""
    obj = _read(src)
    if not isinstance(obj, Mapping):
        return None
    out = dict(obj)
    changed = False
    if isinstance(out.get("opts"), argparse.Namespace):
        out["opts"] = vars(out["opts"])
        changed = True
    for key in ("g_ema", "state_dict", "generator"):
        if isinstance(out.get(key), Mapping) and any(str(k).startswith("module.") for k in out[key]):
            out[key] = _strip_module(out[key])
            changed = True
    if any(isinstance(k, str) and k.startswith("module.") for k in out):
        out = dict(_strip_module(out))
        changed = True
    return out if changed else None


def _unwrapped(src) -> Mapping:
    """A state dict from a path or object, unwrapping face-alignment's optional ``{'state_dict': sd}``."""
    obj = read_checkpoint(src)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    return obj


def load_fan(src, *, device: torch.device | str = "cpu") -> nn.Module:
    """face-alignment's ``FAN(4)`` (2D-FAN-4, 68 landmarks) from a checkpoint, strict, eval mode."""
    from face_alignment.models import FAN
    where = "" if isinstance(src, Mapping) else f"{src}: "
    try:
        return load_network(_unwrapped(src), lambda sd: FAN(4), what="2D-FAN-4", marker="conv1.weight",
                            layout="face-alignment's 2DFAN4-11f355bf06.pth.tar", device=device)
    except WeightsError as e:
        raise WeightsError(where + e.message, hint="download it again: `fsvideo weights download fan-2d`") from e


def load_s3fd(src, *, device: torch.device | str = "cpu") -> nn.Module:
    """face-alignment's S3FD face detector network from a checkpoint, strict, eval mode."""
    from face_alignment.detection.sfd.net_s3fd import s3fd
    where = "" if isinstance(src, Mapping) else f"{src}: "
    try:
        return load_network(_unwrapped(src), lambda sd: s3fd(), what="S3FD detector", marker="conv1_1.weight",
                            layout="face-alignment's s3fd-619a316812.pth", device=device)
    except WeightsError as e:
        raise WeightsError(where + e.message, hint="download it again: `fsvideo weights download fan-s3fd`") from e


def s3fd_detector(src, device: torch.device | str = "cpu", *, filter_threshold: float = 0.5):
    """face-alignment's ``SFDDetector`` around a network loaded by :func:`load_s3fd`.

    ``SFDDetector.__init__`` reads its file with its own ``torch.load`` (safe only in
    face-alignment >= 1.5) or downloads it; this builds the same object without either.
    """
    from face_alignment.detection.core import FaceDetector
    from face_alignment.detection.sfd.sfd_detector import SFDDetector
    det = SFDDetector.__new__(SFDDetector)
    FaceDetector.__init__(det, str(device), False)
    det.filter_threshold = filter_threshold
    det.face_detector = load_s3fd(src, device=device)
    return det


def load_direction_file(path: str | os.PathLike):
    """Read a released direction ``.npy``: shape (1, 9216), (18, 512) or (512,), finite, unit norm."""
    import numpy as np
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise WeightsError(f"{path} is not a numpy .npy array ({err})", hint="download it again") from err
    if arr.shape not in ((1, 9216), (18, 512), (512,)) or arr.dtype.kind != "f":
        raise WeightsError(f"{path}: direction has shape {arr.shape} and dtype {arr.dtype}; "
                           "expected float (1, 9216), (18, 512) or (512,)", hint="download it again")
    norm = float(np.linalg.norm(arr.astype(np.float64)))
    if not np.isfinite(norm) or abs(norm - 1.0) > 1e-3:
        raise WeightsError(f"{path}: direction has L2 norm {norm:.6g}, expected 1 (a released direction is unit norm)",
                           hint="download it again")
    return arr


__all__ = ["convert_generator", "convert_state_dict", "load_direction_file", "load_fan", "load_s3fd",
           "s3fd_detector"]
