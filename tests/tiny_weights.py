"""Tiny seeded random weights in the official checkpoint format, plus a unit W+ direction for them."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def make_tiny(d: Path, size: int = 64) -> dict[str, str]:
    """``{"enc", "gen", "dir"}`` file paths in ``d`` (generator ``size`` px, direction of shape (1, n_latent*style_dim))."""
    from fsvideo.models.random_init import random_model, save_official_checkpoints
    model = random_model(size, seed=0)
    enc, gen = save_official_checkpoints(model, d)
    g = model.generator
    direction = np.random.default_rng(1).standard_normal((1, g.n_latent * g.style_dim)).astype(np.float32)
    direction /= np.linalg.norm(direction)
    np.save(d / "dir.npy", direction)
    return {"enc": str(enc), "gen": str(gen), "dir": str(d / "dir.npy")}
