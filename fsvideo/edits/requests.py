"""What the user asks for (``--attr smile --strength 2``) turned into Eq. 1 edits.

:class:`EditRequest` names an edit by attribute (``smile``), SeFa component (``sefa:3``), fitted
direction name or direction file, with a strength; :func:`resolve_edits` turns requests into
:class:`~fsvideo.edits.eq1.EditSpec` (unit W+ directions [n_latent, 512] and strengths), reading
direction files from the weights store or the paths given.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from fsvideo.config import ModelConfig
from fsvideo.edits.directions import load_direction, user_direction_path
from fsvideo.edits.eq1 import EditSpec
from fsvideo.errors import InputError, WeightsError
from fsvideo.models.fse import FeatureStyleModel
from fsvideo.weights import resolve as resolve_weights


@dataclass(frozen=True)
class EditRequest:
    """What the user asked for: ``--attr NAME --strength S`` or ``--direction FILE --strength S``."""

    attr: str
    strength: float

    @property
    def label(self) -> str:
        """``smile+2``, ``sefa3-1``, ``my_dir+0.5``: used in output names and run summaries."""
        return f"{Path(self.attr).stem.replace(':', '')}{self.strength:+g}"


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
            d = _configured_direction(cfg.directions[attr], G.n_latent, G.style_dim)
        else:
            d = _user_direction(attr, G.n_latent, G.style_dim)
            if d is None:
                known = ", ".join(sorted(cfg.directions)) or "none"
                raise InputError(f"unknown attribute {attr!r}",
                                 hint=f"use one of {known}, sefa:N, a fitted direction name, or --direction FILE.npy")
        specs.append(EditSpec(attr, d.float(), float(req.strength)))
    return specs


def _configured_direction(ref: str, n_latent: int, style_dim: int) -> torch.Tensor:
    """A config's direction (registry name or path).  A cached registry file that no longer has the
    checksum it was downloaded with is named as such, with the command that fetches it again (the
    reader's own hint, "pass a .npy array of floats", does not fit a file fsvideo downloaded)."""
    from fsvideo import weights
    path = resolve_weights(ref)
    try:
        return load_direction(path, n_latent, style_dim)
    except InputError:
        if not weights.is_path_ref(ref) and weights.verify([ref], load=False)[0].status == "corrupt":
            raise WeightsError(f"the cached `{ref}` ({path}) changed since it was downloaded and does not load",
                               hint=f"run `fsvideo weights download {ref} --force`") from None
        raise


def _user_direction(name: str, n_latent: int, style_dim: int) -> torch.Tensor | None:
    p = user_direction_path(name)
    return load_direction(p, n_latent, style_dim) if p.is_file() else None
