"""Ready-built components for the pipelines: models loaded once, handed to stages.

Stages never read weights files; :func:`load_model` and :func:`resolve_edits` do, from the
weights store (registry names) or from paths given by the user.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from fsvideo.config import ModelConfig
from fsvideo.edits.directions import EDIT_STEP, load_direction, user_direction_path
from fsvideo.edits.eq1 import EditSpec
from fsvideo.errors import InputError
from fsvideo.models.fse import FeatureStyleModel
from fsvideo.models.loading import load_encoder_checkpoint, load_generator_checkpoint
from fsvideo.weights import resolve as resolve_weights

log = logging.getLogger(__name__)


def load_model(cfg: ModelConfig, *, generator: str | Path | None = None, encoder: str | Path | None = None,
               device: torch.device | str = "cpu") -> FeatureStyleModel:
    """Load the generator and encoder named by ``cfg`` (or the overrides) into a FeatureStyleModel (eval)."""
    G, latent_avg = load_generator_checkpoint(resolve_weights(generator or cfg.generator))
    if G.size != cfg.resolution and generator is None:
        raise InputError(f"generator {cfg.generator} is {G.size} px but the config says {cfg.resolution}",
                         hint="fix `resolution` in the config")
    E = load_encoder_checkpoint(resolve_weights(encoder or cfg.encoder), n_styles=G.n_latent)
    model = FeatureStyleModel(E, G, latent_avg, k=cfg.feature_index)
    return model.eval().requires_grad_(False).to(device)


@dataclass(frozen=True)
class EditRequest:
    """What the user asked for: ``--attr NAME --strength S`` or ``--direction FILE --strength S``."""

    attr: str
    strength: float


_SEFA = re.compile(r"^sefa:(\d+)$")


def resolve_edits(requests: list[EditRequest], cfg: ModelConfig, model: FeatureStyleModel) -> list[EditSpec]:
    """Turn attribute names, ``sefa:N`` and ``.npy`` paths into unit W+ directions with strengths.

    Names are looked up in ``cfg.directions`` (released directions, via the weights store), then
    among directions fitted with ``fsvideo directions fit`` (``$FSVIDEO_HOME/directions``).
    """
    G = model.generator
    sefa_idx = [int(m.group(1)) for r in requests if (m := _SEFA.match(r.attr))]
    sefa = None
    if sefa_idx:                                   # one decomposition serves every sefa:N request
        from fsvideo.edits.sefa import sefa_directions
        sefa = sefa_directions(G, k=max(sefa_idx) + 1)
    specs: list[EditSpec] = []
    for req in requests:
        attr = req.attr
        if (m := _SEFA.match(attr)) is not None:
            d = sefa[int(m.group(1))]
        elif attr.endswith((".npy", ".pt", ".pth")) or Path(attr).is_file():
            d = load_direction(attr, G.n_latent, G.style_dim)
        elif attr in cfg.directions:
            d = load_direction(resolve_weights(cfg.directions[attr]), G.n_latent, G.style_dim)
        else:
            d = _user_direction(attr, G.n_latent, G.style_dim)
            if d is None:
                known = ", ".join(sorted(cfg.directions)) or "none"
                raise InputError(f"unknown attribute {attr!r}",
                                 hint=f"use one of {known}, sefa:N, a fitted direction name, or --direction FILE.npy")
        specs.append(EditSpec(attr, d.float(), float(req.strength)))
    return specs


def _user_direction(name: str, n_latent: int, style_dim: int) -> torch.Tensor | None:
    p = user_direction_path(name)
    return load_direction(p, n_latent, style_dim) if p.is_file() else None


__all__ = ["EDIT_STEP", "EditRequest", "load_model", "resolve_edits", "resolve_weights"]
