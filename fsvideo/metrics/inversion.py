"""The inversion hook of the metrics: anything that maps aligned crops to their reconstructions.

:class:`Inverter` is the protocol (a callable ``uint8 [N, S, S, 3] -> uint8 [N, S, S, 3]`` with a
``resolution`` and a ``describe()`` for the results cache); :class:`FeatureStyleInverter` is the
Feature-Style one: ``x~ = G(w, F)`` with ``(w, F) = E(x)`` (Eq. 2 of the paper) and the generator
noise fixed for the whole run (one seeded noise for every frame of every clip, as the video
pipeline fixes it per video), through :class:`fsvideo.models.execution.ModelExecutor` -- the
same batched encode/generate code ``fsvideo invert`` uses.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from fsvideo.metrics.identity import check_crops


@runtime_checkable
class Inverter(Protocol):
    """Reconstructs aligned faces.

    Attributes:
        resolution: the crop side S it takes and returns.
    """

    resolution: int

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """uint8 ``[N, S, S, 3]`` aligned crops -> uint8 ``[N, S, S, 3]`` reconstructions."""

    def describe(self) -> dict:
        """What identifies its outputs (weights, noise seed...): part of the results' cache key."""


class FeatureStyleInverter:
    """Feature-Style inversion ``G(E(x))`` of aligned crops.

    Args:
        model: a :class:`fsvideo.models.fse.FeatureStyleModel`.
        device, dtype: where and in which precision the networks run.
        batch_size: faces per forward pass.
        noise_seed: seed of the fixed generator noise.
        use_features: decode with ``F`` (the paper's method); False decodes ``G(w)`` only (the
            ablation (B) of Table 4).
        info: extra facts identifying the weights (file names, checksums), written into results.

    Example::

        inv = FeatureStyleInverter(random_model(64))
        rec = inv(crops)                    # uint8 [N, 64, 64, 3] -> uint8 [N, 64, 64, 3]
    """

    def __init__(self, model, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 batch_size: int = 4, noise_seed: int = 0, use_features: bool = True, info: dict | None = None):
        from fsvideo.models.execution import ModelExecutor
        self.executor = ModelExecutor(model, device=device, dtype=dtype, batch_size=batch_size,
                                      noise_seed=noise_seed)
        # the crop side the executor takes and returns (the pipeline's, so both measure the same faces)
        self.resolution = self.executor.crop_size
        self.model_resolution = int(model.resolution)
        self.noise_seed = int(noise_seed)
        self.use_features = bool(use_features)
        self.info = dict(info or {})
        self.dtype = dtype

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        a = check_crops(crops)
        S = self.resolution
        if a.shape[1] != S:
            raise ValueError(f"crops must be {S} x {S} for this model, got {a.shape[1]} x {a.shape[2]}")
        if len(a) == 0:
            return np.zeros((0, S, S, 3), np.uint8)
        w, f = self.executor.encode(a)
        return self.executor.generate(w, f if self.use_features else None)

    def describe(self) -> dict:
        return {"method": "feature-style" if self.use_features else "feature-style-w-only",
                "resolution": self.resolution, "model_resolution": self.model_resolution, "noise_seed": self.noise_seed,
                "dtype": str(self.dtype).replace("torch.", ""), **self.info}


__all__ = ["FeatureStyleInverter", "Inverter"]
