"""Eq. 1 of the paper: edit the latent code and correct the feature code.

    w~ = w + 15 * sum_i s_i d_i                         (directions in flattened W+, unit norm)
    F~ = F + G^K(w~) - G^K(w)                           (Eq. 1)
    edited image = G(w~, F~)

``G^K`` runs the generator only up to layer K (16 px for K = 5), and ``w`` and ``w~`` go through it
in one batched call.  The same noise must be used in every call (a fixed noise list per video).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from fsvideo.edits.directions import EDIT_STEP
from fsvideo.models.fse import FeatureStyleModel


@dataclass(frozen=True)
class EditSpec:
    """One edit: a unit W+ direction [n_latent, 512] and a strength (any real number)."""

    name: str
    direction: Tensor
    strength: float


def shift_latents(w: Tensor, edits: Sequence[EditSpec], step: float = EDIT_STEP) -> Tensor:
    """w [N, n_latent, 512] -> w~ = w + step * sum_i s_i d_i (the official order: flattened add)."""
    if not edits:
        return w
    delta = sum(float(e.strength) * e.direction.to(device=w.device, dtype=w.dtype) for e in edits)
    n = w.shape[0]
    return (w.reshape(n, -1) + step * delta.reshape(1, -1)).view_as(w)


@torch.no_grad()
def edit_codes(model: FeatureStyleModel, w: Tensor, f: Tensor, edits: Sequence[EditSpec],
               noise: Sequence[Tensor] | None, step: float = EDIT_STEP,
               features_w: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Apply several edits at once (Eq. 1).

    Args:
        model: the Feature-Style model (its generator computes G^K).
        w: [N, n_latent, 512] W+ codes from the encoder.
        f: [N, C, H, W] feature codes from the encoder (``generator.feature_shape(K)``).
        edits: directions and strengths; zero strengths leave ``(w, F)`` unchanged.
        noise: the fixed noise list of the video (used in both G^K calls).
        features_w: G^K(w) [N, C, 16, 16] when already known (``fsvideo studio`` keeps it per
            frame while sliders move): then only G^K(w~) runs.

    Returns:
        ``(w~, F~)`` to decode with ``model.decode(w~, F~, noise)``.
    """
    if w.ndim != 3 or f.ndim != 4 or w.shape[0] != f.shape[0]:
        raise ValueError(f"w must be [N, n, 512] and F [N, C, H, W] with the same N, got {list(w.shape)}, {list(f.shape)}")
    w_edit = shift_latents(w, edits, step)
    if all(float(e.strength) == 0.0 for e in edits):
        return w, f
    if features_w is not None:
        gk_edit, gk_w = model.features(w_edit, noise=noise), features_w
    else:
        gk = model.features(torch.cat([w_edit, w]), noise=noise)     # G^K(w~), G^K(w) in one batch
        gk_edit, gk_w = gk[: w.shape[0]], gk[w.shape[0]:]
    return w_edit, (f + gk_edit) - gk_w


def style_mix(model: FeatureStyleModel, w_style: Tensor, f_content: Tensor,
              noise: Sequence[Tensor] | None = None) -> Tensor:
    """Paper Fig. 7: ``G(w_A, F_B)``, appearance from A's latent code, geometry from B's feature code."""
    return model.decode(w_style, f_content, noise)
