"""Edit directions in W+ and the strength convention.

Convention (the official one): every direction is used as a **unit-norm vector of flattened W+**
(``n_latent * 512`` values, 9216 for 1024 px), and strength ``s`` moves the code by
``EDIT_STEP * s = 15 * s`` along it::

    w~ = w + 15 * s * d        (d reshaped to [n_latent, 512])

The released InterFaceGAN boundaries (``Smiling``, ``Heavy_Makeup``, ``Eyeglasses``) are stored as
(1, 9216) unit vectors, so ``--strength 1`` reproduces the official ``--alpha=1`` edit.  A direction
given per layer (18, 512) is flattened; a W-space direction (512,) is applied to every layer.  A
vector that is not unit norm is normalised (and logged), so strengths mean the same for every file.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fsvideo.errors import InputError

log = logging.getLogger(__name__)

EDIT_STEP = 15.0


def as_wplus_direction(d: Tensor | np.ndarray, n_latent: int, style_dim: int = 512, *, name: str = "direction") -> Tensor:
    """Any supported direction shape -> unit-norm float32 [n_latent, style_dim].

    Accepts (1, n_latent * style_dim), (n_latent * style_dim,), (n_latent, style_dim), (1, style_dim)
    and (style_dim,) (broadcast to every layer).
    """
    t = torch.as_tensor(np.asarray(d) if not isinstance(d, Tensor) else d).detach().float().cpu()
    numel = t.numel()
    if numel == n_latent * style_dim:
        t = t.reshape(n_latent, style_dim)
    elif numel == style_dim:
        t = t.reshape(1, style_dim).repeat(n_latent, 1)
    else:
        raise InputError(f"{name} has shape {list(t.shape)}; expected (1, {n_latent * style_dim}), "
                         f"({n_latent}, {style_dim}) or ({style_dim},) for this generator",
                         hint="use a direction fitted for this generator's W+ size")
    if not torch.isfinite(t).all():
        raise InputError(f"{name} contains NaN or Inf values", hint="re-export the direction")
    norm = float(t.norm())
    if norm == float("inf"):         # finite values whose norm overflows float32 (e.g. 1e38): scale first
        t = t / t.abs().max()
        norm = float(t.norm())
    if norm == 0:
        raise InputError(f"{name} is all zeros", hint="use a non-zero direction")
    if abs(norm - 1.0) <= 1e-4:      # already unit norm (float rounding): keep the values bit-exact
        return t
    log.info("%s has norm %.4g; normalised to 1", name, norm)
    return t / norm


def load_direction(path: str | Path, n_latent: int, style_dim: int = 512) -> Tensor:
    """Read a ``.npy`` (or ``.pt`` tensor, loaded with weights_only) direction -> unit [n_latent, style_dim]."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"direction file {p} not found", hint="check the --direction path")
    try:
        if p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif p.suffix in (".pt", ".pth"):
            from fsvideo.models.loading import read_checkpoint
            arr = read_checkpoint(p)                 # the safe reader: a WeightsError for anything but tensors
        else:
            raise InputError(f"direction file {p} has an unknown extension", hint="use a .npy or .pt file")
    except (ValueError, OSError, RuntimeError) as e:
        raise InputError(f"direction file {p} cannot be read ({e})", hint="pass a .npy array of floats") from e
    if not isinstance(arr, (np.ndarray, Tensor)):
        raise InputError(f"direction file {p} does not hold an array", hint="pass a .npy array of floats")
    if arr.is_complex() if isinstance(arr, Tensor) else arr.dtype.kind not in "biuf":   # text, records, complex
        raise InputError(f"direction file {p} holds {arr.dtype} values, not real numbers",
                         hint="pass a .npy array of floats")
    return as_wplus_direction(arr, n_latent, style_dim, name=str(p))


_DIRECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$")


def directions_home() -> Path:
    """Folder of the user's fitted directions: ``$FSVIDEO_HOME/directions`` (default home: the platform cache dir)."""
    from fsvideo.weights import weights_home
    return weights_home() / "directions"


def user_direction_path(name: str) -> Path:
    """Where ``fsvideo directions fit --attr NAME`` saves a direction, and where ``--attr NAME`` finds it.

    ``$FSVIDEO_HOME/directions/NAME.npy``.  Names are letters, digits and ``_ . + -`` (no paths).
    """
    stem = name[:-4] if name.endswith(".npy") else name
    if not _DIRECTION_NAME.match(stem) or stem in (".", ".."):
        raise InputError(f"invalid direction name {name!r}",
                         hint="use letters, digits, '_', '.', '+' or '-' (e.g. smile_myenc)")
    return directions_home() / f"{stem}.npy"
